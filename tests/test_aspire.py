"""Start `main.py` the way Aspire's `AddPythonApp` does: the port in MCP_PORT, the API key and the OTLP variables in
the environment, and `/health` polled before anything else (Aspire's `WithHttpHealthCheck`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx2

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv") or "uv"


def test_main_serves_health_on_the_port_aspire_gives_it(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETER_", "MCP_", "PUBLIC_", "TENANT_"))}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "MCP_PORT": str(port),
        "OPENMETER_API_KEY": "om-aspire-parameter",
        # What Aspire hands every resource. Nothing listens there: the server must start, serve and stop regardless.
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "ai-credits-mcp",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",  # so the last flush to that dead end gives up within a second
    }
    # A scratch working directory, so a developer's own .env at the repository root plays no part.
    proc = subprocess.Popen(
        [UV, "run", "--quiet", "--project", str(ROOT), "python", str(ROOT / "main.py")],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        answer = None
        deadline = time.monotonic() + 30
        while answer is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                answer = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1)
            except httpx2.TransportError:
                time.sleep(0.05)  # not listening yet
        assert answer is not None, f"no /health on port {port}; exit status {proc.poll()}"
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM, as Aspire stops it
        try:
            output, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
    assert f"serving MCP on http://127.0.0.1:{port}/mcp" in output
    assert "OpenTelemetry: exporting traces, metrics and logs over OTLP (grpc) to http://127.0.0.1:1" in output
    assert "Traceback" not in output
    assert "om-aspire-parameter" not in output
