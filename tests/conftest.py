"""Fixtures that run the server the way TAIS does: a real uvicorn on loopback, reached by the SDK's Streamable HTTP
client with the TAIS headers, talking to a stand-in OpenMeter that is itself a real HTTP server on loopback."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpcore2
import httpx2
import pytest
from hypothesis import settings as hypothesis_settings
from jsonschema import Draft202012Validator
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from starlette.applications import Starlette

from ai_credit_usage.openmeter import RetryPolicy
from ai_credit_usage.openmeter.http import OpenMeterHttp
from ai_credit_usage.openmeter.meter import Meter
from ai_credit_usage.openmeter.standin import AI_CREDITS_METER, OpenMeterStandIn
from ai_credit_usage.openmeter.v1 import OpenMeterV1
from ai_credit_usage.openmeter.v3 import OpenMeterV3
from ai_credit_usage.questions.sink import TableSink
from ai_credit_usage.questions.usage import EVENT_COLUMNS
from ai_credit_usage.runtime.settings import Settings, load_settings
from server import create_app
from tests.request_contract import sent_problems
from tests.servers import serve_in_thread

# Every httpx2 client loads the CA bundle into a new TLS context (about 30 ms of CPU), and the tests make thousands of
# clients (one per MCP connection, download, health check) that only ever speak plain HTTP to loopback. One context
# per process serves them all; the server's own OpenMeter client already keeps one (openmeter/http.py).
httpcore2.default_ssl_context = functools.cache(httpcore2.default_ssl_context)  # type: ignore[assignment]

# The SDK's client checks a tool's output schema against the JSON Schema metaschema once per session before it
# validates the structured result (10-30 ms for ours: draft 2020-12's metaschema is slow to apply), and the tests open
# a session per call, well over a thousand times. The check depends on the schema alone, so one pass per distinct
# schema per process is the same check; every result is still validated against its schema.
_schemas_checked: set[tuple[type, str]] = set()
_check_schema = Draft202012Validator.check_schema.__func__  # type: ignore[attr-defined]


def _check_schema_once(cls: type, schema: Any, *args: Any, **kwargs: Any) -> None:
    key = (cls, json.dumps(schema, sort_keys=True))
    if key not in _schemas_checked:
        _check_schema(cls, schema, *args, **kwargs)  # a schema that fails is checked (and fails) again next time
        _schemas_checked.add(key)


Draft202012Validator.check_schema = classmethod(_check_schema_once)  # type: ignore[method-assign,assignment]

# Property tests draw the same examples on every run unless asked otherwise (issue 23): a submission must never be
# refused by the draw of a seed. "ci" is Hypothesis's own (derandomized, no deadline, no example database), and it is
# the default here, not only where CI is set; `--hypothesis-profile=explore` (or HYPOTHESIS_PROFILE=explore) draws
# fresh random examples, ten times as many, to go on searching. A case it finds becomes an @example in the test.
hypothesis_settings.register_profile("explore", derandomize=False, deadline=None, max_examples=1000)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

API_KEY = "om-test-secret-4f9c2b7e1d"
NOW = datetime(2026, 1, 20, 12, 0, 0, tzinfo=UTC)
ADMIN = {"X-Tenant-Name": "acme", "X-User-UserRole": "admin"}
CLIENT_TIMEOUT = httpx2.Timeout(30.0, read=300.0)  # what the SDK's own client uses; httpx2's default is 5 s
# Real retries with millisecond waits: the behaviour under test is which errors are retried, not how long we wait.
FAST_RETRY = RetryPolicy(first_wait=0.001, max_wait=0.005, max_retry_after=0.005)
SETTINGS_VARIABLES = (
    "OPENMETER_API_KEY",
    "OPENMETER_URL",
    "OPENMETER_API",
    "OPENMETER_METER",
    "MCP_HOST",
    "MCP_PORT",
    "PUBLIC_BASE_URL",
    "DOWNLOAD_TTL_SECONDS",
    "MCP_ALLOWED_HOSTS",
    "MAX_EVENT_ROWS",
    "TENANT_OVERRIDE",
    "ROLE_OVERRIDE",
    "MCP_STATELESS",
    "DOWNLOAD_STORE_URL",
    "MCP_AUTH_TOKEN",
    "MCP_ALLOW_UNAUTHENTICATED",
    "DOWNLOAD_PORT",
    "DOWNLOAD_HOST",
    "MCP_JWT_JWKS_URL",
    "MCP_JWT_ISSUER",
    "MCP_JWT_AUDIENCE",
    "MCP_JWT_TENANT_CLAIM",
    "MCP_JWT_ROLES_CLAIM",
    "MCP_RESOURCE_URL",
    "WORKBOOK_PROCESSES",
    "MCP_LIMIT_CONCURRENCY",
    "MCP_KEEP_ALIVE_SECONDS",
    "OPENMETER_CREDITS_FEATURE",
    "OPENMETER_CUSTOMER_KEY",
    "OPENMETER_CREDITS_CURRENCY",
)


# The stand-in's AI-credits meter as the server reads it.
AI_METER = Meter.build(
    key="ai_credits",
    aggregation="SUM",
    event_type="ai_credits",
    value_property="$.credits",
    dimensions=AI_CREDITS_METER["groupBy"],
)


def v1_client(url: str, **options: Any) -> OpenMeterV1:
    """The production v1 client on its own HTTP core (`options` are OpenMeterHttp's)."""
    return OpenMeterV1(OpenMeterHttp(url, API_KEY, **options))


def v3_client(url: str, **options: Any) -> OpenMeterV3:
    """The production v3 client on its own HTTP core; `url` is the v3 base."""
    return OpenMeterV3(OpenMeterHttp(url, API_KEY, **options))


class FakeClock:
    """The server's only source of "now"; tests move it instead of sleeping."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._now += timedelta(**delta)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No developer's environment or `.env` leaks into a test."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


APIS = ("v1", "v3")
# A module (or test) marked with this runs against the stand-in of each OpenMeter API: the server is pointed at its
# base URL (the v3 base ends in /api/v3, so the settings pick v3 from the URL as an operator's would).
on_both_apis = pytest.mark.parametrize("api", APIS, indirect=True)


@pytest.fixture
def api(request: pytest.FixtureRequest) -> str:
    """The OpenMeter API the stand-in serves: v1 unless the test is marked `on_both_apis`."""
    return str(getattr(request, "param", "v1"))


@pytest.fixture
def openmeter(request: pytest.FixtureRequest, api: str) -> Iterator[OpenMeterStandIn]:
    fake = OpenMeterStandIn(api_key=API_KEY, api=api)
    fake.add_meter(dict(AI_CREDITS_METER))
    yield fake
    assert_requests_conform(request, fake)


def assert_requests_conform(request: pytest.FixtureRequest, fake: OpenMeterStandIn) -> None:
    """The contract: every request the stand-in received (from the server, or from our OpenMeter clients) must be one
    the spec of the API it speaks accepts (v3: upstream's and Konnect's), so a shape a real gateway would refuse
    fails here, not on a customer's Konnect."""
    if request.node.get_closest_marker("sends_invalid_requests") is None:
        refused = sent_problems(fake.api, fake.requests)
        assert not refused, "requests a spec refuses:\n" + "\n".join(refused[:10])


@pytest.fixture
def openmeter_url(openmeter: OpenMeterStandIn) -> Iterator[str]:
    with serve_in_thread(openmeter.app) as url:
        yield url + openmeter.base_path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


class ServerStarter:
    """Starts the real app against the stand-in; keyword arguments override settings. `apps` maps URL -> app."""

    def __init__(self, stack: contextlib.ExitStack, openmeter_url: str, clock: FakeClock) -> None:
        self._stack, self._openmeter_url, self._clock = stack, openmeter_url, clock
        self.apps: dict[str, Starlette] = {}

    def __call__(self, *, retry: RetryPolicy = FAST_RETRY, **overrides: Any) -> str:
        values: dict[str, Any] = {"openmeter_api_key": API_KEY, "openmeter_url": self._openmeter_url, **overrides}
        settings: Settings = load_settings(_env_file=None, **values)
        app = create_app(settings, clock=self._clock, retry=retry)
        url = self._stack.enter_context(serve_in_thread(app))
        self.apps[url] = app
        return url


@pytest.fixture
def start_server(openmeter_url: str, clock: FakeClock) -> Iterator[ServerStarter]:
    with contextlib.ExitStack() as stack:
        yield ServerStarter(stack, openmeter_url, clock)


@pytest.fixture
def server_url(start_server: ServerStarter) -> str:
    return start_server()


async def call_tool(
    url: str,
    tool: str,
    arguments: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | httpx2.Headers | None = None,
    mode: str = "auto",
) -> CallToolResult:
    """One tool call as TAIS makes it: a fresh MCP connection carrying the caller's headers."""
    async with (
        httpx2.AsyncClient(headers=ADMIN if headers is None else headers, timeout=CLIENT_TIMEOUT) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        return await client.call_tool(tool, arguments or {})


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def download_bytes(url: str, text: str) -> bytes:
    """Fetch the workbook an answer links to, from the server at `url` (the link names PUBLIC_BASE_URL's host)."""
    match = re.search(r"\]\(http://localhost:8765(/download/[\w-]+)\)", text)
    assert match, text
    response = httpx2.get(url + match.group(1))
    assert response.status_code == 200
    return response.content


def raw_initialize(url: str, headers: dict[str, str]) -> int:
    """The HTTP status of a bare `initialize` POST to `/mcp` with these headers (for the gates in front of MCP)."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    return httpx2.post(
        f"{url}/mcp", json=body, headers={"Accept": "application/json, text/event-stream", **headers}
    ).status_code


class CollectingSink(TableSink):
    """A sink that also keeps every row it was given, in order."""

    def __init__(self) -> None:
        super().__init__(EVENT_COLUMNS)
        self.rows: list[tuple[Any, ...]] = []

    async def add(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows.extend(rows)
        await super().add(rows)


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A temporary directory with a short path. A forkserver started with TMPDIR here puts its AF_UNIX socket in
    it, and a socket path may not exceed 107 bytes: pytest's tmp_path under xdist can come close (CI hit it)."""
    directory = Path(tempfile.mkdtemp(prefix="aic-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def standin_url(fake: OpenMeterStandIn) -> Iterator[str]:
    """The stand-in a contract-test module builds (its own `fake` fixture), served over HTTP once per module."""
    with serve_in_thread(fake.app) as url:
        yield url


@contextlib.contextmanager
def standin_client(fake: OpenMeterStandIn, url: str) -> Iterator[httpx2.Client]:
    """A client with the stand-in's key, against the stand-in emptied for this test (its server is shared)."""
    fake.reset()
    with httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {fake.api_key}"}, timeout=5) as client:
        yield client
