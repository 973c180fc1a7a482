"""From a question to what a tool returns: the window, the table, the preview text, the workbook, the link."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import anyio
from mcp.types import CallToolResult, TextContent

from ai_credit_usage.audit import ToolCallRecord, current_record
from ai_credit_usage.caller import Caller
from ai_credit_usage.demo import DEMO_ABOUT, DEMO_BANNER
from ai_credit_usage.downloads import DownloadStore
from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.render import render_answer
from ai_credit_usage.table import PROCESS_WRITER_ROWS, Progress, TableSink
from ai_credit_usage.telemetry import traced_workbook
from ai_credit_usage.window import Clock, Window, format_utc, resolve_window
from ai_credit_usage.workbook import XLSX_MEDIA_TYPE

Question = Callable[[str, Window, TableSink], Awaitable[None]]
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def error_result(message: str) -> CallToolResult:
    """A refusal or failure the chat can relay: a tool result with `isError`, not a protocol error."""
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


class ReportMaker:
    def __init__(
        self,
        downloads: DownloadStore,
        *,
        download_base_url: str,
        meter_slug: str,
        clock: Clock,
        deadline_seconds: float = 120.0,
        demo: bool = False,
        process_writer_rows: int = PROCESS_WRITER_ROWS,
    ) -> None:
        self._process_writer_rows = process_writer_rows
        self._downloads = downloads
        self._download_base_url = download_base_url
        self._meter_slug = meter_slug
        self._clock = clock
        self._deadline_seconds = deadline_seconds
        self._demo = demo  # every text and workbook then says, first thing, that the data is generated

    async def answer(
        self,
        tool: str,
        caller: Caller,
        columns: Sequence[str],
        question: Question,
        from_date: str | None,
        to_date: str | None,
        *,
        progress: Progress | None = None,
    ) -> CallToolResult:
        record = current_record.get() or ToolCallRecord(tool=tool, tenant=caller.tenant, role=None)
        sink = TableSink(columns, progress=progress, process_rows=self._process_writer_rows)
        try:
            window = resolve_window(from_date, to_date, self._clock())
            record.window_from, record.window_to = format_utc(window.start), format_utc(window.end)
            with anyio.fail_after(self._deadline_seconds):
                await question(caller.tenant, window, sink)
                record.rows = sink.row_count
                await sink.progress(f"writing {sink.row_count:,} rows to the Excel file")
                about = self._about(tool, caller, window, sink)
                content = await traced_workbook(sink.workbook(about), rows=sink.row_count)
            record.bytes = len(content)
            token, download = await self._downloads.put(
                content,
                filename=("DEMO_" if self._demo else "") + _filename(tool, caller.tenant, window),
                media_type=XLSX_MEDIA_TYPE,
            )
        except TimeoutError:
            record.fail("timeout", f"deadline of {self._deadline_seconds:g} s")
            return self._error(
                f"The answer took longer than {self._deadline_seconds:g} seconds, mostly waiting for OpenMeter; "
                "try again in a few minutes, or ask for a shorter window."
            )
        except UserFacingError as exc:
            record.fail("error", type(exc).__name__)
            return self._error(str(exc))
        finally:
            sink.close()  # a failed or abandoned call leaves no workbook process and no rows behind
        text = render_answer(
            sink,
            tenant=caller.tenant,
            window=window,
            download_url=f"{self._download_base_url}/download/{token}",
            expires_at=download.expires_at,
            now=self._clock(),
        )
        return CallToolResult(content=[TextContent(type="text", text=self._marked(text))])

    def _marked(self, text: str) -> str:
        return f"{DEMO_BANNER}\n\n{text}" if self._demo else text

    def _error(self, message: str) -> CallToolResult:
        return error_result(self._marked(message))

    def _about(self, tool: str, caller: Caller, window: Window, table: TableSink) -> list[tuple[str, object]]:
        source = f"OpenMeter meter '{self._meter_slug}'" + (" (in-process demo stand-in)" if self._demo else "")
        about: list[tuple[str, object]] = [("data", DEMO_ABOUT)] if self._demo else []
        return [
            *about,
            ("tool", tool),
            ("tenant", caller.tenant),
            ("from (UTC)", format_utc(window.start)),
            ("to (UTC, exclusive)", format_utc(window.end)),
            ("rows", table.row_count),
            ("total credits", table.total_credits),
            ("source", source),
            ("times", "UTC"),
            ("generated at (UTC)", format_utc(self._clock())),
        ]


def _filename(tool: str, tenant: str, window: Window) -> str:
    subject = tool.removeprefix("get_credit_").removeprefix("usage_by_").removeprefix("usage_")
    safe_tenant = _UNSAFE_FILENAME.sub("_", tenant).strip("._")[:60] or "tenant"
    return f"ai-credits_{subject}_{safe_tenant}_{_stamp(window.start)}_to_{_stamp(window.end)}.xlsx"


def _stamp(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H%M%SZ")
