"""One tool call from its arguments to what it returns: the query, the question, the workbook, the link, the text
and the structured result beside it. The pipeline only: the questions are usage.py's, the text render.py's, the
Summary sheet summary.py's, the structured result structured.py's."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
from mcp.types import CallToolResult

from ai_credit_usage.balance import BalanceService
from ai_credit_usage.balance_report import balance_workbook_content, no_allowance_text, not_metered_text, render_balance
from ai_credit_usage.caller import Caller
from ai_credit_usage.demo import DEMO_BANNER
from ai_credit_usage.downloads import DownloadStore
from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.render import MAX_PREVIEW_CHARS, render_preview
from ai_credit_usage.results import answer_result, error_result
from ai_credit_usage.settings import (
    DEFAULT_TOOL_DEADLINE_SECONDS,
    DEFAULT_WORKBOOK_PROCESS_ROWS,
    DEFAULT_WORKBOOK_PROCESSES,
)
from ai_credit_usage.structured import Answered, balance_result
from ai_credit_usage.summary import Asked, summary_report
from ai_credit_usage.table import Progress, TableSink
from ai_credit_usage.telemetry import traced_workbook
from ai_credit_usage.tool_call import ToolCall, current_call
from ai_credit_usage.tools import BalanceQuestion, ToolSpec
from ai_credit_usage.usage import UsageService
from ai_credit_usage.window import Clock, Window, format_utc
from ai_credit_usage.workbook import XLSX_MEDIA_TYPE, build_report_workbook

UNEXPECTED = (
    "Something went wrong while preparing this answer; try again in a minute, and if it keeps failing, "
    "ask the TAIS operator to look at the ai-credits-mcp log."
)
logger = logging.getLogger(__name__)
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class Pipeline:
    """Answers every tool call the gate lets through, for the tenant of its caller."""

    def __init__(
        self,
        usage: UsageService,
        downloads: DownloadStore,
        *,
        balance: BalanceService | None = None,
        download_base_url: str,
        source: str,
        clock: Clock,
        deadline_seconds: float = DEFAULT_TOOL_DEADLINE_SECONDS,
        demo: bool = False,
        process_writer_rows: int = DEFAULT_WORKBOOK_PROCESS_ROWS,
        workbook_processes: int = DEFAULT_WORKBOOK_PROCESSES,
    ) -> None:
        self._usage = usage
        self._balance = balance  # None: no credits feature configured
        self._downloads = downloads
        self._download_base_url = download_base_url
        self._source = source  # where the numbers come from, for the About sheet
        self._clock = clock
        self._deadline_seconds = deadline_seconds
        self._demo = demo  # every text and workbook then says, first thing, that the data is generated
        self._process_writer_rows = process_writer_rows
        # Shared by every call of this app: at most this many workbook child processes at once.
        self._process_slots = anyio.CapacityLimiter(workbook_processes)

    async def answer(
        self, spec: ToolSpec, caller: Caller, arguments: Mapping[str, Any], *, progress: Progress | None = None
    ) -> CallToolResult:
        """`arguments` are the tool's own, as the gate checked them; the caller comes from the gate, never from them."""
        call = current_call.get() or ToolCall(tool=spec.name, tenant=caller.tenant, role=None)
        if spec.balance_question is not None:
            return await self._answer_balance(spec, spec.balance_question, caller, call)
        question, result_model = spec.usage
        sink = TableSink(progress=progress, process_rows=self._process_writer_rows, process_slots=self._process_slots)
        try:
            query = spec.parse(arguments, self._clock())
            window = query.window
            call.window_from, call.window_to = format_utc(window.start), format_utc(window.end)
            with anyio.fail_after(self._deadline_seconds):
                findings = await question(self._usage, caller.tenant, query, sink)
                call.rows = sink.row_count
                await sink.progress(f"writing {sink.row_count:,} rows to the Excel file")
                asked = Asked(spec.name, spec.title, caller.tenant, query, self._source, self._demo, self._clock())
                report = summary_report(asked, sink, findings)
                content = await traced_workbook(sink.workbook(report), rows=sink.row_count)
            call.bytes = len(content)
            token, download = await self._downloads.put(
                content,
                filename=("DEMO_" if self._demo else "") + _filename(spec.file_label, caller.tenant, window),
                media_type=XLSX_MEDIA_TYPE,
                tenant=caller.tenant,
            )
        except Exception as exc:
            return self._failed(exc, spec, caller, call)
        finally:
            sink.close()  # a failed or abandoned call leaves no workbook process and no rows behind
        download_url = f"{self._download_base_url}/download/{token}"
        preview = render_preview(
            sink,
            tenant=caller.tenant,
            window=window,
            download_url=download_url,
            expires_at=download.expires_at,
            now=self._clock(),
            findings=findings,
            budget=MAX_PREVIEW_CHARS - (len(DEMO_BANNER) + 2 if self._demo else 0),
        )
        answered = Answered(
            sink, findings, caller.tenant, window, download_url, download.expires_at, preview, self._demo
        )
        result = result_model.of(answered)
        return answer_result(self._marked(preview.text), result.model_dump(mode="json", by_alias=True))

    async def _answer_balance(
        self, spec: ToolSpec, question: BalanceQuestion, caller: Caller, call: ToolCall
    ) -> CallToolResult:
        """The credits left: no window, the entitlement's figures, a small workbook written in a thread."""
        if self._balance is None:  # the tool is offered only when configured; refuse rather than guess
            return self._error("The credit balance is not configured on this server (OPENMETER_CREDITS_FEATURE).")
        try:
            now = self._clock()
            with anyio.fail_after(self._deadline_seconds):
                found = await question(self._balance, caller.tenant, now)
                if found.status != "metered":
                    text = no_allowance_text(found) if found.status == "none" else not_metered_text(found)
                    return answer_result(self._marked(text), balance_result(found, None, None, self._demo))
                call.rows = len(found.grants)
                report, sheets, chart = balance_workbook_content(
                    found, demo=self._demo, source=self._balance.describe(found.customer_key), generated=now
                )
                content = await anyio.to_thread.run_sync(build_report_workbook, report, sheets, chart)
            call.bytes = len(content)
            stamp = Window(now, now)
            token, download = await self._downloads.put(
                content,
                filename=("DEMO_" if self._demo else "") + _filename(spec.file_label, caller.tenant, stamp, one=True),
                media_type=XLSX_MEDIA_TYPE,
                tenant=caller.tenant,
            )
        except Exception as exc:
            return self._failed(exc, spec, caller, call)
        download_url = f"{self._download_base_url}/download/{token}"
        text = render_balance(found, download_url=download_url, expires_at=download.expires_at)
        structured = balance_result(found, download_url, download.expires_at, self._demo)
        return answer_result(self._marked(text), structured)

    def _failed(self, exc: Exception, spec: ToolSpec, caller: Caller, call: ToolCall) -> CallToolResult:
        """Every way an answer can fail, as one sentence for the chat; the log gets the traceback of a bug."""
        if isinstance(exc, TimeoutError):
            call.fail("timeout", f"deadline of {self._deadline_seconds:g} s")
            return self._error(
                f"The answer took longer than {self._deadline_seconds:g} seconds, mostly waiting for OpenMeter; "
                "try again in a few minutes, or ask for a shorter window."
            )
        if isinstance(exc, UserFacingError):
            call.fail(exc.outcome, type(exc).__name__)
            return self._error(str(exc))
        # A bug or a failure nobody foresaw.
        logger.error("%s failed unexpectedly for tenant %r", spec.name, caller.tenant, exc_info=exc)
        call.fail("error", type(exc).__name__)
        return self._error(UNEXPECTED)

    def _marked(self, text: str) -> str:
        return f"{DEMO_BANNER}\n\n{text}" if self._demo else text

    def _error(self, message: str) -> CallToolResult:
        return error_result(self._marked(message))


def _filename(label: str, tenant: str, window: Window, *, one: bool = False) -> str:
    """ai-credits_<label>_<tenant>_<from>_to_<to>.xlsx, or one instant's stamp for an answer as of a moment."""
    safe_tenant = _UNSAFE_FILENAME.sub("_", tenant).strip("._")[:60] or "tenant"
    if one:
        return f"ai-credits_{label}_{safe_tenant}_{window.start.strftime('%Y-%m-%dT%H%MZ')}.xlsx"
    return f"ai-credits_{label}_{safe_tenant}_{_stamp(window.start)}_to_{_stamp(window.end)}.xlsx"


def _stamp(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H%M%SZ")
