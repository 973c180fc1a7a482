"""Soak: many concurrent MCP clients across several tenants against the real app and a faulty OpenMeter stand-in.

Loopback only, bounded in calls and in time. Prints what an on-call engineer asks: how many calls failed, whether any
answer or any downloaded workbook showed another tenant's rows (must be 0) or a wrong total, latency percentiles,
memory and download bytes.

    uv run python scripts/soak.py                      # 20 clients, 400 calls, 6 tenants
    uv run python scripts/soak.py --clients 50 --calls 1000 --fault-every 15 --latency 0.02

The server runs in this process (a uvicorn thread, exactly as `main.py` builds it), so peak RSS is that of the whole
soak process: server, stand-in and clients together.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import math
import random
import re
import resource
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openpyxl import load_workbook

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.runtime.settings import load_settings
from server import create_app
from tests.servers import serve_in_thread

TOOLS = ("get_credit_usage_by_tenant", "get_credit_usage_summary", "get_credit_events")
API_KEY = "soak-key"
# Links name PUBLIC_BASE_URL's host (unset here: localhost:8765); the soak fetches them from its own server.
DOWNLOAD_LINK = re.compile(r"\]\(http://localhost:\d+(/download/[\w-]+)\)")
STORE_SAMPLE_SECONDS = 0.25


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def seed(standin: OpenMeterStandIn, tenants: list[str], events_per_tenant: int, now: datetime) -> dict[str, float]:
    """Events over the last 6 days (inside the default 7-day window); returns each tenant's expected total."""
    rng = random.Random(7)
    totals: dict[str, float] = {}
    for tenant in tenants:
        events = [
            make_event(
                tenant=tenant,
                credits=round(rng.uniform(0.01, 20), 2),
                time=now - timedelta(seconds=rng.randint(60, 6 * 86400)),
                user=f"{tenant}-user-{rng.randint(1, 12)}",
                module=rng.choice(("chat", "search", "agents")),
            )
            for _ in range(events_per_tenant)
        ]
        standin.ingest(*events)
        totals[tenant] = math.fsum(event["data"]["credits"] for event in events)
    return totals


def arm_faults(standin: OpenMeterStandIn, every: int, count: int) -> None:
    """Every `every`-th OpenMeter request misbehaves, cycling through 503, 429, a cut connection and 502."""
    kinds = [
        {"status": 503},
        {"status": 429, "headers": {"Retry-After": "0.2"}},
        {"cut": True},
        {"status": 502},
    ]
    for index in range(count):
        standin.fail(after=every - 1, **kinds[index % len(kinds)])


async def one_call(url: str, tenant: str, tool: str) -> tuple[float, bool, str]:
    headers = {"X-Tenant-Name": tenant, "X-User-UserRole": "admin"}
    started = time.perf_counter()
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool(tool, {})
    text = "\n".join(block.text for block in result.content if block.type == "text")
    return time.perf_counter() - started, bool(result.is_error), text


def foreign_workbook_rows(content: bytes, tenant: str) -> int:
    """Rows of the workbook's Data sheet whose tenant column names another tenant (every table has one)."""
    workbook = load_workbook(io.BytesIO(content), read_only=True)
    try:
        rows = workbook["Data"].iter_rows(values_only=True)
        column = list(next(rows)).index("tenant")
        return sum(1 for row in rows if row[column] != tenant)
    finally:
        workbook.close()


async def check_workbooks(url: str, links: list[tuple[str, str]]) -> tuple[int, int, int]:
    """Download every linked workbook: (checked, not downloadable, rows of another tenant)."""
    checked = missing = foreign = 0
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30.0)) as http:
        for tenant, path in links:
            response = await http.get(url + path)
            if response.status_code != 200:
                missing += 1
                continue
            checked += 1
            foreign += await asyncio.to_thread(foreign_workbook_rows, response.content, tenant)
    return checked, missing, foreign


async def soak(args: argparse.Namespace) -> int:
    tenants = [f"tenant-{chr(ord('a') + i)}" for i in range(args.tenants)]
    now = datetime.now(UTC)
    standin = OpenMeterStandIn(api_key=API_KEY, record_requests=False, api=args.api)
    expected = seed(standin, tenants, args.events_per_tenant, now)
    standin.latency = args.latency
    arm_faults(standin, args.fault_every, count=10_000)

    with serve_in_thread(standin.app) as standin_url:
        openmeter_url = standin_url + standin.base_path  # the v3 base ends in /api/v3: the settings pick v3 from it
        settings = load_settings(
            _env_file=None, openmeter_api_key=API_KEY, openmeter_url=openmeter_url, download_store_url=None
        )
        app = create_app(settings)
        with serve_in_thread(app) as url:
            rss_before, _ = rss_mb()
            latencies: dict[str, list[float]] = {tool: [] for tool in TOOLS}
            outcomes: Counter[str] = Counter()
            cross_tenant = wrong_totals = 0
            links: list[tuple[str, str]] = []
            store = app.state.downloads
            store_peak = [0, 0]  # links, bytes: sampled while the clients run

            async def sample_store() -> None:
                while True:
                    store_peak[0] = max(store_peak[0], len(store))
                    store_peak[1] = max(store_peak[1], store.bytes_held)
                    await asyncio.sleep(STORE_SAMPLE_SECONDS)

            queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
            for index in range(args.calls):
                queue.put_nowait((tenants[index % len(tenants)], TOOLS[index % len(TOOLS)]))

            async def client_loop() -> None:
                nonlocal cross_tenant, wrong_totals
                while not queue.empty():
                    tenant, tool = queue.get_nowait()
                    try:
                        elapsed, is_error, text = await one_call(url, tenant, tool)
                    except Exception as exc:  # a transport failure is a result to count
                        outcomes[f"exception {type(exc).__name__}"] += 1
                        continue
                    latencies[tool].append(elapsed)
                    outcomes["error" if is_error else "ok"] += 1
                    if any(other in text for other in tenants if other != tenant):
                        cross_tenant += 1
                    if link := DOWNLOAD_LINK.search(text):
                        links.append((tenant, link.group(1)))
                    match = re.search(r"Total credits: ([\d,.]+)", text)
                    if match and not is_error and match.group(1) != f"{expected[tenant]:,.2f}":
                        wrong_totals += 1

            started = time.perf_counter()
            sampler = asyncio.create_task(sample_store())
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(client_loop() for _ in range(args.clients))), timeout=args.max_seconds
                )
                timed_out = False
            except TimeoutError:
                timed_out = True
            wall = time.perf_counter() - started
            sampler.cancel()
            rss_after, rss_peak = rss_mb()
            # Read now: leaving the `with` shuts the app down, and its shutdown empties the store.
            live_links, bytes_held = len(store), store.bytes_held
            store_peak = [max(store_peak[0], live_links), max(store_peak[1], bytes_held)]
            checked, missing, foreign_rows = await check_workbooks(url, links)

    made = sum(outcomes.values())
    print(
        f"soak: {args.clients} clients, {len(tenants)} tenants x {args.events_per_tenant} events, "
        f"OpenMeter latency {args.latency * 1000:.0f} ms, a fault every {args.fault_every} requests"
    )
    print(
        f"calls made        {made} of {args.calls} in {wall:.1f} s ({made / wall:.1f} calls/s)"
        + ("  [stopped at --max-seconds]" if timed_out else "")
    )
    print(f"calls failed      {made - outcomes['ok']} ({dict(outcomes)})")
    print(f"cross-tenant rows {cross_tenant} in answers, {foreign_rows} in workbooks   (must be 0)")
    print(f"workbooks         {checked} of {len(links)} linked downloaded and read, {missing} not downloadable")
    print(f"wrong totals      {wrong_totals}   (must be 0)")
    print("latency (s)       tool                          p50     p95     max")
    for tool, values in latencies.items():
        if values:
            values.sort()
            p95 = values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)]
            print(f"                  {tool:28} {statistics.median(values):6.3f}  {p95:6.3f}  {values[-1]:6.3f}")
    print(
        f"OpenMeter         {standin.max_in_flight} requests in flight at most "
        f"(limit {settings.openmeter_max_concurrency})"
    )
    print(
        f"RSS (MB)          before {rss_before:.0f}, after {rss_after:.0f}, peak {rss_peak:.0f} "
        f"(ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f})"
    )
    print(
        f"download store    {live_links} live links, {bytes_held / 1e6:.1f} MB at the end; peak {store_peak[0]} "
        f"links, {store_peak[1] / 1e6:.1f} MB (budget {settings.download_store_max_bytes / 1e6:.0f} MB)"
    )
    return 1 if cross_tenant or foreign_rows or missing or wrong_totals or timed_out else 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")  # before the SDK's own
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20, help="concurrent MCP clients (default 20)")
    parser.add_argument("--calls", type=int, default=400, help="tool calls in all (default 400)")
    parser.add_argument("--tenants", type=int, default=6, help="tenants, each with its own data (default 6)")
    parser.add_argument("--events-per-tenant", type=int, default=300, help="events per tenant (default 300)")
    parser.add_argument("--latency", type=float, default=0.01, help="seconds per OpenMeter answer (default 0.01)")
    parser.add_argument("--fault-every", type=int, default=20, help="every Nth OpenMeter request fails (default 20)")
    parser.add_argument("--max-seconds", type=float, default=300, help="stop after this long (default 300)")
    parser.add_argument("--api", choices=("v1", "v3"), default="v1", help="the OpenMeter API to speak (default v1)")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 500 and 1 <= args.calls <= 100_000 and args.fault_every >= 2):
        parser.error("keep it bounded: 1-500 clients, 1-100000 calls, --fault-every at least 2")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
