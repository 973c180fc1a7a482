"""OpenTelemetry: what the Aspire dashboard shows of this server (traces, metrics and logs over OTLP).

The code below instruments through the OpenTelemetry *API* only: a module-level tracer and meter that stay no-ops
until `setup_telemetry` installs the SDK, which it does only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Without it,
every hook here is a no-op API call and nothing is exported. The MCP SDK's own span for each MCP message uses the
same global providers, so once they are installed our spans nest under it:

    tools/call get_credit_events          (MCP SDK, SERVER)
      tool get_credit_events              (tool, tenant, window, rows, bytes, outcome)
        openmeter GET /api/v2/events      (one per logical request; attempts and retries as events)
        workbook build                    (rows, bytes)
    download                              (served / not_found / unavailable)

Nothing here records credit values, user names, query strings, download tokens, exception messages or the
OpenMeter API key: spans and metrics carry sizes, outcomes, path templates, status codes and exception types.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, StatusCode

from ai_credit_usage.runtime.settings import ConfigError
from ai_credit_usage.runtime.tool_call import ToolCall

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from starlette.requests import Request
    from starlette.responses import Response

DEFAULT_SERVICE_NAME = "ai-credits-mcp"
DEFAULT_PROTOCOL = "http/protobuf"  # the OpenTelemetry spec's default; Aspire sets OTEL_EXPORTER_OTLP_PROTOCOL anyway
INSTRUMENTATION_NAME = "ai_credit_usage"
SHUTDOWN_TIMEOUT_SECONDS = 5.0

# Seconds histograms: the SDK's default buckets are made for milliseconds (0, 5, 10, 25, ... 10000).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BYTES_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)

# Proxies: they record nothing until setup installs a provider, then forward to it (the SDK's own pattern).
tracer = trace.get_tracer(INSTRUMENTATION_NAME)
meter = metrics.get_meter(INSTRUMENTATION_NAME)

tool_calls = meter.create_counter(
    "ai_credits.tool.calls",
    unit="{call}",
    description="Tool calls, by tool and outcome (ok, refused, invalid, error, timeout)",
)
tool_duration = meter.create_histogram(
    "ai_credits.tool.duration",
    unit="s",
    description="Time from the caller gate to the answer, by tool and outcome",
    explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
)
openmeter_duration = meter.create_histogram(
    "ai_credits.openmeter.request.duration",
    unit="s",
    description="One HTTP request to OpenMeter (each retry counts), by path template and status",
    explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
)
openmeter_errors = meter.create_counter(
    "ai_credits.openmeter.request.errors",
    unit="{request}",
    description="OpenMeter requests that failed, by path template and status code or error type",
)
workbook_size = meter.create_histogram(
    "ai_credits.workbook.size",
    unit="By",
    description="Size of each workbook built",
    explicit_bucket_boundaries_advisory=BYTES_BUCKETS,
)
download_requests = meter.create_counter(
    "ai_credits.download.requests",
    unit="{request}",
    description="GET /download/<token>, by outcome (served, not_found: unknown or expired, unavailable)",
)
downloads_expired = meter.create_counter(
    "ai_credits.download.expired", unit="{link}", description="Links the in-memory store freed at expiry"
)

# --- set-up -------------------------------------------------------------------------------------------------------


@dataclass
class Telemetry:
    """The SDK providers this process installed, and the log handler feeding them; `shutdown()` flushes all."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    log_handler: logging.Handler
    description: str = ""
    stopped: bool = False

    def shutdown(self, timeout_seconds: float = SHUTDOWN_TIMEOUT_SECONDS) -> None:
        """Send what is left, for at most `timeout_seconds`. Idempotent: the app's lifespan calls it, main.py too.

        The three signals flush side by side, and a collector that is down does not hold the exit for long: the
        exporters would retry for their whole timeout (10 s each by default) before giving up.
        """
        if self.stopped:
            return
        self.stopped = True
        logging.getLogger().removeHandler(self.log_handler)
        deadline = time.monotonic() + timeout_seconds
        flushes = [
            threading.Thread(target=stop, name=f"otel-shutdown-{n}", daemon=True)
            for n, stop in enumerate(
                (self.tracer_provider.shutdown, self.meter_provider.shutdown, self.logger_provider.shutdown)
            )
        ]
        for flush in flushes:
            flush.start()
        for flush in flushes:
            flush.join(max(0.0, deadline - time.monotonic()))


def setup_telemetry(environ: Mapping[str, str] = os.environ) -> Telemetry | None:
    """Export traces, metrics and logs over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; otherwise do nothing.

    `environ` decides whether, and which protocol per signal (`OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL`: `grpc` or
    `http/protobuf`). Everything else is the SDK's standard handling of the process environment: endpoint,
    `OTEL_EXPORTER_OTLP_HEADERS`, certificates, timeouts, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, the
    sampler and the batch and export intervals. Call it once per process: the API keeps the first providers set.
    """
    if not environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return None
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    protocols = {signal: signal_protocol(environ, signal) for signal in ("traces", "metrics", "logs")}
    resource = service_resource()
    # Telemetry.shutdown() ends them: the SDK's own atexit hooks would not run when SIGTERM ends the process.
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(otlp_exporter("traces", protocols["traces"])))
    metric_reader = PeriodicExportingMetricReader(otlp_exporter("metrics", protocols["metrics"]))
    meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader], shutdown_on_exit=False)
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(otlp_exporter("logs", protocols["logs"])))
    telemetry = install_telemetry(tracer_provider, meter_provider, logger_provider)
    used = sorted(set(protocols.values()))
    telemetry.description = (
        f"exporting traces, metrics and logs over OTLP ({', '.join(used)}) to "
        f"{_where(environ['OTEL_EXPORTER_OTLP_ENDPOINT'])} as service {resource.attributes.get('service.name')!r}"
    )
    return telemetry


def _where(endpoint: str) -> str:
    """The endpoint for the start-up line: scheme, host and port, never a user or password in it."""
    try:
        parts = urlsplit(endpoint.strip())
        if not parts.hostname:  # no scheme, e.g. localhost:4317
            return endpoint.strip().rsplit("@", 1)[-1]
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "the endpoint in OTEL_EXPORTER_OTLP_ENDPOINT"


def install_telemetry(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, logger_provider: LoggerProvider
) -> Telemetry:
    """Make these the process's providers and send the root logger's records to `logger_provider`.

    Tests call this with in-memory exporters; the API accepts the first providers of a process and keeps them.
    """
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    set_logger_provider(logger_provider)
    handler = LoggingHandler(logger_provider=logger_provider)
    # The exporters' own complaints (endpoint down, ...) stay on the console: exporting them would feed the fault.
    handler.addFilter(lambda record: not record.name.startswith("opentelemetry"))
    logging.getLogger().addHandler(handler)
    return Telemetry(tracer_provider, meter_provider, logger_provider, handler)


def signal_protocol(environ: Mapping[str, str], signal: str) -> str:
    """`OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else the spec's default."""
    for name in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol not in ("grpc", "http/protobuf"):
                raise ConfigError(f"{name}={protocol!r} is not supported here: use grpc or http/protobuf.")
            return protocol
    return DEFAULT_PROTOCOL


_EXPORTERS = {
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter"),
    ("logs", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("metrics", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter"),
    ("logs", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
}


def otlp_exporter(signal: str, protocol: str) -> Any:
    """The SDK's OTLP exporter for one signal; it reads its endpoint, headers and timeout from the environment."""
    module, name = _EXPORTERS[(signal, protocol)]
    # Imported on demand: gRPC is a heavy import that a server exporting over HTTP (or not at all) never needs.
    return getattr(importlib.import_module(module), name)()


def service_resource() -> Any:
    """`OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` as the SDK reads them, with our name when neither names one."""
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource


# What a reader may take as a line break (Python's splitlines: also VT, FF, the file/group/record separators, NEL,
# U+2028/U+2029), and the other control characters, tabs kept.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")


class ConsoleFormatter(logging.Formatter):
    """The console's lines: one record starts one line at the left margin, and lines logged inside a recorded span
    end with its trace id, to find the trace on the dashboard.

    A record's further lines (a message's line breaks, a traceback, an exception quoting a request: the SDK logs
    `prompts/get` for an unknown name with the name in it) are indented, so no request can write a line that reads
    as a record of its own; other control characters (a terminal's escape sequences) are shown as `\\xNN`."""

    def format(self, record: logging.LogRecord) -> str:
        text = _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", super().format(record))
        return _LINE_BREAK.sub("\n    ", text)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = trace.get_current_span().get_span_context()
        return f"{line} [trace_id={context.trace_id:032x}]" if context.is_valid else line


# --- spans and metrics at the call sites ---------------------------------------------------------------------------


@contextmanager
def _span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A current span that records an exception's type, never its message (it may quote data)."""
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            _fail(span, type(exc).__qualname__)
            raise


def _fail(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR, error_type)


@contextmanager
def tool_span(tool: str) -> Iterator[Span]:
    """A `tool <name>` span around one tools/call, inside the SDK's span for the message (the gate opens it)."""
    with _span(f"tool {tool}", attributes={"gen_ai.tool.name": tool}) as span:
        yield span


def record_tool_call(call: ToolCall) -> None:
    """What the audit line says, as span attributes and metrics (no tenant on metrics: it is per-call detail)."""
    attributes = {"gen_ai.tool.name": call.tool, "ai_credits.outcome": call.outcome}
    tool_calls.add(1, attributes)
    tool_duration.record(call.seconds, attributes)
    span = call.span
    if span is None or not span.is_recording():
        return
    details = {
        "tais.tenant": call.tenant,
        "tais.role": call.role,
        "ai_credits.window.from": call.window_from,
        "ai_credits.window.to": call.window_to,
        "ai_credits.rows": call.rows,
        "ai_credits.workbook.bytes": call.bytes,
        "ai_credits.outcome": call.outcome,
    }
    span.set_attributes({key: value for key, value in details.items() if value is not None})
    # A refusal or an invalid argument is the caller's doing (like a 4xx), not the server failing: unset status.
    if call.outcome == "timeout":
        _fail(span, "timeout")
    elif call.outcome == "error":  # the reason is a class name or a fixed phrase, never a message
        _fail(span, call.reason or "error")


class OpenMeterRequest:
    """One logical OpenMeter request: a span over every attempt, a duration and status per attempt."""

    def __init__(self, span: Span, template: str, method: str = "GET") -> None:
        self.span = span
        self.template = template
        self.method = method
        self.attempts = 0
        self.status: int | None = None

    def note_status(self, status: int) -> None:
        """The HTTP status of the current attempt, once OpenMeter answered."""
        self.status = status
        self.span.set_attribute("http.response.status_code", status)

    def _begin_attempt(self) -> None:
        self.attempts += 1
        self.status = None

    @contextmanager
    def attempt(self) -> Iterator[None]:
        self._begin_attempt()
        started = time.perf_counter()
        error_type: str | None = None
        try:
            yield
        except BaseException as exc:
            # A status says it best; without one, the transport error the client turned into OpenMeterError.
            cause = exc.__context__ if exc.__context__ is not None else exc
            error_type = str(self.status) if self.status and self.status >= 400 else type(cause).__name__
            raise
        finally:
            attributes: dict[str, Any] = {"http.request.method": self.method, "url.template": self.template}
            if self.status is not None:
                attributes["http.response.status_code"] = self.status
            if error_type is not None:
                attributes["error.type"] = error_type
                openmeter_errors.add(1, attributes)
                self.span.add_event("attempt failed", {"attempt": self.attempts, "error.type": error_type})
            openmeter_duration.record(time.perf_counter() - started, attributes)


@contextmanager
def openmeter_request(
    path: str, meter: str | None, *, method: str = "GET", template: str | None = None
) -> Iterator[OpenMeterRequest]:
    """Wraps one OpenMeter request: the path as a template, so no meter slug or id, tenant or query string reaches
    the span name (`template` when the caller names it, e.g. a customer's entitlement path; else `path` with the
    meter's key as `{meter}`)."""
    if template is None:
        template = path.replace(f"/meters/{meter}", "/meters/{meter}", 1) if meter else path
    attributes = {"http.request.method": method, "url.template": template}
    with _span(f"openmeter {method} {template}", kind=SpanKind.CLIENT, attributes=attributes) as span:
        request = OpenMeterRequest(span, template, method)
        try:
            yield request
        finally:
            span.set_attribute("ai_credits.openmeter.attempts", request.attempts)


async def traced_workbook(build: Awaitable[bytes], *, rows: int) -> bytes:
    """Awaits the workbook inside a `workbook build` span with its row count and size."""
    with _span("workbook build", attributes={"ai_credits.rows": rows}) as span:
        content = await build
        span.set_attribute("ai_credits.workbook.bytes", len(content))
        workbook_size.record(len(content))
        return content


_DOWNLOAD_OUTCOMES = {200: "served", 404: "not_found", 503: "unavailable"}


def traced_download(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wraps the `/download/{token}` route: a span and a count per request; the token is never recorded."""

    async def download(request: Request) -> Response:
        attributes = {"http.request.method": "GET", "http.route": "/download/{token}"}
        with _span("download", kind=SpanKind.SERVER, attributes=attributes) as span:
            response = await handler(request)
            outcome = _DOWNLOAD_OUTCOMES.get(response.status_code, "other")
            span.set_attributes({"http.response.status_code": response.status_code, "ai_credits.outcome": outcome})
            if outcome == "served":
                span.set_attribute("ai_credits.workbook.bytes", len(response.body))
            elif response.status_code >= 500:
                _fail(span, str(response.status_code))
            download_requests.add(1, {"ai_credits.outcome": outcome})
            return response

    return download


class _SizedStore(Protocol):
    @property
    def bytes_held(self) -> int: ...

    def __len__(self) -> int: ...


_watched_stores: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_download_store(store: object) -> None:
    """Report the in-memory store's entries and bytes as gauges. Redis is not counted: that would take a SCAN."""
    if hasattr(store, "bytes_held") and hasattr(store, "__len__"):
        _watched_stores.add(store)


def _observe_entries(options: CallbackOptions) -> Iterable[Observation]:
    stores: list[_SizedStore] = list(_watched_stores)
    return [Observation(sum(len(store) for store in stores))] if stores else []


def _observe_bytes(options: CallbackOptions) -> Iterable[Observation]:
    stores: list[_SizedStore] = list(_watched_stores)
    return [Observation(sum(store.bytes_held for store in stores))] if stores else []


meter.create_observable_gauge(
    "ai_credits.download_store.entries",
    callbacks=[_observe_entries],
    unit="{link}",
    description="Live download links held in this process's memory",
)
meter.create_observable_gauge(
    "ai_credits.download_store.size",
    callbacks=[_observe_bytes],
    unit="By",
    description="Workbook bytes held in this process's memory for download links",
)
