"""Issue 16 F1: `/mcp` is closed by default off loopback. The host of PUBLIC_BASE_URL is a download host, not an MCP
host; a non-loopback bind needs MCP_AUTH_TOKEN (or JWT mode) unless MCP_ALLOW_UNAUTHENTICATED says the network is
private; downloads can have a listener of their own (DOWNLOAD_PORT) that serves nothing else."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest

from ai_credit_usage.openmeter.standin import OpenMeterStandIn, make_event
from ai_credit_usage.runtime.settings import ConfigError, load_settings
from tests.conftest import API_KEY, NOW, ServerStarter, call_tool, raw_initialize, text_of
from tests.servers import free_port, serve_in_thread, wait_for_health

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv") or "uv"
PUBLIC = "https://ai-credits.example.com"
GLOBEX_ADMIN = {"X-Tenant-Name": "globex", "X-User-UserRole": "admin"}


@pytest.fixture
def globex(openmeter: OpenMeterStandIn) -> None:
    openmeter.ingest(make_event(tenant="globex", credits=371, time=NOW - timedelta(hours=1), user="globex-user"))


async def answer_or_none(url: str, headers: dict[str, str]) -> str | None:
    """The answer's text, or None when the call did not get through."""
    try:
        return text_of(await call_tool(url, "get_credit_usage_by_tenant", headers=headers))
    except Exception:
        return None


async def test_the_download_host_does_not_reach_mcp(
    start_server: ServerStarter, openmeter: OpenMeterStandIn, globex: None
) -> None:
    """The F1 reproduction: anyone handed a download link sent `Host: ai-credits.example.com` with a tenant and the
    admin role of their choosing, and got that tenant's rows. Now the Host check answers 421 before MCP."""
    url = start_server(public_base_url=PUBLIC)
    headers = {"Host": "ai-credits.example.com", **GLOBEX_ADMIN}
    assert await answer_or_none(url, headers) is None  # the SDK client raises on the 421
    assert raw_initialize(url, {"Host": "ai-credits.example.com"}) == 421
    assert raw_initialize(url, {"Host": "ai-credits.example.com:443"}) == 421
    assert openmeter.requests_to("/query") == []  # refused before MCP: OpenMeter was never asked

    # The same host still serves what it is for: the links the answers carry.
    result = await call_tool(url, "get_credit_usage_by_tenant", headers=GLOBEX_ADMIN)  # TAIS, on loopback
    link = re.search(r"\]\(https://ai-credits\.example\.com(/download/[\w-]+)\)", text_of(result))
    assert link, text_of(result)
    assert httpx2.get(url + link.group(1), headers={"Host": "ai-credits.example.com"}).status_code == 200


async def test_an_operator_may_list_the_download_host_for_mcp(start_server: ServerStarter, globex: None) -> None:
    url = start_server(public_base_url=PUBLIC, mcp_allowed_hosts="ai-credits.example.com")
    result = await call_tool(
        url, "get_credit_usage_by_tenant", headers={"Host": "ai-credits.example.com", **GLOBEX_ADMIN}
    )
    assert "| globex | 371.00 |" in text_of(result)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "ai-credits.internal"])
def test_a_public_bind_without_a_token_stops_start_up(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, openmeter_api_key=API_KEY, mcp_host=host)
    message = str(caught.value)
    assert message.startswith("MCP_AUTH_TOKEN is not set")
    assert "MCP_ALLOW_UNAUTHENTICATED" in message and host in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"mcp_auth_token": "tais-shared-secret"}, id="token"),
        pytest.param({"mcp_allow_unauthenticated": True}, id="private-network"),
        pytest.param(
            {
                "mcp_jwt_jwks_url": "https://login.example.com/jwks",
                "mcp_jwt_issuer": "https://login.example.com",
                "mcp_jwt_audience": "ai-credits-mcp",
            },
            id="jwt",
        ),
    ],
)
def test_a_public_bind_starts_with_a_guard_or_an_explicit_waiver(extra: dict[str, object]) -> None:
    settings = load_settings(_env_file=None, openmeter_api_key=API_KEY, mcp_host="0.0.0.0", **extra)
    assert not settings.binds_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    assert load_settings(_env_file=None, openmeter_api_key=API_KEY, mcp_host=host).binds_loopback


def test_main_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETER_", "MCP_", "PUBLIC_", "DOWNLOAD_"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py")],
        env={**clean, "OPENMETER_API_KEY": API_KEY, "MCP_HOST": "0.0.0.0"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ai-credits-mcp: MCP_AUTH_TOKEN is not set"), result.stderr
    assert "Traceback" not in result.stderr and API_KEY not in result.stderr


async def test_the_download_listener_serves_downloads_and_health_only(
    start_server: ServerStarter, globex: None
) -> None:
    url = start_server(public_base_url=PUBLIC, download_port=8766)
    app = start_server.apps[url]
    with serve_in_thread(app.state.download_app) as downloads_url:
        result = await call_tool(url, "get_credit_usage_by_tenant", headers=GLOBEX_ADMIN)
        link = re.search(r"\]\(https://ai-credits\.example\.com(/download/[\w-]+)\)", text_of(result))
        assert link, text_of(result)
        served = httpx2.get(downloads_url + link.group(1))
        assert served.status_code == 200 and served.content.startswith(b"PK")
        assert httpx2.get(f"{downloads_url}/health").json() == {"status": "ok"}
        assert httpx2.get(f"{downloads_url}/download/unknown-token").status_code == 404
        assert raw_initialize(downloads_url, {}) == 404
        assert raw_initialize(downloads_url, GLOBEX_ADMIN) == 404
        assert httpx2.get(f"{downloads_url}/.well-known/oauth-protected-resource").status_code == 404


@pytest.fixture
def demo_main(tmp_path: Path) -> Iterator[tuple[int, int, subprocess.Popen[str]]]:
    """`main.py --demo` bound to all interfaces with the waiver, and a download listener of its own."""
    mcp_port, download_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENMETER_", "MCP_", "PUBLIC_", "DOWNLOAD_"))}
    env = {
        **clean,
        "PYTHONPATH": str(ROOT),
        "MCP_HOST": "0.0.0.0",
        "MCP_PORT": str(mcp_port),
        "MCP_ALLOW_UNAUTHENTICATED": "true",
        "DOWNLOAD_PORT": str(download_port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{download_port}",
    }
    proc = subprocess.Popen(
        [UV, "run", "--quiet", "--project", str(ROOT), "python", str(ROOT / "main.py"), "--demo"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield mcp_port, download_port, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)


async def test_main_runs_a_download_listener_without_mcp(demo_main: tuple[int, int, subprocess.Popen[str]]) -> None:
    mcp_port, download_port, proc = demo_main
    wait_for_health(mcp_port, proc)
    wait_for_health(download_port, proc)
    mcp_url, download_url = f"http://127.0.0.1:{mcp_port}", f"http://127.0.0.1:{download_port}"
    result = await call_tool(mcp_url, "get_credit_usage_by_tenant", headers={"X-Tenant-Name": "demo", **ADMIN_ROLE})
    link = re.search(rf"\]\({re.escape(download_url)}(/download/[\w-]+)\)", text_of(result))
    assert link, text_of(result)
    assert httpx2.get(download_url + link.group(1)).status_code == 200
    assert raw_initialize(download_url, {"X-Tenant-Name": "demo", **ADMIN_ROLE}) == 404
    os.killpg(proc.pid, signal.SIGTERM)
    output, _ = proc.communicate(timeout=15)
    assert "MCP_ALLOW_UNAUTHENTICATED" in output and "WARNING" in output
    assert f"downloads only on http://0.0.0.0:{download_port}" in output
    assert "Traceback" not in output


ADMIN_ROLE = {"X-User-UserRole": "admin"}


def documented_settings(page: str) -> list[dict[str, str]]:
    """The `VARIABLE=value` lines of each bash block of a docs page, as an operator would copy them."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / page).read_text(), flags=re.DOTALL)
    found = []
    for block in blocks:
        pairs = re.findall(r"^([A-Z][A-Z0-9_]+)=(.+?)(?:\s{2,}#.*)?$", block, flags=re.MULTILINE)
        if pairs:
            found.append({name.lower(): value.strip() for name, value in pairs})
    return found


@pytest.mark.parametrize("page", ["replicas.md", "deployment.md"])
def test_the_documented_deployments_are_closed(page: str) -> None:
    """Copied as written, every example starts with a guarded /mcp that the public download host cannot reach, and
    without its token it would not start at all."""
    examples = documented_settings(page)
    assert examples, page
    for example in examples:
        settings = load_settings(_env_file=None, openmeter_api_key=API_KEY, **example)
        assert settings.mcp_auth_token is not None or settings.jwt_mode, example
        public = settings.public_base_url
        if public is not None:
            host = public.split("://", 1)[1]
            assert host not in settings.extra_allowed_hosts, example
        if not settings.binds_loopback and "mcp_auth_token" in example:
            without = {k: v for k, v in example.items() if k != "mcp_auth_token"}
            with pytest.raises(ConfigError, match="MCP_AUTH_TOKEN is not set"):
                load_settings(_env_file=None, openmeter_api_key=API_KEY, **without)
