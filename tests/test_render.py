from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ai_credit_usage.render import escape_cell, format_credits, render_answer
from ai_credit_usage.table import PREVIEW_ROWS, Table
from ai_credit_usage.usage import SUMMARY_COLUMNS
from ai_credit_usage.window import Window

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
