"""Benchmark `get_credit_events` on a big tenant: our server against the straightforward way, side by side.

    uv run python scripts/bench.py                       # N = 20,000 events for the tenant (quick, a few minutes)
    uv run python scripts/bench.py --events 100000       # the issue's target size (the baseline alone takes ~20 min)
    uv run python scripts/bench.py --events 1000000 --skip-baseline

Everything runs on loopback, in separate processes, so each one's memory is its own:
- a stand-in OpenMeter (`OpenMeterStandIn`) answering after `--delay` seconds per request, holding N events for one
  tenant among `--tenants` tenants of equal size (so 20 x N events in all);
- our server (`main.py`), asked through the real MCP client;
- the baseline: a minimal Starlette app that does it the straightforward way on its event loop: one sequential cursor
  over all events, a list, an openpyxl default-mode workbook.
While each call runs, `/health` is polled every 20 ms. Peak RSS is sampled over the server's whole process tree
(our workbook child included) every 50 ms, with the workbook child's CPU; our fetch/finish split comes from the
"writing" progress message. Our server starts in an empty directory without any of its settings from this shell
(no `.env`, no OPENMETER_*, no OTEL_*). Figures, ratios and the issue's targets are printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_KEY = "bench-key"
TENANT = "tenant-00"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_DAYS = 28


# ---- the processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_standin(port: int, events_per_tenant: int, tenants: int, delay: float) -> None:
    """The stand-in process: N events per tenant spread over SPAN_DAYS, a request counter, then uvicorn."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event

    standin = OpenMeterStandIn(api_key=API_KEY, record_requests=False)
    standin.latency = delay
    rng = random.Random(1)
    span = SPAN_DAYS * 86400
    for index in range(tenants):
        tenant = f"tenant-{index:02d}"
        standin.ingest(
            *[
                make_event(
                    tenant=tenant,
                    credits=round(rng.uniform(0.01, 5), 4),
                    user=f"{tenant}-user-{rng.randint(1, 12)}",
                    time=EPOCH + timedelta(seconds=rng.randrange(span)),
                    module=rng.choice(("chat", "search")),
                )
                for _ in range(events_per_tenant)
            ]
        )
    counts = {"event_pages": 0, "queries": 0}

    async def stats(request: Any) -> JSONResponse:
        return JSONResponse(counts)

    inner = Starlette(routes=[Route("/_bench/stats", stats), Mount("/", app=standin.app)])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/api/v2/events":
                counts["event_pages"] += 1
            elif scope["path"].endswith("/query"):
                counts["queries"] += 1
        await inner(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def serve_baseline(port: int, openmeter_url: str) -> None:
    """The straightforward server: everything sequential, in memory, and on the event loop."""
    import uvicorn
    from openpyxl import Workbook
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def events(request: Any) -> JSONResponse:
        started = time.perf_counter()
        window = {"$and": [{"$gte": request.query_params["from"]}, {"$lt": request.query_params["to"]}]}
        params = {"limit": "100", "filter": json.dumps({"type": {"$eq": "ai_credits"}, "time": window})}
        rows, pages = [], 0
        async with httpx2.AsyncClient(
            base_url=openmeter_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
        ) as http:
            while True:
                body = (await http.get("/api/v2/events", params=params)).json()
                pages += 1
                for item in body["items"]:
                    event, data = item["event"], item["event"]["data"]
                    if data["tenant"] == TENANT:
                        when = datetime.fromisoformat(event["time"]).replace(tzinfo=None)
                        rows.append(
                            (when, data["user"], data["module"], data["product"], TENANT, float(data["credits"]))
                        )
                if not body.get("nextCursor"):
                    break
                params["cursor"] = body["nextCursor"]
        fetched = time.perf_counter()
        workbook = Workbook()
        sheet = workbook.active
        sheet.append(["time", "user", "module", "product", "tenant", "credits"])
        for row in rows:
            sheet.append(row)
        buffer = io.BytesIO()
        workbook.save(buffer)
        done = time.perf_counter()
        return JSONResponse(
            {
                "rows": len(rows),
                "pages": pages,
                "bytes": buffer.tell(),
                "fetch_s": fetched - started,
                "workbook_s": done - fetched,
            }
        )

    app = Starlette(routes=[Route("/health", health), Route("/events", events)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_python(code: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until_up(url: str, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=2, headers={"Authorization": f"Bearer {API_KEY}"}).status_code < 500:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


# ---- measuring --------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> dict[int, tuple[int, float, float]]:
    """A process and all its descendants: pid -> (depth below `pid`, RSS in MB, CPU seconds so far)."""
    parents: dict[int, int] = {}
    usage: dict[int, tuple[float, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        usage[int(entry.name)] = (int(statm[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, cpu)
    tree, frontier = {pid: 0}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, of in parents.items():
            if of == parent and child not in tree:
                tree[child] = tree[parent] + 1
                frontier.append(child)
    return {member: (depth, *usage[member]) for member, depth in tree.items() if member in usage}


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (our workbook child lives under a forkserver)."""
    return sum(rss for _, rss, _ in process_tree(pid).values())


async def watch(base_url: str, pid: int, stop: asyncio.Event) -> tuple[list[float], float, float]:
    """Poll /health every 20 ms and the process tree's RSS every 50 ms until `stop`.

    Also returns the CPU seconds of the processes two levels down (our workbook children, under the forkserver),
    as last seen alive: at most 50 ms short each.
    """
    latencies: list[float] = []
    peak = 0.0
    grandchildren_cpu: dict[int, float] = {}

    async def health() -> None:
        async with httpx2.AsyncClient(timeout=30) as http:
            while not stop.is_set():
                started = time.perf_counter()
                await http.get(f"{base_url}/health")
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)

    async def memory() -> None:
        nonlocal peak
        while not stop.is_set():
            tree = await asyncio.to_thread(process_tree, pid)
            peak = max(peak, sum(rss for _, rss, _ in tree.values()))
            grandchildren_cpu.update({member: cpu for member, (depth, _, cpu) in tree.items() if depth == 2})
            await asyncio.sleep(0.05)

    await asyncio.gather(health(), memory())
    return latencies, peak, sum(grandchildren_cpu.values())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))] if ordered else float("nan")


async def measure(base_url: str, pid: int, call: Any, standin_pid: int) -> dict[str, Any]:
    before = tree_rss_mb(pid)
    cpu_before = cpu_seconds(pid), cpu_seconds(standin_pid)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(base_url, pid, stop))
    started = time.perf_counter()
    try:
        outcome = await call()
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        latencies, peak, workbook_cpu = await watcher
    cpu = {"server_cpu": cpu_seconds(pid) - cpu_before[0], "standin_cpu": cpu_seconds(standin_pid) - cpu_before[1]}
    if workbook_cpu:
        cpu["workbook_cpu"] = workbook_cpu
    return {"seconds": elapsed, "rss_before": before, "rss_peak": peak, "health": latencies, **cpu, **outcome}


async def call_ours(base_url: str, window: tuple[str, str]) -> dict[str, Any]:
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"X-Tenant-Name": TENANT, "X-User-UserRole": "admin"}
    writing_from: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("writing") and not writing_from:  # every page is in: only finish() is left
            writing_from.append(time.perf_counter())

    started = time.perf_counter()
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=3600)) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool(
            "get_credit_events", {"from_date": window[0], "to_date": window[1]}, progress_callback=on_progress
        )
    answered = time.perf_counter()
    text = result.content[0].text
    if result.is_error:
        raise RuntimeError(text)
    link = text.rsplit("(", 2)[-2].split(")")[0]
    path = link[link.index("/download/") :]
    async with httpx2.AsyncClient(timeout=60) as http:
        size = len((await http.get(base_url + path)).content)
    rows = int(text.split(" of ")[1].split(" rows")[0].replace(",", "")) if "Showing" in text else None
    split = {"fetch_s": writing_from[0] - started, "workbook_s": answered - writing_from[0]} if writing_from else {}
    return {"rows": rows, "bytes": size, **split}


async def call_baseline(base_url: str, window: tuple[str, str]) -> dict[str, Any]:
    """The same window as ours: from the first day's midnight to the midnight after the last day."""
    start = f"{window[0]}T00:00:00Z"
    end = f"{(datetime.fromisoformat(window[1]) + timedelta(days=1)).date().isoformat()}T00:00:00Z"
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=7200)) as http:
        response = await http.get(f"{base_url}/events", params={"from": start, "to": end})
    response.raise_for_status()
    return response.json()


def writer_ratio(rows: int) -> dict[str, float]:
    """Workbook writing (ours: write-only, styled, guarded) against the csv module on the same rows."""
    from ai_credit_usage.answers.workbook import Report, WorkbookBuilder
    from ai_credit_usage.questions.usage import EVENT_COLUMNS

    rng = random.Random(2)
    data = [
        (EPOCH + timedelta(seconds=i), f"user-{rng.randint(1, 12)}", "chat", "p1", TENANT, rng.uniform(0, 5))
        for i in range(rows)
    ]
    started = time.perf_counter()
    writer = csv.writer(io.StringIO())
    writer.writerow(EVENT_COLUMNS)
    writer.writerows(data)
    csv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    builder = WorkbookBuilder(EVENT_COLUMNS)
    builder.append(data)
    size = len(builder.finish(Report(about=(("tenant", TENANT),))))
    xlsx_seconds = time.perf_counter() - started
    return {"csv_s": csv_seconds, "xlsx_s": xlsx_seconds, "xlsx_bytes": size}


# ---- the run ------------------------------------------------------------------------------------------------------


def server_environment() -> dict[str, str]:
    """This environment without anything our server would read as configuration (or an OpenTelemetry exporter)."""
    from ai_credit_usage.runtime.settings import Settings

    ours = {name.upper() for name in Settings.model_fields}
    return {name: value for name, value in os.environ.items() if name not in ours and not name.startswith("OTEL_")}


async def run(args: argparse.Namespace) -> int:
    writing = writer_ratio(args.events)  # first: quick, and nothing else is running yet
    processes: list[subprocess.Popen] = []
    scratch = tempfile.mkdtemp(prefix="bench-")
    try:
        standin_port = free_port()
        standin = start_python(
            "from scripts.bench import serve_standin; "
            f"serve_standin({standin_port}, {args.events}, {args.tenants}, {args.delay})"
        )
        processes.append(standin)
        openmeter_url = f"http://127.0.0.1:{standin_port}"
        print(f"loading {args.tenants} x {args.events:,} events into the stand-in ...", flush=True)
        wait_until_up(f"{openmeter_url}/_bench/stats")
        window = (EPOCH.date().isoformat(), (EPOCH + timedelta(days=SPAN_DAYS - 1)).date().isoformat())

        async def pages() -> dict[str, int]:
            async with httpx2.AsyncClient() as http:
                return (await http.get(f"{openmeter_url}/_bench/stats")).json()

        results: dict[str, dict[str, Any]] = {}
        ours_port = free_port()
        ours = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py")],
            cwd=scratch,  # no .env is read from here
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={
                **server_environment(),
                "OPENMETER_API_KEY": API_KEY,
                "OPENMETER_URL": openmeter_url,
                "MCP_PORT": str(ours_port),
                "TOOL_DEADLINE_SECONDS": "3600",
                "WORKBOOK_PROCESS_ROWS": str(10**9 if args.workbook_in_thread else 20_000),
                "PYTHONPATH": str(ROOT),
            },
        )
        processes.append(ours)
        wait_until_up(f"http://127.0.0.1:{ours_port}/health")
        before = await pages()
        results["ours"] = await measure(
            f"http://127.0.0.1:{ours_port}",
            ours.pid,
            lambda: call_ours(f"http://127.0.0.1:{ours_port}", window),
            standin.pid,
        )
        after = await pages()
        results["ours"]["pages"] = after["event_pages"] - before["event_pages"]
        results["ours"]["queries"] = after["queries"] - before["queries"]

        if not args.skip_baseline:
            baseline_port = free_port()
            baseline = start_python(
                f"from scripts.bench import serve_baseline; serve_baseline({baseline_port}, {openmeter_url!r})"
            )
            processes.append(baseline)
            wait_until_up(f"http://127.0.0.1:{baseline_port}/health")
            results["baseline"] = await measure(
                f"http://127.0.0.1:{baseline_port}",
                baseline.pid,
                lambda: call_baseline(f"http://127.0.0.1:{baseline_port}", window),
                standin.pid,
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)

    report(args, results, writing)
    return 0


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], writing: dict[str, float]) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    print(f"\nget_credit_events for one tenant of {args.events:,} events among {args.tenants} tenants of equal size;")
    print(f"stand-in OpenMeter delay {args.delay * 1000:.0f} ms per request; {os.cpu_count()} cores ({cpu})\n")
    print(f"{'':34}{'ours':>14}{'baseline':>14}{'ratio':>10}")

    def line(label: str, key: str, fmt: str, better_low: bool = True) -> None:
        ours = results["ours"].get(key)
        base = results.get("baseline", {}).get(key)
        ratio = f"{base / ours:9.1f}x" if better_low and ours and base else ""
        print(
            f"{label:34}{format(ours, fmt) if ours is not None else '-':>14}"
            f"{format(base, fmt) if base is not None else '-':>14}{ratio:>10}"
        )

    for name in results:
        results[name]["rss_growth"] = results[name]["rss_peak"] - results[name]["rss_before"]
        results[name]["health_p50"] = statistics.median(results[name]["health"]) if results[name]["health"] else 0
        results[name]["health_p99"] = percentile(results[name]["health"], 0.99)
    line("end-to-end (s)", "seconds", ".1f")
    line("OpenMeter event pages fetched", "pages", ",d")
    line("rows", "rows", ",d", better_low=False)
    line("peak RSS growth (MB)", "rss_growth", ".0f")
    line("/health p50 (ms)", "health_p50", ".1f")
    line("/health p99 (ms)", "health_p99", ".1f")
    line("workbook bytes", "bytes", ",d", better_low=False)
    line("server CPU during the call (s)", "server_cpu", ".1f")
    line("stand-in CPU during the call (s)", "standin_cpu", ".1f")
    line("workbook process CPU (s)", "workbook_cpu", ".1f")
    split = {name: f"{r['fetch_s']:.1f} / {r['workbook_s']:.1f}" for name, r in results.items() if "fetch_s" in r}
    if split:
        print(f"{'fetch / workbook after it (s)':34}{split.get('ours', '-'):>14}{split.get('baseline', '-'):>14}")
        print(
            "  (ours: until the last page, the workbook being written alongside, then finishing it; the baseline: "
            "fetching, then the whole workbook)"
        )
    ratio = writing["xlsx_s"] / writing["csv_s"]
    print(
        f"\nworkbook writing, {args.events:,} rows: ours (openpyxl write-only) {writing['xlsx_s']:.2f} s, csv module "
        f"{writing['csv_s']:.2f} s: {ratio:.1f}x CSV"
    )

    ours = results["ours"]
    own_pages = args.events / 100
    checks = [
        (
            "pages <= 1.2 x own events / 100",
            ours["pages"] <= 1.2 * own_pages + 1,
            f"{ours['pages']} vs {own_pages:.0f}",
        ),
        (
            "peak RSS growth",
            ours["rss_growth"] <= (400 if args.events >= 1_000_000 else 150),
            f"{ours['rss_growth']:.0f} MB",
        ),
        ("/health p99 < 100 ms", ours["health_p99"] < 100, f"{ours['health_p99']:.1f} ms"),
        ("workbook writing <= 25x CSV", ratio <= 25, f"{ratio:.1f}x"),
    ]
    if "baseline" in results:
        speedup = results["baseline"]["seconds"] / ours["seconds"]
        checks.insert(0, ("end-to-end >= 5x faster than baseline", speedup >= 5, f"{speedup:.1f}x"))
    print("\ntargets (issue 6)")
    for name, ok, figure in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {name:42} {figure}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events of the measured tenant (default 20,000)")
    parser.add_argument("--tenants", type=int, default=20, help="tenants of that size (default 20)")
    parser.add_argument("--delay", type=float, default=0.05, help="stand-in delay per request, s (default 0.05)")
    parser.add_argument("--skip-baseline", action="store_true", help="measure only our server")
    parser.add_argument(
        "--workbook-in-thread", action="store_true", help="write our workbook in a thread instead of a process"
    )
    args = parser.parse_args()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
