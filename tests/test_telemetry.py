"""Issue 10: OpenTelemetry traces, metrics and logs, as the Aspire dashboard receives them.

In-process tests capture spans, metric points and log records with the SDK's in-memory exporter and reader, behind
the real MCP client over HTTP. Two tests run `main.py` in a child process: one exports over OTLP/HTTP to a tiny
receiver on loopback, one shows that without an endpoint nothing is installed at all.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn, make_event
from ai_credit_usage.runtime import telemetry
from ai_credit_usage.runtime.settings import ConfigError
from tests.conftest import ADMIN, API_KEY, FakeClock, ServerStarter, call_tool, text_of
from tests.otel_capture import Captured, TelemetryCapture, telemetry_capture
from tests.servers import free_port, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent
QUERY = "/api/v1/meters/ai_credits/query"
JANUARY = {"from_date": "2026-01-01", "to_date": "2026-01-31"}


@pytest.fixture(scope="module")
def otel() -> TelemetryCapture:
    return telemetry_capture()


@pytest.fixture
def acme_usage(openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(
        *[
            make_event(tenant="acme", credits=1.5 + i, time=datetime(2026, 1, 10 + i, tzinfo=UTC), user=f"u{i}")
            for i in range(3)
        ],
        make_event(tenant="globex", credits=100, time=datetime(2026, 1, 11, tzinfo=UTC)),
    )


def attributes(span: ReadableSpan) -> dict:
    return dict(span.attributes or {})


def exported_spans(captured: Captured) -> str:
    """Every span name, attribute, event and status, as one string to search for what must not be there."""
    parts = []
    for span in captured.spans:
        parts += [span.name, repr(attributes(span)), repr([(e.name, dict(e.attributes or {})) for e in span.events])]
        parts.append(span.status.description or "")
    return "\n".join(parts)


def exported_logs(captured: Captured) -> str:
    return "\n".join(f"{log.log_record.body} {dict(log.log_record.attributes or {})}" for log in captured.logs)


@pytest.mark.anyio
@pytest.mark.parametrize("api", ["v3"], indirect=True)
async def test_v3_requests_are_spans_named_by_template_with_their_method(
    otel: TelemetryCapture, server_url: str, acme_usage: None
) -> None:
    with otel.capture() as captured:
        result = await call_tool(server_url, "get_credit_usage_summary", JANUARY)
    assert not result.is_error
    spans = [span for span in captured.spans if span.name.startswith("openmeter ")]
    assert {span.name for span in spans} == {
        "openmeter GET /openmeter/meters",  # the key is looked up once; its ULID is in no span name
        "openmeter POST /openmeter/meters/{meterId}/query",
    }
    for span in spans:
        method, template = span.name.removeprefix("openmeter ").split(" ")
        assert (attributes(span)["http.request.method"], attributes(span)["url.template"]) == (method, template)
    assert AI_CREDITS_METER["id"] not in exported_spans(captured)


# --- a tool call, seen as spans, metrics and logs ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_tool_call_is_a_tool_span_under_the_sdk_span_with_openmeter_and_workbook_spans(
    otel: TelemetryCapture, server_url: str, acme_usage: None
) -> None:
    with otel.capture() as captured:
        result = await call_tool(server_url, "get_credit_usage_summary", JANUARY)
    assert not result.is_error

    sdk_span = captured.span("tools/call get_credit_usage_summary")  # the MCP SDK's own span for the message
    tool = captured.span("tool get_credit_usage_summary")
    assert tool.parent is not None and tool.parent.span_id == sdk_span.context.span_id
    assert tool.context.trace_id == sdk_span.context.trace_id
    assert attributes(tool) == {
        "gen_ai.tool.name": "get_credit_usage_summary",
        "tais.tenant": "acme",
        "tais.role": "admin",
        "ai_credits.window.from": "2026-01-01T00:00:00Z",
        "ai_credits.window.to": "2026-02-01T00:00:00Z",
        "ai_credits.rows": 3,
        "ai_credits.workbook.bytes": attributes(tool)["ai_credits.workbook.bytes"],
        "ai_credits.outcome": "ok",
    }
    assert attributes(tool)["ai_credits.workbook.bytes"] > 1000
    assert tool.status.status_code == StatusCode.UNSET

    children = captured.children(tool)
    openmeter_spans = [span for span in children if span.name.startswith("openmeter ")]
    assert {span.name for span in openmeter_spans} == {
        "openmeter GET /api/v1/meters/{meter}",
        "openmeter GET /api/v1/meters/{meter}/query",
    }
    for span in openmeter_spans:
        assert span.kind == SpanKind.CLIENT
        assert attributes(span)["http.request.method"] == "GET"
        assert attributes(span)["http.response.status_code"] == 200
        assert attributes(span)["ai_credits.openmeter.attempts"] == 1
        assert attributes(span)["url.template"] == span.name.removeprefix("openmeter GET ")
    workbook = captured.span("workbook build")
    assert workbook in children
    assert attributes(workbook) == {
        "ai_credits.rows": 3,
        "ai_credits.workbook.bytes": attributes(tool)["ai_credits.workbook.bytes"],
    }

    assert total(captured, "ai_credits.tool.calls", gen_ai__tool__name="get_credit_usage_summary") == 1
    assert total(captured, "ai_credits.tool.calls", ai_credits__outcome="ok") == 1
    (duration,) = captured.metric("ai_credits.tool.duration", ai_credits__outcome="ok")
    assert duration.count == 1 and 0 < duration.value < 30
    openmeter_points = captured.metric("ai_credits.openmeter.request.duration", http__response__status_code=200)
    assert sum(point.count for point in openmeter_points) == 3  # the meter, the window, the preceding window
    assert captured.metric("ai_credits.openmeter.request.errors") == []
    (size,) = captured.metric("ai_credits.workbook.size")
    assert (size.count, size.value) == (1, attributes(tool)["ai_credits.workbook.bytes"])

    # Nothing of the answer or the query: no credit figures, user names, tenant filter, key or other tenant.
    exported = exported_spans(captured)
    for secret in (API_KEY, "advancedMeterGroupByFilters", "globex", "u1", "3.5", "7.5", "groupBy="):
        assert secret not in exported
    assert API_KEY not in exported_logs(captured)


def total(captured: Captured, metric: str, **attributes: object) -> float:
    """A counter's value (or a histogram's count) over the points with these attributes."""
    return sum(point.count or point.value for point in captured.metric(metric, **attributes))


@pytest.mark.anyio
async def test_log_records_carry_the_trace_of_the_tool_call_and_never_the_key(
    otel: TelemetryCapture, server_url: str, acme_usage: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with otel.capture() as captured:
        await call_tool(server_url, "get_credit_usage_by_tenant", JANUARY)
        await call_tool(server_url, "get_credit_usage_by_tenant", headers={"X-Tenant-Name": "acme"})  # refused
    tool_spans = captured.spans_named("tool get_credit_usage_by_tenant")
    audit = [log.log_record for log in captured.logs if '"event": "tool_call"' in str(log.log_record.body)]
    assert len(audit) == len(tool_spans) == 2
    for record, span in zip(audit, sorted(tool_spans, key=lambda s: s.start_time), strict=True):
        assert (record.trace_id, record.span_id) == (span.context.trace_id, span.context.span_id)
    openmeter_lines = [log.log_record for log in captured.logs if "OpenMeter GET" in str(log.log_record.body)]
    assert openmeter_lines and all(record.trace_id == tool_spans[0].context.trace_id for record in openmeter_lines)
    assert API_KEY not in exported_logs(captured) + exported_spans(captured)
    assert API_KEY not in caplog.text


@pytest.mark.anyio
async def test_a_failed_call_marks_the_spans_and_counts_the_retries_and_the_status(
    otel: TelemetryCapture, server_url: str, openmeter: OpenMeterStandIn
) -> None:
    # Only the window's own query fails (it groups by skill); the preceding window's comparison query succeeds.
    openmeter.fail(status=503, times=10, path_prefix=QUERY, query={"groupBy": "skill"})
    with otel.capture() as captured:
        result = await call_tool(server_url, "get_credit_usage_summary")
    assert result.is_error

    tool = captured.span("tool get_credit_usage_summary")
    assert attributes(tool)["ai_credits.outcome"] == "error"
    assert attributes(tool)["error.type"] == "OpenMeterError"
    assert (tool.status.status_code, tool.status.description) == (StatusCode.ERROR, "OpenMeterError")
    (query,) = [
        span
        for span in captured.spans_named("openmeter GET /api/v1/meters/{meter}/query")
        if attributes(span)["http.response.status_code"] == 503
    ]
    assert query.parent is not None and query.parent.span_id == tool.context.span_id
    assert query.status.status_code == StatusCode.ERROR
    assert attributes(query)["http.response.status_code"] == 503
    assert attributes(query)["ai_credits.openmeter.attempts"] == 4  # the RetryPolicy's attempts
    assert [dict(event.attributes or {}) for event in query.events] == [
        {"attempt": n, "error.type": "503"} for n in (1, 2, 3, 4)
    ]
    assert captured.spans_named("workbook build") == []

    assert total(captured, "ai_credits.tool.calls", ai_credits__outcome="error") == 1
    (errors,) = captured.metric("ai_credits.openmeter.request.errors", url__template="/api/v1/meters/{meter}/query")
    assert errors.value == 4
    failed = captured.metric("ai_credits.openmeter.request.duration", http__response__status_code=503)
    assert [point.count for point in failed] == [4]
    assert "OpenMeter had an internal error" not in exported_spans(captured)  # types and codes, never messages


@pytest.mark.anyio
async def test_an_unreachable_openmeter_is_named_by_its_transport_error(
    otel: TelemetryCapture, start_server: ServerStarter
) -> None:
    url = start_server(openmeter_url=f"http://127.0.0.1:{free_port()}")
    with otel.capture() as captured:
        result = await call_tool(url, "get_credit_usage_by_tenant")
    assert result.is_error
    meter = captured.span("openmeter GET /api/v1/meters/{meter}")
    assert attributes(meter)["error.type"] == "OpenMeterError"
    assert {dict(event.attributes or {})["error.type"] for event in meter.events} == {"ConnectError"}
    assert "http.response.status_code" not in attributes(meter)
    (errors,) = captured.metric("ai_credits.openmeter.request.errors", error__type="ConnectError")
    assert errors.value == attributes(meter)["ai_credits.openmeter.attempts"]


@pytest.mark.anyio
async def test_a_refusal_is_counted_but_is_not_a_server_error(otel: TelemetryCapture, server_url: str) -> None:
    with otel.capture() as captured:
        result = await call_tool(server_url, "get_credit_events", headers={"X-Tenant-Name": "acme"})
    assert result.is_error
    tool = captured.span("tool get_credit_events")
    assert attributes(tool) == {
        "gen_ai.tool.name": "get_credit_events",
        "tais.tenant": "acme",
        "ai_credits.outcome": "refused",
    }
    assert tool.status.status_code == StatusCode.UNSET
    assert captured.children(tool) == []
    assert total(captured, "ai_credits.tool.calls", ai_credits__outcome="refused") == 1
    assert total(captured, "ai_credits.tool.duration", ai_credits__outcome="refused") == 1


# --- downloads ----------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_downloads_served_refused_and_expired(
    otel: TelemetryCapture, server_url: str, acme_usage: None, clock: FakeClock
) -> None:
    with otel.capture() as captured:
        text = text_of(await call_tool(server_url, "get_credit_usage_by_tenant", JANUARY))
        (path,) = re.findall(r"/download/[\w-]+", text)
        assert httpx2.get(server_url + path).status_code == 200
        assert httpx2.get(server_url + "/download/not-a-token").status_code == 404
        gauges = otel.collect(captured)  # the store holds the one workbook
        clock.advance(seconds=601)
        assert httpx2.get(server_url + path).status_code == 404

    downloads = captured.spans_named("download")
    assert [attributes(span)["ai_credits.outcome"] for span in downloads] == ["served", "not_found", "not_found"]
    served = downloads[0]
    assert served.kind == SpanKind.SERVER and served.parent is None
    assert attributes(served)["http.route"] == "/download/{token}"
    assert (
        attributes(served)["ai_credits.workbook.bytes"]
        == attributes(captured.span("tool get_credit_usage_by_tenant"))["ai_credits.workbook.bytes"]
    )
    assert all(span.status.status_code == StatusCode.UNSET for span in downloads)
    token = path.removeprefix("/download/")  # a capability: in no span and no log line
    assert token not in exported_spans(captured) + exported_logs(captured)

    assert [p.value for p in captured.metric("ai_credits.download.requests", ai_credits__outcome="served")] == [1]
    assert [p.value for p in captured.metric("ai_credits.download.requests", ai_credits__outcome="not_found")] == [2]
    assert [p.value for p in captured.metric("ai_credits.download.expired")] == [1]
    entries = [point.value for (name, _), point in gauges.items() if name == "ai_credits.download_store.entries"]
    size = [point.value for (name, _), point in gauges.items() if name == "ai_credits.download_store.size"]
    assert entries and entries[0] >= 1 and size and size[0] >= attributes(served)["ai_credits.workbook.bytes"]


# --- set-up -------------------------------------------------------------------------------------------------------


def test_without_an_endpoint_setup_installs_nothing() -> None:
    before = (trace.get_tracer_provider(), list(logging.getLogger().handlers))
    assert telemetry.setup_telemetry({}) is None
    assert telemetry.setup_telemetry({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    assert telemetry.setup_telemetry(disabled) is None
    assert (trace.get_tracer_provider(), list(logging.getLogger().handlers)) == before


NO_ENDPOINT_RUN = """
import anyio, httpx2, logging, os, sys
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider
from ai_credit_usage.openmeter.standin.demo import DEMO_SETTINGS
from ai_credit_usage.runtime.settings import load_settings
from ai_credit_usage.runtime.telemetry import setup_telemetry
from server import create_app

assert setup_telemetry(os.environ) is None
app = create_app(load_settings(_env_file=None, **DEMO_SETTINGS), demo=True)

async def one_call():
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        headers = {"X-Tenant-Name": "demo", "X-User-UserRole": "admin"}
        async with httpx2.AsyncClient(transport=transport, headers=headers) as http, Client(
            streamable_http_client("http://127.0.0.1:8765/mcp", http_client=http)
        ) as client:
            return await client.call_tool("get_credit_usage_by_tenant", {})

result = anyio.run(one_call)
assert not result.is_error, result
print("providers:", type(trace.get_tracer_provider()).__name__, type(metrics.get_meter_provider()).__name__,
      type(get_logger_provider()).__name__)
print("exporters imported:", sorted(name for name in sys.modules if name.startswith("opentelemetry.exporter")))
print("root handlers:", [type(h).__name__ for h in logging.getLogger().handlers])
"""


def test_a_run_without_an_endpoint_installs_no_provider_and_no_exporter(tmp_path: Path) -> None:
    """A fresh process, as main.py runs it without Aspire: a tool call leaves the API's no-op proxies in place."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", NO_ENDPOINT_RUN], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "providers: ProxyTracerProvider _ProxyMeterProvider ProxyLoggerProvider" in done.stdout
    assert "exporters imported: []" in done.stdout
    assert "root handlers: ['StreamHandler']" in done.stdout  # no OpenTelemetry log handler


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        pytest.param({}, {"traces": "http", "metrics": "http", "logs": "http"}, id="default-http-protobuf"),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, {"traces": "grpc", "metrics": "grpc", "logs": "grpc"}, id="grpc"
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            {"traces": "http", "metrics": "http", "logs": "http"},
            id="http-protobuf",
        ),
        pytest.param(
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"},
            {"traces": "grpc", "metrics": "grpc", "logs": "http"},
            id="per-signal",
        ),
    ],
)
def test_the_exporters_follow_otel_exporter_otlp_protocol(variables: dict[str, str], expected: dict[str, str]) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", **variables}
    names = {"traces": "OTLPSpanExporter", "metrics": "OTLPMetricExporter", "logs": "OTLPLogExporter"}
    for signal_name, transport in expected.items():
        exporter = telemetry.otlp_exporter(signal_name, telemetry.signal_protocol(environ, signal_name))
        try:  # constructed only: nothing is sent
            assert type(exporter).__name__ == names[signal_name]
            assert type(exporter).__module__.startswith(f"opentelemetry.exporter.otlp.proto.{transport}.")
        finally:
            exporter.shutdown()


def test_an_unsupported_protocol_stops_start_up_with_one_line_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported here"):
        telemetry.signal_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "traces")
    with pytest.raises(ConfigError, match=r"^OTEL_EXPORTER_OTLP_LOGS_PROTOCOL='http/json' is not supported here"):
        telemetry.signal_protocol({"OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json"}, "logs")


def test_the_service_name_defaults_to_ai_credits_mcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev")
    resource = telemetry.service_resource()
    assert resource.attributes["service.name"] == "ai-credits-mcp"
    assert resource.attributes["deployment.environment"] == "dev"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ai-credits-mcp-2")  # what Aspire sets: the resource's name
    assert telemetry.service_resource().attributes["service.name"] == "ai-credits-mcp-2"


def test_console_lines_inside_a_span_end_with_its_trace_id(otel: TelemetryCapture) -> None:
    formatter = telemetry.ConsoleFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    assert formatter.format(record) == "INFO hello there"
    with otel.capture(), telemetry.tracer.start_as_current_span("work") as span:
        line = formatter.format(record)
    assert line == f"INFO hello there [trace_id={span.get_span_context().trace_id:032x}]"


# --- end to end: main.py exporting over OTLP/HTTP -----------------------------------------------------------------


class OtlpReceiver:
    """Just enough of an OTLP/HTTP collector: keeps the protobuf body of every POST /v1/<signal>."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {"traces": [], "metrics": [], "logs": []}
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/{signal}", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.bodies[request.path_params["signal"]].append(body)
            self.headers.append(dict(request.headers))
        return Response(b"", media_type="application/x-protobuf")

    def spans(self) -> list:
        found = []
        for body in self.bodies["traces"]:
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
                found += [(service, span) for scope in resource_spans.scope_spans for span in scope.spans]
        return found

    def metric_names(self) -> set[str]:
        return {
            metric.name
            for body in self.bodies["metrics"]
            for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def log_records(self) -> list:
        return [
            record
            for body in self.bodies["logs"]
            for resource in ExportLogsServiceRequest.FromString(body).resource_logs
            for scope in resource.scope_logs
            for record in scope.log_records
        ]


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[OtlpReceiver, str]]:
    receiver = OtlpReceiver()
    with serve_in_thread(receiver.app) as url:
        yield receiver, url


def start_main(env: dict[str, str], cwd: Path, base: str) -> subprocess.Popen[str]:
    """`main.py` in a child process, once `/health` answers (or it has exited)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py")],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx2.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx2.TransportError:
            time.sleep(0.05)
    return proc


@pytest.mark.anyio
async def test_main_exports_traces_metrics_and_logs_over_otlp_http(
    otlp_receiver: tuple[OtlpReceiver, str], openmeter_url: str, acme_usage: None, tmp_path: Path
) -> None:
    receiver, receiver_url = otlp_receiver
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OPENMETER_", "MCP_", "PUBLIC_"))}
    env |= {
        "PYTHONPATH": str(ROOT),
        "MCP_PORT": str(port),
        "OPENMETER_API_KEY": API_KEY,
        "OPENMETER_URL": openmeter_url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-otlp-api-key=dashboard-key-123",  # how Aspire's dashboard is secured
        "OTEL_SERVICE_NAME": "ai-credits-mcp",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before the shutdown flush
        "OTEL_BLRP_SCHEDULE_DELAY": "60000",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
    }
    base = f"http://127.0.0.1:{port}"
    proc = await anyio.to_thread.run_sync(start_main, env, tmp_path, base)
    try:
        result = await call_tool(base, "get_credit_usage_by_tenant", JANUARY, headers=ADMIN)
        assert not result.is_error, text_of(result)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # as Aspire stops it: the shutdown flushes what is left
        output, _ = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=30))

    assert proc.returncode == -signal.SIGTERM, output  # uvicorn shuts down cleanly, then re-raises the signal
    assert f"OpenTelemetry: exporting traces, metrics and logs over OTLP (http/protobuf) to {receiver_url}" in output
    assert "as service 'ai-credits-mcp'" in output
    assert "Traceback" not in output
    assert re.search(r'"event": "tool_call".*\[trace_id=[0-9a-f]{32}\]', output), output  # console lines too

    spans = receiver.spans()
    assert {service for service, _ in spans} == {"ai-credits-mcp"}
    by_name = {span.name: span for _, span in spans}
    tool, sdk = by_name["tool get_credit_usage_by_tenant"], by_name["tools/call get_credit_usage_by_tenant"]
    assert tool.parent_span_id == sdk.span_id
    assert by_name["openmeter GET /api/v1/meters/{meter}/query"].parent_span_id == tool.span_id
    assert by_name["workbook build"].parent_span_id == tool.span_id
    assert {
        "ai_credits.tool.calls",
        "ai_credits.tool.duration",
        "ai_credits.openmeter.request.duration",
        "ai_credits.workbook.size",
        "ai_credits.download_store.entries",
        "ai_credits.download_store.size",
    } <= receiver.metric_names()
    audit = [r for r in receiver.log_records() if '"event": "tool_call"' in r.body.string_value]
    assert len(audit) == 1 and audit[0].trace_id == tool.trace_id and audit[0].span_id == tool.span_id
    assert all(headers.get("x-otlp-api-key") == "dashboard-key-123" for headers in receiver.headers)

    everything = b"".join(body for bodies in receiver.bodies.values() for body in bodies)
    for secret in (API_KEY.encode(), b"dashboard-key-123", b"advancedMeterGroupByFilters", b"globex"):
        assert secret not in everything
    assert API_KEY not in output and "dashboard-key-123" not in output
