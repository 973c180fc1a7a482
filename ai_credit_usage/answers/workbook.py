"""The full result as an .xlsx that reads like a report: "Summary" first, then "Data", then "About".

- Summary: the tenant, the window, the total, the comparison with the preceding window, the top 5 by user, module,
  product and skill with their shares, and native charts (a bar chart of the top users; a trend's line chart).
- Data: exactly the table's columns and every row, nothing else; frozen header, autofilter, number formats.
- About: where every number comes from and what a row means.

This module is the layout; `workbook_writer` decides where it is written (a thread, or a child process for big
answers). Written with openpyxl in write-only mode (flat memory, streams rows). Each write-only sheet streams to its own
temporary file, so the Summary sheet is created first (sheet order is creation order) but filled only in `finish`,
once the data sheet has seen every row and the totals are known. openpyxl deletes those files only on save or at
a normal interpreter exit, so a workbook that is abandoned (a failed or cancelled call) removes them itself.
Text is guarded: a value starting with `=` would otherwise be stored as a formula, and XML-illegal control
characters would make openpyxl raise.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.utils.datetime import to_excel
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SUMMARY_SHEET = "Summary"
DATA_SHEET = "Data"
ABOUT_SHEET = "About"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
DATE_FORMAT = "yyyy-mm-dd"
CREDITS_FORMAT = "#,##0.00####"
SHARE_FORMAT = "0.0%"
_COLUMN_WIDTHS = {
    "time": 20,
    "user": 28,
    "module": 16,
    "product": 16,
    "tenant": 20,
    "skill": 20,
    "credits": 14,
    "day": 12,
    "week": 12,
    "month": 10,
    "partial": 9,
}
_BOLD = Font(bold=True)
_TITLE = Font(bold=True, size=14)
_CHART_COLUMN = "G"  # charts sit right of the Summary's columns A to E
_CHART_ROWS = 18  # rows one chart covers at its default height, so the next one goes below it


@dataclass(frozen=True)
class Fact:
    """One labelled value on the Summary sheet; `number_format` for numbers (credits, shares)."""

    label: str
    value: Any
    number_format: str | None = None


@dataclass(frozen=True)
class Block:
    """A small table on the Summary sheet (a top 5, the movers); `chart` titles a bar chart of its first two columns."""

    title: str
    heading: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    formats: tuple[str | None, ...]
    chart: str | None = None


@dataclass(frozen=True)
class LineChartSpec:
    """A line chart of data-sheet columns `first`..`last` (1-based) against the first column, one line each."""

    title: str
    first: int
    last: int
    y_title: str = "credits"


@dataclass(frozen=True)
class Report:
    """Everything besides the rows, sent to a workbook process whole in the "finish" message (so: picklable)."""

    facts: tuple[Fact, ...] = ()
    blocks: tuple[Block, ...] = ()
    about: tuple[tuple[str, Any], ...] = ()
    line_chart: LineChartSpec | None = None
    title: str = "AI credit usage"


class WorkbookBuilder:
    """Writes rows as they come (openpyxl write-only: flat memory), then the Summary and About sheets, then bytes.

    The last `amounts` columns hold credits and get the credits number format.
    """

    def __init__(self, columns: Sequence[str], *, amounts: int = 1) -> None:
        self._columns = tuple(columns)
        self._amounts = amounts
        self._workbook = Workbook(write_only=True)
        self._summary = self._workbook.create_sheet(SUMMARY_SHEET)  # first; filled in finish()
        self._sheet = sheet = self._workbook.create_sheet(DATA_SHEET)
        first_amount = len(self._columns) - amounts
        for index, name in enumerate(self._columns):
            width = _COLUMN_WIDTHS.get(name, 14 if index >= first_amount else 16)
            sheet.column_dimensions[get_column_letter(index + 1)].width = width
        sheet.freeze_panes = "A2"
        sheet.append([_text(sheet, name, font=_BOLD) for name in self._columns])
        # One converter per column, each with its own reusable styled cell: write-only sheets serialise a row during
        # append(), so a cell can be reused across rows, but not by two columns of the same row.
        self._converters = [
            _amount_converter(sheet) if index >= first_amount else _value_converter(sheet)
            for index in range(len(self._columns))
        ]
        self.rows = 0

    def append(self, rows: Iterable[Sequence[Any]]) -> None:
        converters, append = self._converters, self._sheet.append
        for row in rows:  # this loop runs for every cell of up to a million rows
            append([convert(value) for convert, value in zip(converters, row, strict=True)])
            self.rows += 1

    def finish(self, report: Report) -> bytes:
        last_column = get_column_letter(max(1, len(self._columns)))
        # The autofilter, like the charts, is written after the rows, so the row count can be known by now.
        self._sheet.auto_filter.ref = f"A1:{last_column}{self.rows + 1}"
        self._write_summary(report)
        about = self._workbook.create_sheet(ABOUT_SHEET)
        about.column_dimensions["A"].width = 22
        about.column_dimensions["B"].width = 100
        for key, value in report.about:
            about.append([_text(about, key, font=_BOLD), _text(about, value)])
        buffer = io.BytesIO()
        self._workbook.save(buffer)
        return buffer.getvalue()

    def discard(self) -> None:
        """Delete the sheets' temporary files now, after a failure (`finish` deletes them on success)."""
        for sheet in self._workbook.worksheets:
            # openpyxl's private parts of a write-only sheet (its stubs do not name them): the file and its stream.
            writer = getattr(sheet, "_writer", None)
            if writer is None:
                continue
            # The row stream first, then the file it writes to; a half-written sheet may not close cleanly.
            for stream in (getattr(sheet, "_rows", None), writer):
                with contextlib.suppress(Exception):
                    if stream is not None:
                        stream.close()
            with contextlib.suppress(OSError, ValueError):  # already deleted by a save that failed part-way
                writer.cleanup()

    def _write_summary(self, report: Report) -> None:
        sheet = self._summary
        for column, width in zip("ABCDE", (30, 16, 16, 16, 10), strict=True):
            sheet.column_dimensions[column].width = width
        sheet.append([_text(sheet, report.title, font=_TITLE)])
        sheet.append([])
        row = 2
        for fact in report.facts:
            sheet.append([_text(sheet, fact.label, font=_BOLD), _formatted(sheet, fact.value, fact.number_format)])
            row += 1
        anchors = [f"{_CHART_COLUMN}{3 + _CHART_ROWS * k}" for k in range(8)]
        if report.line_chart is not None and self.rows:
            sheet.add_chart(self._line_chart(report.line_chart), anchors.pop(0))
        for block in report.blocks:
            sheet.append([])
            sheet.append([_text(sheet, block.title, font=_BOLD)])
            sheet.append([_text(sheet, name, font=_BOLD) for name in block.heading])
            heading_row = row + 3
            for values in block.rows:
                sheet.append([_formatted(sheet, value, fmt) for value, fmt in zip(values, block.formats, strict=True)])
            row = heading_row + len(block.rows)
            if block.chart is not None and block.rows:
                sheet.add_chart(_bar_chart(sheet, block.chart, heading_row, row), anchors.pop(0))

    def _line_chart(self, spec: LineChartSpec) -> LineChart:
        chart = LineChart()
        chart.title = spec.title
        chart.y_axis.title = spec.y_title
        chart.x_axis.title = self._columns[0]
        chart.x_axis.number_format = DATE_FORMAT
        chart.x_axis.delete = False  # openpyxl 3.1 hides the axes unless told otherwise
        chart.y_axis.delete = False
        chart.width, chart.height = 24, 9
        data = Reference(self._sheet, min_col=spec.first, max_col=spec.last, min_row=1, max_row=self.rows + 1)
        chart.add_data(data, titles_from_data=True)
        chart.set_categories(Reference(self._sheet, min_col=1, min_row=2, max_row=self.rows + 1))
        return chart


def _bar_chart(sheet: WriteOnlyWorksheet, title: str, heading_row: int, last_row: int) -> BarChart:
    chart = BarChart()
    chart.type = "bar"  # horizontal: long names stay readable
    chart.title = title
    chart.legend = None
    chart.x_axis.scaling.orientation = "maxMin"  # the largest on top, as in the table
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    chart.y_axis.title = "credits"
    chart.width, chart.height = 18, 8
    chart.add_data(Reference(sheet, min_col=2, min_row=heading_row, max_row=last_row), titles_from_data=True)
    chart.set_categories(Reference(sheet, min_col=1, min_row=heading_row + 1, max_row=last_row))
    return chart


class Rows(Protocol):
    """A table's columns and rows (a `table.Table`, say); the last `amounts` columns are credits."""

    @property
    def columns(self) -> Sequence[str]: ...

    @property
    def rows(self) -> Sequence[Sequence[Any]]: ...

    @property
    def amounts(self) -> int: ...


def build_workbook(table: Rows, *, report: Report = Report()) -> bytes:
    """The whole workbook at once, in this thread; a failure leaves no temporary file behind."""
    builder = WorkbookBuilder(table.columns, amounts=table.amounts)
    try:
        builder.append(table.rows)
        return builder.finish(report)
    except BaseException:
        builder.discard()
        raise


@dataclass(frozen=True)
class Sheet:
    """One data sheet of a small report workbook: exactly its table, a format per column (None: as it is)."""

    name: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    formats: tuple[str | None, ...]


@dataclass(frozen=True)
class SheetChart:
    """A line chart on the Summary of `sheet`'s columns `first`..`last` (1-based) against its first column."""

    title: str
    sheet: str
    first: int
    last: int
    y_title: str = "credits"


def build_report_workbook(report: Report, sheets: Sequence[Sheet], chart: SheetChart | None = None) -> bytes:
    """A small workbook at once: Summary (the report's facts and blocks, and the chart), the data sheets in order,
    then About. For answers of a few hundred rows (the balance); big tables stream through WorkbookBuilder."""
    workbook = Workbook(write_only=True)
    summary = workbook.create_sheet(SUMMARY_SHEET)
    for column, width in zip("ABCDEF", (30, 22, 16, 22, 22, 12), strict=True):
        summary.column_dimensions[column].width = width
    summary.append([_text(summary, report.title, font=_TITLE)])
    summary.append([])
    for fact in report.facts:
        summary.append([_text(summary, fact.label, font=_BOLD), _formatted(summary, fact.value, fact.number_format)])
    for block in report.blocks:
        summary.append([])
        summary.append([_text(summary, block.title, font=_BOLD)])
        summary.append([_text(summary, name, font=_BOLD) for name in block.heading])
        for values in block.rows:
            summary.append([_formatted(summary, v, f) for v, f in zip(values, block.formats, strict=True)])
    written: dict[str, tuple[WriteOnlyWorksheet, int]] = {}
    for spec in sheets:
        sheet = workbook.create_sheet(spec.name)
        for index, name in enumerate(spec.columns):
            sheet.column_dimensions[get_column_letter(index + 1)].width = _COLUMN_WIDTHS.get(name, 18)
        sheet.freeze_panes = "A2"
        sheet.append([_text(sheet, name, font=_BOLD) for name in spec.columns])
        for row in spec.rows:
            sheet.append([_formatted(sheet, v, f) for v, f in zip(row, spec.formats, strict=True)])
        sheet.auto_filter.ref = f"A1:{get_column_letter(max(1, len(spec.columns)))}{len(spec.rows) + 1}"
        written[spec.name] = (sheet, len(spec.rows))
    if chart is not None and written.get(chart.sheet, (None, 0))[1] > 0:
        data_sheet, rows = written[chart.sheet]
        line = LineChart()
        line.title, line.y_axis.title = chart.title, chart.y_title
        line.x_axis.number_format = DATE_FORMAT
        line.x_axis.delete = line.y_axis.delete = False
        line.width, line.height = 24, 10
        line.add_data(
            Reference(data_sheet, min_col=chart.first, max_col=chart.last, min_row=1, max_row=rows + 1),
            titles_from_data=True,
        )
        line.set_categories(Reference(data_sheet, min_col=1, min_row=2, max_row=rows + 1))
        summary.add_chart(line, f"{_CHART_COLUMN}3")
    about = workbook.create_sheet(ABOUT_SHEET)
    about.column_dimensions["A"].width = 22
    about.column_dimensions["B"].width = 100
    for key, value in report.about:
        about.append([_text(about, key, font=_BOLD), _text(about, value)])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _excel_time(moment: datetime) -> datetime:
    """Excel has no time zones: store the UTC wall time (the About sheet says it is UTC)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None)


def _value_converter(sheet: WriteOnlyWorksheet) -> Callable[[Any], Any]:
    time_cell = _styled(sheet, None, number_format=TIME_FORMAT)
    date_cell = _styled(sheet, None, number_format=DATE_FORMAT)

    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            # The Excel serial number openpyxl would compute, given directly: its datetime path per cell is slow.
            time_cell.value = to_excel(_excel_time(value))
            return time_cell
        if isinstance(value, date):
            date_cell.value = value
            return date_cell
        if isinstance(value, str):
            return _text(sheet, value)
        return value

    return convert


def _amount_converter(sheet: WriteOnlyWorksheet) -> Callable[[Any], Any]:
    credits_cell = _styled(sheet, None, number_format=CREDITS_FORMAT)

    def convert(value: Any) -> Any:
        credits_cell.value = value
        return credits_cell

    return convert


def _styled(
    sheet: WriteOnlyWorksheet, value: Any, *, font: Font | None = None, number_format: str | None = None
) -> Cell:
    cell = WriteOnlyCell(sheet, value=value)
    if font is not None:
        cell.font = font
    if number_format is not None:
        cell.number_format = number_format
    return cell


def _formatted(sheet: WriteOnlyWorksheet, value: Any, number_format: str | None) -> Any:
    if isinstance(value, str) or value is None:
        return _text(sheet, value)
    if isinstance(value, datetime):
        return _styled(sheet, _excel_time(value), number_format=number_format or TIME_FORMAT)
    if isinstance(value, date):
        return _styled(sheet, value, number_format=number_format or DATE_FORMAT)
    if number_format is not None:
        return _styled(sheet, value, number_format=number_format)
    return value


def _text(sheet: WriteOnlyWorksheet, value: Any, *, font: Font | None = None) -> Any:
    """Strings as literal text, never formulas; other values (numbers, datetimes) as they are."""
    if not isinstance(value, str):
        return value
    text, literal = _clean_text(value)
    if not literal and font is None:
        return text
    cell = WriteOnlyCell(sheet, value=text)
    if literal:
        cell.data_type = "s"  # openpyxl would otherwise store "=..." as a formula
    if font is not None:
        cell.font = font
    return cell


@functools.lru_cache(maxsize=65_536)
def _clean_text(value: str) -> tuple[str, bool]:
    """XML-illegal control characters dropped, and whether the text must be forced to a literal string cell.

    Cached: user, module and product names repeat on most rows, and the regular expression is the costly part.
    """
    text = ILLEGAL_CHARACTERS_RE.sub("", value)
    return text, text[:1] in ("=", "+", "-", "@")
