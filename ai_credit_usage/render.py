"""The text a tool answers with: a window line, a GFM table of at most 50 rows, the cut line, the total, the link.

Cell text is escaped so a value can neither break the table (pipes, line breaks) nor turn into markup the chat
might render (links, HTML, code spans).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ai_credit_usage.table import PREVIEW_ROWS, Table, TableSink
from ai_credit_usage.window import Window, format_utc

_MARKDOWN_SPECIAL = re.compile(r"([\\|`\[\]<>])")
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\u2028\u2029\x85]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def escape_cell(text: str) -> str:
    """Markdown-safe table cell: backslash-escape markup, line breaks as <br>, other control characters dropped."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text.replace("\t", " "))
    return _CONTROL.sub("", _LINE_BREAKS.sub("<br>", text))


def format_credits(value: float) -> str:
    """Two decimals with thousands separators; a small non-zero amount is `<0.01`, never a misleading 0.00."""
    if value != 0 and abs(value) < 0.005:
        return "<0.01" if value > 0 else ">-0.01"
    text = f"{value:,.2f}"
    return "0.00" if text == "-0.00" else text


def _cell(column: str, value: Any) -> str:
    if column == "credits":
        return format_credits(value)
    if isinstance(value, datetime):
        return format_utc(value)
    return escape_cell(str(value))


def render_answer(
    table: Table | TableSink, *, tenant: str, window: Window, download_url: str, expires_at: datetime, now: datetime
) -> str:
    shown = table.preview_rows[:PREVIEW_ROWS]
    lines = [f"Tenant {escape_cell(tenant)}, {window.describe()}:", ""]
    lines.append("| " + " | ".join(table.columns) + " |")
    lines.append("|" + "|".join("---:" if name == "credits" else "---" for name in table.columns) + "|")
    for row in shown:
        lines.append(
            "| " + " | ".join(_cell(name, value) for name, value in zip(table.columns, row, strict=True)) + " |"
        )
    lines.append("")
    if len(shown) < table.row_count:
        lines.append(f"Showing {len(shown):,} of {table.row_count:,} rows; the Excel file has all {table.row_count:,}.")
    lines.append(f"Total credits: {format_credits(table.total_credits)}")
    minutes = max(1, round((expires_at - now).total_seconds() / 60))
    lines.append(
        f"[Download Excel]({download_url}) (link expires at {format_utc(expires_at)}, "
        f"in {minutes} minute{'' if minutes == 1 else 's'})"
    )
    return "\n".join(lines)
