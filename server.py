"""The MCP app: four tools, the caller gate, `/health` and `/download/<token>`. The work lives in `ai_credit_usage`."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.server import ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, ToolAnnotations
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from ai_credit_usage.audit import ToolCallRecord, current_record
from ai_credit_usage.bearer_gate import BearerTokenGate
from ai_credit_usage.caller import (
    ROLE_HEADER,
    TENANT_HEADER,
    Refusal,
    current_caller,
    header_value,
    identify_caller,
)
from ai_credit_usage.demo import DEMO_INSTRUCTIONS, demo_transport
from ai_credit_usage.downloads import UNAVAILABLE, DownloadStore, DownloadStoreUnavailable, open_download_store
from ai_credit_usage.openmeter import OpenMeterClient, RetryPolicy
from ai_credit_usage.report import Question, ReportMaker, error_result
from ai_credit_usage.settings import LOOPBACK_NAMES, Settings
from ai_credit_usage.structured import EventsResult, SummaryResult, TenantTotalResult, TrendResult
from ai_credit_usage.telemetry import Telemetry, trace_tool_calls, traced_download, watch_download_store
from ai_credit_usage.trend import Dimension
from ai_credit_usage.trend import Granularity as TrendGranularity
from ai_credit_usage.usage import EVENT_COLUMNS, SUMMARY_COLUMNS, TENANT_COLUMNS, UsageService
from ai_credit_usage.window import Clock, utc_now

logger = logging.getLogger("ai_credit_usage.server")

VERSION = "0.1.0"
SWEEP_INTERVAL_SECONDS = 30

INSTRUCTIONS = """\
Answers a tenant administrator's questions about their own tenant's AI credit usage, read from OpenMeter.
Pick the tool by the question: totals and the change against the previous period -> get_credit_usage_by_tenant;
who or what uses the most (breakdown by user, module, product, skill, and who changed most) ->
get_credit_usage_summary; individual events ("what happened on Jan 15th?") -> get_credit_events; usage over time
("is it going up?", per day, week or month, unusual periods) -> get_credit_usage_trend. Every tool takes from_date
and to_date (ISO 8601, both optional; default: the last 7 days), the trend tool also granularity, group_by and
time_zone, and always answers for the caller's own tenant. Each answer has a short table and a link to the full
Excel report, which expires after a few minutes: give the user the link as it is."""

FromDate = Annotated[
    str | None,
    Field(
        description="Start of the window, inclusive, ISO 8601: 2026-01-01, 2026-01-01T00:00:00Z or "
        "2026-01-01T00:00:00+02:00 (no offset means UTC). Default: 7 days before to_date."
    ),
]
ToDate = Annotated[
    str | None,
    Field(
        description="End of the window, ISO 8601. A date alone includes that whole day (January: from_date "
        "2026-01-01, to_date 2026-01-31); a timestamp is exclusive. Default: now."
    ),
]
Granularity = Annotated[
    TrendGranularity | None,
    Field(
        description="Length of one period. Default from the window: up to 45 days daily, up to 26 weeks weekly, "
        "else monthly. Weeks start on Monday."
    ),
]
GroupBy = Annotated[
    Dimension | None,
    Field(description="Split each period by this dimension (the top 5, the rest as Other). Default: the total only."),
]
TimeZone = Annotated[
    str | None,
    Field(
        description="IANA time zone name (e.g. Europe/Paris) for the period boundaries, and for from_date/to_date "
        "given without an offset. Default: UTC."
    ),
]
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
WINDOW_HELP = (
    " The window defaults to the last 7 days; a date-only to_date includes that whole day. The answer names the "
    "window, shows a table of at most 50 rows and the total, and links an Excel file with every row."
)
TENANT_TOTAL_HELP = (
    'Total AI credits the caller\'s tenant used in a time window: "How many credits did we use this month?", '
    '"Compared to last month?". One row (tenant, credits), and the change against the preceding window of the same '
    "length. For who or what used them use get_credit_usage_summary; over time, get_credit_usage_trend; for "
    "individual events, get_credit_events." + WINDOW_HELP
)
SUMMARY_HELP = (
    "Breakdown of the tenant's AI credits by user, module, product and skill, largest first: \"Who uses the "
    'most?", "Which module costs the most?", "Who changed most since last week?". One row per combination, and the '
    "three users whose credits changed most against the preceding window. For the plain total use "
    "get_credit_usage_by_tenant; over time, get_credit_usage_trend; for individual events, get_credit_events."
    + WINDOW_HELP
)
TREND_HELP = (
    'The tenant\'s AI credits over time: "Is our usage going up?", "Credits per week this quarter", "Which module '
    'grew in March?", "Anything unusual this month?". One row per day, week or month, with 0 where nothing was used; '
    "periods the window cuts are marked partial. With group_by, one column per user, module, product or skill (the "
    "top 5, the rest as Other). The answer names unusual periods (far above the typical one). For totals or "
    "breakdowns of the whole window use get_credit_usage_by_tenant or get_credit_usage_summary." + WINDOW_HELP
)
EVENTS_HELP = (
    "Individual AI-credit events of the tenant, newest first: time (UTC), user, module, product, credits. For "
    '"What happened on January 15th?" use from_date=to_date=2026-01-15. Prefer short windows; for totals or '
    "breakdowns use get_credit_usage_by_tenant or get_credit_usage_summary." + WINDOW_HELP
)


TITLES = {
    "get_credit_usage_by_tenant": "AI credits used by my tenant",
    "get_credit_usage_summary": "AI credit usage breakdown",
    "get_credit_events": "AI credit events",
    "get_credit_usage_trend": "AI credit usage over time",
}


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    retry: RetryPolicy | None = None,
    openmeter_transport: httpx2.AsyncBaseTransport | None = None,
    demo: bool = False,
    telemetry: Telemetry | None = None,
) -> Starlette:
    """Build the whole ASGI app; `clock`, `retry` and `openmeter_transport` are the seams for tests and benchmarks.

    `demo` answers from generated data: an in-process OpenMeter stand-in becomes the client's transport (so the
    production path runs unchanged below it) and every answer and workbook says it is demo data. `telemetry`, the
    process's OpenTelemetry (main.py owns it), is flushed and shut down when the app stops.
    """
    if demo and openmeter_transport is None:
        openmeter_transport = demo_transport(
            clock(), api_key=settings.openmeter_api_key.get_secret_value(), meter_slug=settings.openmeter_meter
        )
    openmeter = OpenMeterClient(
        settings.openmeter_url,
        settings.openmeter_api_key.get_secret_value(),
        timeout_seconds=settings.openmeter_timeout_seconds,
        max_concurrency=settings.openmeter_max_concurrency,
        retry=retry,
        transport=openmeter_transport,
    )
    usage = UsageService(
        openmeter,
        settings.openmeter_meter,
        max_event_rows=settings.max_event_rows,
        parallel_slices=settings.openmeter_max_concurrency,
    )
    store_url = settings.download_store_url.get_secret_value() if settings.download_store_url else None
    downloads = open_download_store(
        store_url, settings.download_ttl_seconds, clock, max_bytes=settings.download_store_max_bytes
    )
    watch_download_store(downloads)
    reports = ReportMaker(
        downloads,
        download_base_url=settings.download_base_url,
        meter_slug=settings.openmeter_meter,
        clock=clock,
        deadline_seconds=settings.tool_deadline_seconds,
        demo=demo,
        process_writer_rows=settings.workbook_process_rows,
    )
    instructions = INSTRUCTIONS + DEMO_INSTRUCTIONS if demo else INSTRUCTIONS
    mcp = MCPServer("ai-credits-mcp", version=VERSION, instructions=instructions)

    async def answer(
        tool: str,
        columns: tuple[str, ...],
        question: Question,
        ctx: Context,
        from_date: str | None,
        to_date: str | None,
        *,
        title: str,
        time_zone: str = "UTC",
    ) -> CallToolResult:
        caller = current_caller.get(None)
        if caller is None:  # the gate always sets it; refuse rather than guess if it ever does not
            return error_result("The caller could not be identified, so no usage can be shown.")
        return await reports.answer(
            tool,
            caller,
            columns,
            question,
            from_date,
            to_date,
            title=title,
            time_zone=time_zone,
            progress=ctx.report_progress,
        )

    # Each tool returns markdown first (TAIS reads text) and a structured result its output schema describes.
    @mcp.tool(title=TITLES["get_credit_usage_by_tenant"], description=TENANT_TOTAL_HELP, annotations=READ_ONLY)
    async def get_credit_usage_by_tenant(
        ctx: Context, from_date: FromDate = None, to_date: ToDate = None
    ) -> Annotated[CallToolResult, TenantTotalResult]:
        tool = "get_credit_usage_by_tenant"
        return await answer(tool, TENANT_COLUMNS, usage.tenant_total, ctx, from_date, to_date, title=TITLES[tool])

    @mcp.tool(title=TITLES["get_credit_usage_summary"], description=SUMMARY_HELP, annotations=READ_ONLY)
    async def get_credit_usage_summary(
        ctx: Context, from_date: FromDate = None, to_date: ToDate = None
    ) -> Annotated[CallToolResult, SummaryResult]:
        tool = "get_credit_usage_summary"
        return await answer(tool, SUMMARY_COLUMNS, usage.summary, ctx, from_date, to_date, title=TITLES[tool])

    @mcp.tool(title=TITLES["get_credit_events"], description=EVENTS_HELP, annotations=READ_ONLY)
    async def get_credit_events(
        ctx: Context, from_date: FromDate = None, to_date: ToDate = None
    ) -> Annotated[CallToolResult, EventsResult]:
        tool = "get_credit_events"
        return await answer(tool, EVENT_COLUMNS, usage.events, ctx, from_date, to_date, title=TITLES[tool])

    @mcp.tool(title=TITLES["get_credit_usage_trend"], description=TREND_HELP, annotations=READ_ONLY)
    async def get_credit_usage_trend(
        ctx: Context,
        from_date: FromDate = None,
        to_date: ToDate = None,
        granularity: Granularity = None,
        group_by: GroupBy = None,
        time_zone: TimeZone = None,
    ) -> Annotated[CallToolResult, TrendResult]:
        tool, zone = "get_credit_usage_trend", (time_zone or "").strip() or "UTC"
        question = functools.partial(usage.trend, granularity=granularity, group_by=group_by, time_zone=zone)
        return await answer(tool, (), question, ctx, from_date, to_date, title=TITLES[tool], time_zone=zone)

    mcp.middleware.append(trace_tool_calls)  # inside the SDK's span for the message, around the gate
    mcp.middleware.append(_caller_gate(settings, mcp))

    async def health(request: Request) -> Response:
        if await downloads.healthy():  # the memory store always is; Redis gets a PING with a short timeout
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "degraded", "download_store": "unreachable"}, status_code=503)

    async def download(request: Request) -> Response:
        try:
            found = await downloads.get(request.path_params["token"])
        except DownloadStoreUnavailable:  # not 404: the link may well be valid once the store is back
            return PlainTextResponse(UNAVAILABLE, status_code=503, headers={"Retry-After": "60"})
        if found is None:  # unknown, expired or never issued: the same answer, revealing nothing
            return PlainTextResponse("Not Found", status_code=404)
        return Response(
            found.content,
            media_type=found.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{found.filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    mcp_app: ASGIApp = mcp.streamable_http_app(
        # Stateful (default) keeps sessions in this process; replicas behind a load balancer need stateless.
        stateless_http=settings.mcp_stateless,
        transport_security=_transport_security(settings),
        host=settings.mcp_host,
    )
    if settings.mcp_auth_token is not None:
        mcp_app = BearerTokenGate(mcp_app, settings.mcp_auth_token.get_secret_value())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp.session_manager.run(), anyio.create_task_group() as tasks:
            tasks.start_soon(_sweep_downloads, downloads)
            if not await downloads.healthy():  # say it now, not at the first tool call; the store may come back
                logger.warning(
                    "the download store (DOWNLOAD_STORE_URL) is unreachable at start-up: tool calls fail and /health "
                    "answers 503 until it answers"
                )
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()
                # Shielded: that cancel also covers this block, whose first await would otherwise end it.
                with anyio.CancelScope(shield=True):
                    await openmeter.aclose()
                    await downloads.aclose()
                    if telemetry is not None:  # now: next, uvicorn re-raises SIGTERM and the process just ends
                        await anyio.to_thread.run_sync(telemetry.shutdown)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/download/{token}", traced_download(download), methods=["GET"]),
            Mount("/", app=mcp_app),
        ],
        lifespan=lifespan,
    )
    app.state.downloads = downloads  # for operators' introspection and tests; never served
    return app


def _caller_gate(settings: Settings, mcp: MCPServer):
    """The one gate every tool call passes: an admin of a named tenant, with only the declared arguments.

    `initialize`, `tools/list` and the rest pass untouched, so a client can connect and list tools without headers.
    A refusal is a tool result with `isError` and one sentence, so the chat can tell the user.
    """

    declared_arguments: dict[str, dict[str, Any]] = {}  # tool -> its input schema's properties

    async def gate(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call":
            return await call_next(ctx)
        if not declared_arguments:
            declared_arguments.update(
                {tool.name: dict(tool.input_schema.get("properties", {})) for tool in await mcp.list_tools()}
            )
        params = ctx.params or {}
        tool = str(params.get("name", ""))
        headers = ctx.request.headers if ctx.request is not None else {}
        record = ToolCallRecord(
            tool=tool,
            tenant=(settings.tenant_override or header_value(headers, TENANT_HEADER)).strip()[:200] or None,
            role=(settings.role_override or header_value(headers, ROLE_HEADER)).strip()[:200] or None,
        )
        try:
            caller = identify_caller(
                headers, tenant_override=settings.tenant_override, role_override=settings.role_override
            )
            _check_arguments(tool, params.get("arguments") or {}, declared_arguments)
        except Refusal as refusal:
            record.fail("refused", str(refusal))
            record.emit()
            return error_result(str(refusal))
        caller_token, record_token = current_caller.set(caller), current_record.set(record)
        try:
            result = await call_next(ctx)
        except BaseException:
            record.fail("error", "exception")
            raise
        else:
            if record.outcome == "ok" and _is_error(result):
                record.fail("error", "tool error")
            return result
        finally:
            current_caller.reset(caller_token)
            current_record.reset(record_token)
            record.emit()

    return gate


def _is_error(result: HandlerResult) -> bool:
    if isinstance(result, dict):
        return bool(result.get("isError"))
    return bool(getattr(result, "is_error", False))


def _check_arguments(tool: str, arguments: Any, declared_arguments: dict[str, dict[str, Any]]) -> None:
    """Undeclared arguments are refused (nothing may widen the tenant scope), and so are values outside a declared
    choice, with one sentence naming the parameter rather than a validation dump."""
    properties = declared_arguments.get(tool)
    if properties is None or not isinstance(arguments, dict):
        return  # unknown tools and malformed arguments get the SDK's own error
    unexpected = sorted(set(arguments) - set(properties))
    if unexpected:
        raise Refusal(
            f"{tool} takes only {_listed(sorted(properties))}; it always answers for your own tenant, "
            f"so leave out {', '.join(repr(name) for name in unexpected)}."
        )
    for name, value in arguments.items():
        if value is None:
            continue
        choices = _choices(properties[name])
        if choices is not None and value not in choices:
            raise Refusal(f"{name} must be one of {_listed(choices)} (or left out); {value!r:.40} is not one of them.")
        if choices is None and not isinstance(value, str) and "string" in _types(properties[name]):
            example = "2026-01-15" if name.endswith("_date") else "Europe/Paris" if name == "time_zone" else "a name"
            raise Refusal(f"{name} must be text such as {example} (or left out); {value!r:.40} is not.")


def _types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a parameter's schema allows (`type`, or the `anyOf` of an optional one)."""
    return {str(option.get("type")) for option in [schema, *schema.get("anyOf", [])] if isinstance(option, dict)}


def _choices(schema: dict[str, Any]) -> list[Any] | None:
    """The values a `Literal[...] | None` parameter allows, from its JSON schema (`enum`, or inside `anyOf`)."""
    for option in [schema, *schema.get("anyOf", [])]:
        if isinstance(option, dict) and isinstance(option.get("enum"), list):
            return option["enum"]
    return None


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _transport_security(settings: Settings) -> TransportSecuritySettings:
    """DNS-rebinding protection stays on whatever the bind address; MCP_ALLOWED_HOSTS adds deployment names."""
    names = [f"[{name}]" if ":" in name else name for name in LOOPBACK_NAMES]
    public_host = urlsplit(settings.download_base_url).netloc
    hosts: list[str] = [f"{name}:*" for name in names]
    for extra in [*settings.extra_allowed_hosts, public_host]:
        hosts += [extra] if ":" in extra.rsplit("]", 1)[-1] else [extra, f"{extra}:*"]
    hosts = list(dict.fromkeys(hosts))
    origins = [f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


async def _sweep_downloads(downloads: DownloadStore) -> None:
    """Free expired workbooks even when nobody touches the store."""
    while True:
        await anyio.sleep(SWEEP_INTERVAL_SECONDS)
        if purged := await downloads.purge_expired():
            logger.info("freed %d expired downloads", purged)
