from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ai_credit_usage.answers.render import escape_cell, format_credits, render_answer, render_preview
from ai_credit_usage.answers.table import Table
from ai_credit_usage.questions.findings import Findings
from ai_credit_usage.questions.sink import PREVIEW_ROWS, TableSink
from ai_credit_usage.questions.usage import SUMMARY_COLUMNS
from ai_credit_usage.runtime.window import Window, format_utc

NOW = datetime(2026, 1, 20, 12, tzinfo=UTC)
WINDOW = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def split_row(line: str) -> list[str]:
    """Split a GFM table row the way GFM does: on pipes not preceded by a backslash."""
    assert line.startswith("| ") and line.endswith(" |")
    cells, current, escaped = [], "", False
    for char in line[1:-1]:
        if char == "|" and not escaped:
            cells.append(current)
            current = ""
        else:
            current += char
        escaped = char == "\\" and not escaped
    cells.append(current)
    return [cell.strip() for cell in cells]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0.00"), (1234.567, "1,234.57"), (0.004, "<0.01"), (-0.004, ">-0.01"), (0.005, "0.01"), (-0.0, "0.00")],
)
def test_format_credits(value: float, text: str) -> None:
    assert format_credits(value) == text


@pytest.mark.parametrize(
    "value",
    ["a|b", "line\nbreak", "cr\r\nlf", "back\\|slash", "[link](http://x)", "<b>html</b>", "`code|span`", "tab\there"],
)
def test_escaped_cells_never_break_a_row(value: str) -> None:
    table = Table(SUMMARY_COLUMNS, [(value, value, "p", "acme", "s", 1.0)])
    text = render_answer(table, tenant="acme", window=WINDOW, download_url="u", expires_at=NOW, now=NOW)
    row = next(line for line in text.splitlines() if line.startswith("| ") and "1.00" in line)
    assert "\n" not in escape_cell(value) and "\r" not in escape_cell(value)
    assert len(split_row(row)) == len(SUMMARY_COLUMNS)


def test_markup_is_neutralised() -> None:
    assert escape_cell("[x](http://evil)") == "\\[x\\](http://evil)"
    assert escape_cell("<img src=x>") == "\\<img src=x\\>"
    assert escape_cell("a\nb") == "a<br>b"


def test_layout_in_order_with_truncation() -> None:
    rows = [(f"user{i}", "m", "p", "acme", "s", float(100 - i)) for i in range(60)]
    table = Table(SUMMARY_COLUMNS, rows)
    text = render_answer(
        table,
        tenant="acme",
        window=WINDOW,
        download_url="http://localhost:8765/download/tok",
        expires_at=NOW + timedelta(minutes=10),
        now=NOW,
    )
    lines = text.splitlines()
    assert lines[0] == "Tenant acme, 2026-01-01T00:00:00Z to 2026-02-01T00:00:00Z (end exclusive):"
    assert lines[2] == "| user | module | product | tenant | skill | credits |"
    table_lines = [line for line in lines if line.startswith("|")]
    assert len(table_lines) == 2 + PREVIEW_ROWS
    assert "total" not in "".join(table_lines).lower()
    tail = lines[lines.index(table_lines[-1]) + 1 :]
    assert tail == [
        "",
        "Showing 50 of 60 rows; the Excel file has all 60.",
        "Total credits: 4,230.00",
        "The 10 rows not shown hold 455.00 credits (with the rows shown, they make the total).",
        "[Download Excel](http://localhost:8765/download/tok) (link expires at 2026-01-20T12:10:00Z, in 10 minutes)",
    ]


def test_no_cut_line_when_everything_fits() -> None:
    table = Table(("tenant", "credits"), [("acme", 0.0)])
    text = render_answer(table, tenant="acme", window=WINDOW, download_url="u", expires_at=NOW, now=NOW)
    assert "Showing" not in text
    assert "| acme | 0.00 |" in text


def amounts_as_shown(text: str) -> tuple[list[Decimal], Decimal, Decimal]:
    """The rows' credits, the total and the rest, as the text shows them."""

    def amount(pattern: str) -> Decimal:
        match = re.search(pattern, text, re.MULTILINE)
        assert match, pattern
        return Decimal(match.group(1).replace(",", ""))

    rows = [Decimal(split_row(line)[-1].replace(",", "")) for line in text.splitlines()[4:] if line.startswith("| ")]
    return rows, amount(r"^Total credits: ([\d,.]+)$"), amount(r"not shown hold ([\d,.]+) credits")


def test_the_rest_as_shown_makes_the_total_as_shown() -> None:
    # 60 rows of 1.004: each shows as 1.00, the total as 60.24, so the rest must show as 10.24 (exactly: 10.04).
    table = Table(SUMMARY_COLUMNS, [(f"user{i:02d}", "m", "p", "acme", "s", 1.004) for i in range(60)])
    text = render_answer(table, tenant="acme", window=WINDOW, download_url="u", expires_at=NOW, now=NOW)
    shown, total, rest = amounts_as_shown(text)
    assert (len(shown), total, rest) == (50, Decimal("60.24"), Decimal("10.24"))
    assert sum(shown) + rest == total
    assert "The 10 rows not shown hold 10.24 credits (with the rows shown, they make the total)." in text


def test_a_rest_that_rounding_would_make_negative_is_said_as_it_is() -> None:
    # 50 rows of 0.006 show as 0.01 each (0.50), but the total is 0.301: no rest as shown can make 0.30.
    rows = [(f"user{i:02d}", "m", "p", "acme", "s", 0.006) for i in range(50)]
    rows += [(f"rest{i}", "m", "p", "acme", "s", 0.0001) for i in range(10)]
    text = render_answer(
        Table(SUMMARY_COLUMNS, rows), tenant="acme", window=WINDOW, download_url="u", expires_at=NOW, now=NOW
    )
    assert "Total credits: 0.30" in text
    assert (
        "The 10 rows not shown hold <0.01 credits (the rows shown are rounded to cents, so with them this makes the "
        "total only approximately)."
    ) in text


@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        pytest.param(timedelta(minutes=10), "in 10 minutes", id="default"),
        pytest.param(timedelta(seconds=30), "in 30 seconds", id="short-ttl-not-rounded-up"),
        pytest.param(timedelta(seconds=1), "in 1 second", id="one-second"),
        pytest.param(timedelta(seconds=60), "in 1 minute", id="one-minute"),
        pytest.param(timedelta(seconds=150), "in 2 minutes", id="minutes-from-one"),
    ],
)
def test_the_link_says_how_long_it_lives(ttl: timedelta, said: str) -> None:
    table = Table(("tenant", "credits"), [("acme", 0.0)])
    text = render_answer(table, tenant="acme", window=WINDOW, download_url="u", expires_at=NOW + ttl, now=NOW)
    assert text.endswith(f"(link expires at {format_utc(NOW + ttl)}, {said})")


@pytest.mark.anyio
async def test_a_top_name_cut_in_the_text_counts_as_shortened() -> None:
    # group_by ["module"]: the long user name is in no table cell, only in the Top users line (and the structured
    # tops, which say `cells_shortened` from the same preview).
    sink = TableSink(("module", "tenant", "credits"))
    await sink.add([("chat", "acme", 10.0)])
    sink.tally("user", {"u" * 300: 10.0})
    preview = render_preview(
        sink,
        tenant="acme",
        window=WINDOW,
        download_url="u",
        expires_at=NOW,
        now=NOW,
        findings=Findings(tops_in_text=True),
    )
    assert f"Top users: {'u' * (preview.cell_limit - 1)}… 10.00 (100.0%)." in preview.text
    assert preview.shortened
