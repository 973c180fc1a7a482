"""The full result as an .xlsx: a data sheet holding the table exactly, and an "About" sheet describing the query.

Written with openpyxl in write-only mode (flat memory, streams rows). Text is guarded: a value starting with `=`
would otherwise be stored as a formula, and XML-illegal control characters would make openpyxl raise.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from ai_credit_usage.usage import Table

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DATA_SHEET = "Data"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
CREDITS_FORMAT = "#,##0.00####"
_COLUMN_WIDTHS = {"time": 20, "user": 28, "module": 16, "product": 16, "tenant": 20, "skill": 20, "credits": 14}


def build_workbook(table: Table, *, about: Sequence[tuple[str, Any]]) -> bytes:
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(DATA_SHEET)
    for index, name in enumerate(table.columns):
        sheet.column_dimensions[chr(ord("A") + index)].width = _COLUMN_WIDTHS.get(name, 16)
    sheet.freeze_panes = "A2"
    bold = Font(bold=True)
    sheet.append([_styled(sheet, name, font=bold) for name in table.columns])
    # Write-only sheets serialise a row during append(), so two styled cells can be reused on every row.
    time_cell = _styled(sheet, None, number_format=TIME_FORMAT)
    credits_cell = _styled(sheet, None, number_format=CREDITS_FORMAT)
    for row in table.rows:
        cells: list[Any] = []
        for name, value in zip(table.columns, row, strict=True):
            if name == "credits":
                credits_cell.value = value
                cells.append(credits_cell)
            elif isinstance(value, datetime):
                time_cell.value = _excel_time(value)
                cells.append(time_cell)
            else:
                cells.append(_text(sheet, value))
        sheet.append(cells)

    about_sheet = workbook.create_sheet("About")
    about_sheet.column_dimensions["A"].width = 18
    about_sheet.column_dimensions["B"].width = 60
    for key, value in about:
        about_sheet.append([_text(about_sheet, key), _text(about_sheet, value)])

    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _excel_time(moment: datetime) -> datetime:
    """Excel has no time zones: store the UTC wall time (the About sheet says it is UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def _styled(sheet: WriteOnlyWorksheet, value: Any, *, font: Font | None = None, number_format: str | None = None):
    cell = WriteOnlyCell(sheet, value=value)
    if font is not None:
        cell.font = font
    if number_format is not None:
        cell.number_format = number_format
    return cell


def _text(sheet: WriteOnlyWorksheet, value: Any) -> Any:
    """Strings as literal text, never formulas; other values (numbers, datetimes) as they are."""
    if not isinstance(value, str):
        return value
    value = ILLEGAL_CHARACTERS_RE.sub("", value)
    if value[:1] in ("=", "+", "-", "@"):
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"  # openpyxl would otherwise store "=..." as a formula
        return cell
    return value
