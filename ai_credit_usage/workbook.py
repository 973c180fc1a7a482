"""The full result as an .xlsx: a data sheet holding the table exactly, and an "About" sheet describing the query.

Written with openpyxl in write-only mode (flat memory, streams rows). Text is guarded: a value starting with `=`
would otherwise be stored as a formula, and XML-illegal control characters would make openpyxl raise.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

if TYPE_CHECKING:
    from ai_credit_usage.table import Table

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DATA_SHEET = "Data"
TIME_FORMAT = "yyyy-mm-dd hh:mm:ss"
CREDITS_FORMAT = "#,##0.00####"
_CONTEXT = multiprocessing.get_context("forkserver")  # fork() in a threaded server is unsafe; spawn is slow
_CONTEXT.set_forkserver_preload(["ai_credit_usage.workbook"])
_COLUMN_WIDTHS = {"time": 20, "user": 28, "module": 16, "product": 16, "tenant": 20, "skill": 20, "credits": 14}


class WorkbookBuilder:
    """Writes rows as they come (openpyxl write-only: flat memory), then the About sheet, then the bytes."""

    def __init__(self, columns: Sequence[str]) -> None:
        self._columns = tuple(columns)
        self._workbook = Workbook(write_only=True)
        self._sheet = sheet = self._workbook.create_sheet(DATA_SHEET)
        for index, name in enumerate(self._columns):
            sheet.column_dimensions[chr(ord("A") + index)].width = _COLUMN_WIDTHS.get(name, 16)
        sheet.freeze_panes = "A2"
        bold = Font(bold=True)
        sheet.append([_styled(sheet, name, font=bold) for name in self._columns])
        # Write-only sheets serialise a row during append(), so two styled cells can be reused on every row.
        self._time_cell = _styled(sheet, None, number_format=TIME_FORMAT)
        self._credits_cell = _styled(sheet, None, number_format=CREDITS_FORMAT)
        self.rows = 0

    def append(self, rows: Iterable[Sequence[Any]]) -> None:
        # One converter per column, chosen once: this loop runs for every cell of up to a million rows.
        converters = [self._converter(name) for name in self._columns]
        append = self._sheet.append
        for row in rows:
            append([convert(value) for convert, value in zip(converters, row, strict=True)])
            self.rows += 1

    def _converter(self, column: str) -> Callable[[Any], Any]:
        sheet, time_cell, credits_cell = self._sheet, self._time_cell, self._credits_cell

        def credits(value: Any) -> Any:
            credits_cell.value = value
            return credits_cell

        def cell(value: Any) -> Any:
            if isinstance(value, datetime):
                time_cell.value = _excel_time(value)
                return time_cell
            if isinstance(value, str):
                text, literal = _clean_text(value)
                if literal:
                    guarded = WriteOnlyCell(sheet, value=text)
                    guarded.data_type = "s"  # openpyxl would otherwise store "=..." as a formula
                    return guarded
                return text
            return value

        return credits if column == "credits" else cell

    def finish(self, about: Sequence[tuple[str, Any]]) -> bytes:
        about_sheet = self._workbook.create_sheet("About")
        about_sheet.column_dimensions["A"].width = 18
        about_sheet.column_dimensions["B"].width = 60
        for key, value in about:
            about_sheet.append([_text(about_sheet, key), _text(about_sheet, value)])
        buffer = io.BytesIO()
        self._workbook.save(buffer)
        return buffer.getvalue()


def build_workbook(table: Table, *, about: Sequence[tuple[str, Any]]) -> bytes:
    builder = WorkbookBuilder(table.columns)
    builder.append(table.rows)
    return builder.finish(about)


class ProcessWorkbookWriter:
    """A `WorkbookBuilder` in a child process, fed rows over a pipe while the pages are still arriving.

    openpyxl holds the GIL for the whole write (about 4 s per 100,000 rows here), which in a thread would still stall
    the event loop and every other request; a process does not. Children fork from a forkserver that has already
    imported openpyxl, so starting one costs ~15 ms (the first, which starts the forkserver, about 1 s).
    """

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self._process = process
        self._connection = connection

    @classmethod
    async def start(cls, columns: Sequence[str]) -> ProcessWorkbookWriter:
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=_serve_builder, args=(child, tuple(columns)), daemon=True)
        await anyio.to_thread.run_sync(process.start)
        child.close()
        return cls(process, parent)

    async def append(self, rows: list[tuple[Any, ...]]) -> None:
        # send() blocks while the child is busy writing: wait in a thread, never on the event loop.
        await anyio.to_thread.run_sync(self._connection.send, ("rows", rows))

    async def finish(self, about: Sequence[tuple[str, Any]]) -> bytes:
        def finish_in_child() -> tuple[str, Any]:
            self._connection.send(("finish", list(about)))
            return self._connection.recv()

        try:
            status, payload = await anyio.to_thread.run_sync(finish_in_child)
        except (EOFError, OSError) as exc:
            raise RuntimeError("the workbook process died") from exc
        finally:
            self.close()
        if status != "ok":
            raise RuntimeError(f"the workbook process failed: {payload}")
        return payload

    def close(self) -> None:
        """Stop the child whatever state it is in (also after a failed or abandoned call)."""
        self._connection.close()
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)


def _serve_builder(connection: Connection, columns: tuple[str, ...]) -> None:
    """The child's whole life: rows until "finish", then the bytes (or the error) back, then exit."""
    builder = WorkbookBuilder(columns)
    try:
        while True:
            kind, payload = connection.recv()
            if kind == "rows":
                builder.append(payload)
            else:
                connection.send(("ok", builder.finish(payload)))
                return
    except EOFError:  # the parent gave up on this call
        return
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))


def _excel_time(moment: datetime) -> datetime:
    """Excel has no time zones: store the UTC wall time (the About sheet says it is UTC)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None)


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
    text, literal = _clean_text(value)
    if literal:
        cell = WriteOnlyCell(sheet, value=text)
        cell.data_type = "s"  # openpyxl would otherwise store "=..." as a formula
        return cell
    return text


@functools.lru_cache(maxsize=65_536)
def _clean_text(value: str) -> tuple[str, bool]:
    """XML-illegal control characters dropped, and whether the text must be forced to a literal string cell.

    Cached: user, module and product names repeat on most rows, and the regular expression is the costly part.
    """
    text = ILLEGAL_CHARACTERS_RE.sub("", value)
    return text, text[:1] in ("=", "+", "-", "@")
