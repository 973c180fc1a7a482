"""Round trips to OpenMeter per tool call, and our own time per call: a benchmark, not a test.

    uv run python scripts/round_trips.py                 # v1, 100 ms per OpenMeter request, 15 warm calls a tool
    uv run python scripts/round_trips.py --api v3        # once the v3 API and its stand-in are on this branch
    uv run python scripts/round_trips.py --latency 0.05 --calls 30

The stand-in OpenMeter answers every request after `--latency` seconds and records when each request was in flight.
Our server (built by `create_app`, exactly as main.py builds it) runs in this process on loopback; each call is a real
MCP client call with the TAIS headers. For each call:

- round trips = the time at least one OpenMeter request of the call was in flight (overlapping requests count once),
  over the latency: requests made at the same time cost one round trip, requests made one after another cost one each;
- ours = the call's duration inside our server (the audit line's `duration_ms`: gate, questions, workbook, download
  store) less the time OpenMeter was in flight.

"cold" is the first call of a server (the meter definition is read first); "warm" the later ones (median and max).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpcore2
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event  # noqa: E402
from ai_credit_usage.runtime.settings import Settings, load_settings  # noqa: E402
from server import create_app  # noqa: E402
from tests.servers import serve_in_thread  # noqa: E402

# One TLS context for all the clients this script makes (each would load the CA bundle: ~20 ms of CPU, in this
# process, beside the server being measured); the server's own OpenMeter client already keeps one.
httpcore2.default_ssl_context = functools.cache(httpcore2.default_ssl_context)  # type: ignore[assignment]
API_KEY = "round-trips-key"
TENANT = "acme"
NOW = datetime(2026, 1, 20, 12, tzinfo=UTC)
HEADERS = {"X-Tenant-Name": TENANT, "X-User-UserRole": "admin"}
ONE_DAY = {"from_date": "2026-01-19", "to_date": "2026-01-19"}
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("tenant total", "get_credit_usage_by_tenant", {}),
    ("summary", "get_credit_usage_summary", {}),
    ("trend", "get_credit_usage_trend", {}),
    ("trend by user", "get_credit_usage_trend", {"group_by": "user"}),
    ("events, one day", "get_credit_events", ONE_DAY),
    # Filtered: the filter rides in the same requests, so the same round trips as unfiltered (issue 21).
    ("total of one user", "get_credit_usage_by_tenant", {"user": f"{TENANT}-user-1"}),
    ("summary by module", "get_credit_usage_summary", {"group_by": ["module"], "user": f"{TENANT}-user-1"}),
    ("trend of one user", "get_credit_usage_trend", {"user": f"{TENANT}-user-1"}),
    ("events of one user", "get_credit_events", {**ONE_DAY, "user": f"{TENANT}-user-1"}),
    ("forecast of one user", "get_credit_forecast", {"user": f"{TENANT}-user-1"}),
    # A filter that matches nothing: one more request, for the closest existing values.
    ("total, no such user", "get_credit_usage_by_tenant", {"user": f"{TENANT}-user-9"}),
]


class InFlight:
    """An ASGI wrapper recording when each request was in flight (thread-safe: the stand-in has its own loop)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.spans: list[tuple[float, float]] = []
        self.thread: int | None = None  # the stand-in's own thread, whose CPU time is not ours
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.thread = threading.get_ident()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                self.spans.append((started, time.perf_counter()))

    def between(self, start: float, end: float) -> tuple[int, float]:
        """How many requests started in [start, end], and for how long at least one of them was in flight."""
        with self._lock:
            spans = sorted(span for span in self.spans if start <= span[0] <= end)
        covered, reach = 0.0, float("-inf")
        for begin, finish in spans:
            if begin > reach:
                covered += finish - begin
            elif finish > reach:
                covered += finish - reach
            reach = max(reach, finish)
        return len(spans), covered


class AuditDurations(logging.Handler):
    """The `duration_ms` of every audit line, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.durations: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.durations.append(json.loads(record.getMessage())["duration_ms"] / 1000)


@dataclass
class Figures:
    requests: list[int] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    ours_ms: list[float] = field(default_factory=list)
    ours_cpu_ms: list[float] = field(default_factory=list)


def thread_cpu(ident: int | None) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(ident)) if ident is not None else 0.0


def others_cpu(flights: InFlight) -> float:
    """CPU seconds of the threads that are not our server: the stand-in's and this one (the MCP client)."""
    return thread_cpu(flights.thread) + time.thread_time()


def standin_with_data(api: str = "v1") -> OpenMeterStandIn:
    """A week of usage for three tenants: about 60 events a day for ours (one events page a day)."""
    if api == "v1":
        standin = OpenMeterStandIn(api_key=API_KEY, record_requests=False)
    else:
        try:
            standin = OpenMeterStandIn(api_key=API_KEY, record_requests=False, api=api)  # type: ignore[call-arg]
        except TypeError:
            raise SystemExit(f"--api {api}: the stand-in on this branch serves only v1") from None
    events = []
    for tenant in (TENANT, "globex", "initech"):
        for hour in range(7 * 24):
            for minute in (5, 35, 50):
                if (hour + minute) % 5 == 0:
                    continue
                moment = NOW - timedelta(days=7) + timedelta(hours=hour, minutes=minute)
                user = f"{tenant}-user-{hour % 6}"
                events.append(make_event(tenant=tenant, credits=1 + hour % 4, time=moment, user=user))
    standin.ingest(*events)
    return standin


def settings_for(api: str, openmeter_url: str) -> Any:
    """Our settings for the stand-in at `openmeter_url` (for v3, its base path: /api/v3)."""
    overrides: dict[str, Any] = {"openmeter_api_key": API_KEY, "openmeter_url": openmeter_url}
    if "openmeter_api" in Settings.model_fields:
        overrides["openmeter_api"] = api
    return load_settings(_env_file=None, **overrides)


async def call(url: str, tool: str, arguments: dict[str, Any]) -> None:
    async with (
        httpx2.AsyncClient(headers=HEADERS, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise RuntimeError(f"{tool}: {result.content[0].text}")


async def measure(args: argparse.Namespace) -> dict[str, dict[str, Figures]]:
    standin = standin_with_data(args.api)
    standin.latency = args.latency
    flights = InFlight(standin.app)
    audit = AuditDurations()
    audit_logger = logging.getLogger("ai_credit_usage.audit")
    level, propagate = audit_logger.level, audit_logger.propagate
    audit_logger.addHandler(audit)
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
    try:
        return await _measure(args, standin, flights, audit)
    finally:
        audit_logger.removeHandler(audit)
        audit_logger.setLevel(level)
        audit_logger.propagate = propagate


async def _measure(
    args: argparse.Namespace, standin: OpenMeterStandIn, flights: InFlight, audit: AuditDurations
) -> dict[str, dict[str, Figures]]:
    results: dict[str, dict[str, Figures]] = {}
    with serve_in_thread(flights) as standin_url:
        openmeter_url = standin_url + getattr(standin, "base_path", "")
        for label, tool, arguments in CALLS:
            figures = results.setdefault(label, {"cold": Figures(), "warm": Figures()})
            # A new server per tool: its first call is cold (no meter definition yet), the others warm.
            app = create_app(settings_for(args.api, openmeter_url), clock=lambda: NOW)
            with serve_in_thread(app) as url:
                for index in range(args.calls + 1):
                    before = len(audit.durations)
                    cpu_before, others_before = time.process_time(), others_cpu(flights)
                    started = time.perf_counter()
                    await call(url, tool, arguments)
                    ended = time.perf_counter()
                    cpu = time.process_time() - cpu_before - (others_cpu(flights) - others_before)
                    requests, covered = flights.between(started, ended)
                    inside = audit.durations[before] if len(audit.durations) > before else ended - started
                    bucket = figures["cold" if index == 0 else "warm"]
                    bucket.requests.append(requests)
                    bucket.round_trips.append(covered / args.latency)
                    bucket.ours_ms.append(max(inside - covered, 0.0) * 1000)
                    bucket.ours_cpu_ms.append(cpu * 1000)
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, Figures]]) -> None:
    print(
        f"OpenMeter API {args.api}, stand-in latency {args.latency * 1000:.0f} ms a request, "
        f"{args.calls} warm calls a tool\n"
    )
    print(f"{'tool':20}{'':6}{'requests':>9}{'round trips':>13}{'max':>7}{'ours ms':>9}{'max':>7}{'ours CPU':>10}")
    for label, phases in results.items():
        for phase, figures in phases.items():
            print(
                f"{label if phase == 'cold' else '':20}{phase:6}"
                f"{statistics.median(figures.requests):9.1f}"
                f"{statistics.median(figures.round_trips):13.2f}{max(figures.round_trips):7.2f}"
                f"{statistics.median(figures.ours_ms):9.1f}{max(figures.ours_ms):7.1f}"
                f"{statistics.median(figures.ours_cpu_ms):10.1f}"
            )
    print(
        "\nours ms: our server's time less OpenMeter's (wall clock: other load on the machine shows in it); ours CPU:"
        "\nthe CPU time of this process less the stand-in's and the MCP client's threads, per call (includes the SDK)"
    )
    print(
        "\ntargets, warm, at the median: aggregates <= 1.5 round trips, one day of events <= 2.5, ours < 30 ms; a "
        "filter that matches nothing asks one more query, after the first (<= 2.5)"
    )
    for label, phases in results.items():
        warm = phases["warm"]
        limit = 2.5 if label.startswith("events") or "no such" in label else 1.5
        trips, ours = statistics.median(warm.round_trips), statistics.median(warm.ours_ms)
        cpu = statistics.median(warm.ours_cpu_ms)
        verdict = "PASS" if trips <= limit and (label.startswith("events") or ours < 30) else "MISS"
        print(f"  {verdict}  {label:20} {trips:.2f} round trips, {ours:.1f} ms ours ({cpu:.1f} ms CPU)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", choices=("v1", "v3"), default="v1", help="the OpenMeter API to speak (default v1)")
    parser.add_argument("--latency", type=float, default=0.1, help="stand-in latency per request, s (default 0.1)")
    parser.add_argument("--calls", type=int, default=15, help="warm calls per tool (default 15)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report(args, asyncio.run(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
