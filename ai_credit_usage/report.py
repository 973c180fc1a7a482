"""From a question to what a tool returns: the window, the table, the workbook, the link, the preview text and
the structured result beside it."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import anyio
from mcp.types import CallToolResult, TextContent

from ai_credit_usage.audit import ToolCallRecord, current_record
from ai_credit_usage.caller import Caller
from ai_credit_usage.compare import Comparison, Mover
from ai_credit_usage.demo import DEMO_ABOUT, DEMO_BANNER
from ai_credit_usage.downloads import DownloadStore
from ai_credit_usage.errors import UserFacingError
from ai_credit_usage.findings import Findings
from ai_credit_usage.render import MAX_PREVIEW_CHARS, period_text, render_preview
from ai_credit_usage.structured import build_result
from ai_credit_usage.table import BREAKDOWN_DIMENSIONS, PROCESS_WRITER_ROWS, Progress, TableSink
from ai_credit_usage.telemetry import traced_workbook
from ai_credit_usage.trend import MAD_LIMIT, MIN_BASELINE, MIN_TIMES_TYPICAL, NO_VALUE, Trend, parse_time_zone
from ai_credit_usage.window import Clock, Window, format_utc, resolve_window
from ai_credit_usage.workbook import (
    CREDITS_FORMAT,
    SHARE_FORMAT,
    XLSX_MEDIA_TYPE,
    Block,
    Fact,
    LineChartSpec,
    Report,
)

Question = Callable[[str, Window, TableSink], Awaitable[Findings]]
UNEXPECTED = (
    "Something went wrong while preparing this answer; try again in a minute, and if it keeps failing, "
    "ask the TAIS operator to look at the ai-credits-mcp log."
)
logger = logging.getLogger(__name__)
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
        title: str = "AI credit usage",
        time_zone: str = "UTC",
        progress: Progress | None = None,
    ) -> CallToolResult:
        """`columns` may be empty when the question defines them (a trend's series); `time_zone` is the trend's,
        also used to read dates without an offset; every other tool works in UTC."""
        record = current_record.get() or ToolCallRecord(tool=tool, tenant=caller.tenant, role=None)
        sink = TableSink(columns, progress=progress, process_rows=self._process_writer_rows)
        try:
            zone = parse_time_zone(time_zone)
            window = resolve_window(from_date, to_date, self._clock(), zone)
            record.window_from, record.window_to = format_utc(window.start), format_utc(window.end)
            with anyio.fail_after(self._deadline_seconds):
                findings = await question(caller.tenant, window, sink)
                record.rows = sink.row_count
                await sink.progress(f"writing {sink.row_count:,} rows to the Excel file")
                report = self._report(tool, title, caller, window, time_zone, sink, findings)
                content = await traced_workbook(sink.workbook(report), rows=sink.row_count)
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
            record.fail(exc.outcome, type(exc).__name__)
            return self._error(str(exc))
        except Exception as exc:  # a bug or a failure nobody foresaw: the log gets the traceback, the chat a sentence
            logger.exception("%s failed unexpectedly for tenant %r", tool, caller.tenant)
            record.fail("error", type(exc).__name__)
            return self._error(UNEXPECTED)
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
        result = build_result(
            tool,
            sink,
            findings,
            tenant=caller.tenant,
            window=window,
            download_url=download_url,
            expires_at=download.expires_at,
            preview=preview,
            demo=self._demo,
        )
        return CallToolResult(
            content=[TextContent(type="text", text=self._marked(preview.text))],  # first: TAIS reads the text
            structured_content=result.model_dump(mode="json", by_alias=True),
        )

    def _marked(self, text: str) -> str:
        return f"{DEMO_BANNER}\n\n{text}" if self._demo else text

    def _error(self, message: str) -> CallToolResult:
        return error_result(self._marked(message))

    def _report(
        self,
        tool: str,
        title: str,
        caller: Caller,
        window: Window,
        time_zone: str,
        sink: TableSink,
        findings: Findings,
    ) -> Report:
        generated = format_utc(self._clock())
        facts = [Fact("Data", DEMO_ABOUT)] if self._demo else []
        facts += [
            Fact("Tenant", caller.tenant),
            Fact("Question", f"{title} ({tool})"),
            Fact("From (UTC)", format_utc(window.start)),
            Fact("To (UTC, exclusive)", format_utc(window.end)),
            Fact("Time zone", time_zone),
        ]
        trend = findings.trend
        if trend is not None:
            facts += _trend_facts(trend)
        facts += [
            Fact("Generated at (UTC)", generated),
            Fact("Total credits", sink.total_credits, CREDITS_FORMAT),
            Fact("Rows in Data", sink.row_count),
        ]
        facts += _comparison_facts(findings)
        blocks = [_top_block(sink, dimension) for dimension in BREAKDOWN_DIMENSIONS if sink.breakdown(dimension)]
        if findings.movers and findings.comparison is not None:
            blocks.append(_movers_block(findings.movers, findings.comparison))
        line_chart = None
        if trend is not None:
            if trend.unusual:
                blocks.append(_unusual_block(trend))
            last = 2 + max(1, len(trend.series))  # the series (or the single credits column), not the total
            line_chart = LineChartSpec(f"Credits per {trend.granularity} ({trend.time_zone})", 3, last)
        source = f"OpenMeter meter '{self._meter_slug}'" + (" (in-process demo stand-in)" if self._demo else "")
        about: list[tuple[str, object]] = [("data", DEMO_ABOUT)] if self._demo else []
        about += [
            ("tool", tool),
            ("tenant", caller.tenant),
            ("from (UTC)", format_utc(window.start)),
            ("to (UTC, exclusive)", format_utc(window.end)),
            ("rows", sink.row_count),
            ("total credits", sink.total_credits),
            ("source", source),
            *findings.about,
            ("times", "UTC" if trend is None else f"UTC; periods are calendar {trend.granularity}s in {time_zone}"),
            ("credits", "exact, as OpenMeter sums them; the chat answer rounds them to 2 decimals"),
            ("Summary sheet", "top 5s: the credits of each user, module, product or skill, and its share of the total"),
            ("generated at (UTC)", generated),
        ]
        return Report(facts=tuple(facts), blocks=tuple(blocks), about=tuple(about), line_chart=line_chart, title=title)


def _trend_facts(trend: Trend) -> list[Fact]:
    unit = trend.granularity
    facts = [Fact("Granularity", unit)]
    if trend.judged:
        facts.append(Fact(trend.typical_name().capitalize(), trend.typical, CREDITS_FORMAT))
        unusual = f"{len(trend.unusual)} (listed below)" if trend.unusual else "none"
    elif trend.too_few_with_usage:
        unusual = f"too few {unit}s with usage to judge ({trend.complete_with_usage}; {MIN_BASELINE} needed)"
    else:
        unusual = f"too few complete {unit}s to judge ({trend.complete}; {MIN_BASELINE} needed)"
    return [*facts, Fact(f"Unusual {unit}s", unusual)]


def _movers_block(movers: list[Mover], comparison: Comparison) -> Block:
    return Block(
        f"Biggest changes by user against the previous {comparison.span}",
        ("user", "status", "credits", "before", "change"),
        tuple((mover.name or NO_VALUE, mover.status, mover.current, mover.previous, mover.change) for mover in movers),
        (None, None, CREDITS_FORMAT, CREDITS_FORMAT, CREDITS_FORMAT),
    )


def _unusual_block(trend: Trend) -> Block:
    unit, typical = trend.granularity, trend.typical_name()
    rows = []
    for found in trend.unusual:
        period = trend.periods[found.index]
        partial = "yes" if period.partial else "no"
        rows.append((period_text(period.label, unit), found.credits, found.times_typical, partial))
    basis = f"the median complete {unit}" + (" that had some" if trend.typical_with_usage else "")
    return Block(
        f"Unusual {unit}s: at least {MIN_TIMES_TYPICAL:g} times and more than {MAD_LIMIT} median absolute "
        f"deviations above the {typical} ({basis})",
        (unit, "credits", f"times the {typical}", "partial"),
        tuple(rows),
        (None, CREDITS_FORMAT, "0.0", None),
    )


def _comparison_facts(findings: Findings) -> list[Fact]:
    comparison = findings.comparison
    if comparison is None:
        return [Fact("Previous window", "not available (OpenMeter did not answer that query)")]
    before = comparison.previous_window
    facts = [
        Fact("Previous window (UTC)", f"{format_utc(before.start)} to {format_utc(before.end)}"),
        Fact(f"Previous {comparison.span}: credits", comparison.previous, CREDITS_FORMAT),
        Fact("Change (credits)", comparison.change, CREDITS_FORMAT),
    ]
    if comparison.percent is None:
        facts.append(Fact("Change (%)", "no usage in the previous period"))
    else:
        facts.append(Fact("Change (%)", comparison.percent / 100, SHARE_FORMAT))
    return facts


def _top_block(sink: TableSink, dimension: str) -> Block:
    total = sink.total_credits
    rows = tuple(
        (name or NO_VALUE, credits, credits / total if total else None) for name, credits in sink.top(dimension)
    )
    return Block(
        f"Top {len(rows)} {dimension}{'' if len(rows) == 1 else 's'} by credits",
        (dimension, "credits", "share"),
        rows,
        (None, CREDITS_FORMAT, SHARE_FORMAT),
        chart="Top users by credits" if dimension == "user" else None,
    )


def _filename(tool: str, tenant: str, window: Window) -> str:
    subject = tool.removeprefix("get_credit_").removeprefix("usage_by_").removeprefix("usage_")
    safe_tenant = _UNSAFE_FILENAME.sub("_", tenant).strip("._")[:60] or "tenant"
    return f"ai-credits_{subject}_{safe_tenant}_{_stamp(window.start)}_to_{_stamp(window.end)}.xlsx"


def _stamp(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H%M%SZ")
