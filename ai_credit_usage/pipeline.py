"""One tool call from its arguments to what it returns, the same path for every tool: the query (`spec.parse`), the
question (`spec.question`, which returns its findings), the workbook and its download link, the text and the
structured result beside it. The pipeline only: the questions are questions/', the answer's shape answers/'."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import anyio
from mcp.types import CallToolResult

from ai_credit_usage.answers.compose import Link, rows_of, text_and_result, workbook_of
from ai_credit_usage.answers.demo_notice import DEMO_BANNER
from ai_credit_usage.answers.downloads import DownloadStore
from ai_credit_usage.answers.render import MAX_PREVIEW_CHARS
from ai_credit_usage.answers.results import answer_result, error_result
from ai_credit_usage.answers.summary import Asked
from ai_credit_usage.answers.table import WorkbookSink
from ai_credit_usage.answers.workbook import XLSX_MEDIA_TYPE
from ai_credit_usage.questions.filters import NO_FILTERS, Filters
from ai_credit_usage.questions.sink import Progress
from ai_credit_usage.questions.usage import UsageService
from ai_credit_usage.runtime.errors import UserFacingError
from ai_credit_usage.runtime.settings import (
    DEFAULT_TOOL_DEADLINE_SECONDS,
    DEFAULT_WORKBOOK_PROCESS_ROWS,
    DEFAULT_WORKBOOK_PROCESSES,
)
from ai_credit_usage.runtime.tool_call import Caller, ToolCall, current_call
from ai_credit_usage.runtime.window import Clock, Window, format_utc
from ai_credit_usage.tools import ToolSpec

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
        download_base_url: str,
        source: str,
        clock: Clock,
        deadline_seconds: float = DEFAULT_TOOL_DEADLINE_SECONDS,
        demo: bool = False,
        process_writer_rows: int = DEFAULT_WORKBOOK_PROCESS_ROWS,
        workbook_processes: int = DEFAULT_WORKBOOK_PROCESSES,
    ) -> None:
        self._usage = usage
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
        sink = WorkbookSink(
            progress=progress, process_rows=self._process_writer_rows, process_slots=self._process_slots
        )
        link: Link | None = None
        try:
            query = spec.parse(arguments, self._clock())
            window = query.window
            if not window.is_instant:
                call.window_from, call.window_to = format_utc(window.start), format_utc(window.end)
            with anyio.fail_after(self._deadline_seconds):
                findings = await spec.question(self._usage, caller.tenant, query, sink)
                call.rows = rows_of(sink, findings)
                asked = Asked(spec.name, spec.title, caller.tenant, query, self._source, self._demo, self._clock())
                content = await workbook_of(asked, sink, findings)
            if content is not None:
                call.bytes = len(content)
                token, download = await self._downloads.put(
                    content,
                    filename=("DEMO_" if self._demo else "")
                    + _filename(spec.file_label, caller.tenant, window, query.filters),
                    media_type=XLSX_MEDIA_TYPE,
                    tenant=caller.tenant,
                )
                link = Link(f"{self._download_base_url}/download/{token}", download.expires_at)
        except Exception as exc:
            return self._failed(exc, spec, caller, call)
        finally:
            sink.close()  # a failed or abandoned call leaves no workbook process and no rows behind
        budget = MAX_PREVIEW_CHARS - (len(DEMO_BANNER) + 2 if self._demo else 0)
        text, structured = text_and_result(asked, sink, findings, link, result=spec.result, budget=budget)
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


def _filename(label: str, tenant: str, window: Window, filters: Filters = NO_FILTERS) -> str:
    """ai-credits_<label>_<tenant>[_<dimension>-<value>...]_<from>_to_<to>.xlsx, or one instant's stamp for an
    answer as of a moment."""
    safe_tenant = _UNSAFE_FILENAME.sub("_", tenant).strip("._")[:60] or "tenant"
    for name, value in filters.pairs:
        safe_tenant += f"_{name}-" + (_UNSAFE_FILENAME.sub("_", value).strip("._")[:40] or "_")
    if window.is_instant:
        return f"ai-credits_{label}_{safe_tenant}_{window.start.strftime('%Y-%m-%dT%H%MZ')}.xlsx"
    return f"ai-credits_{label}_{safe_tenant}_{_stamp(window.start)}_to_{_stamp(window.end)}.xlsx"


def _stamp(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H%M%SZ")
