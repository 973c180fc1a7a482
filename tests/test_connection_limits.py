"""Issue 16 F4: connections are bounded. uvicorn's `limit_concurrency` and `timeout_keep_alive` are settings that
main.py passes on (before, neither was set: any number of idle or slow connections were kept)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx2
import pytest

from ai_credit_usage.runtime.settings import ConfigError, load_settings
from tests.conftest import API_KEY
from tests.servers import DemoProcess


def test_the_limits_have_defaults_and_are_checked() -> None:
    settings = load_settings(_env_file=None, openmeter_api_key=API_KEY)
    assert (settings.mcp_limit_concurrency, settings.mcp_keep_alive_seconds) == (100, 5)
    with pytest.raises(ConfigError, match="MCP_LIMIT_CONCURRENCY='0' is not valid"):
        load_settings(_env_file=None, openmeter_api_key=API_KEY, mcp_limit_concurrency="0")
    with pytest.raises(ConfigError, match="MCP_KEEP_ALIVE_SECONDS='0' is not valid"):
        load_settings(_env_file=None, openmeter_api_key=API_KEY, mcp_keep_alive_seconds="0")


def test_main_refuses_connections_beyond_the_limit(tmp_path: Path) -> None:
    with DemoProcess(tmp_path, MCP_LIMIT_CONCURRENCY="3") as demo:
        with contextlib.ExitStack() as held:
            for _ in range(2):  # two idle connections, as a slow or idle client would hold them
                held.enter_context(socket.create_connection(("127.0.0.1", demo.port)))
            # uvicorn counts the connection asking too: with the limit at 3, this third one is refused.
            assert httpx2.get(f"http://127.0.0.1:{demo.port}/health", timeout=5).status_code == 503
        assert httpx2.get(f"http://127.0.0.1:{demo.port}/health", timeout=5).status_code == 200
    stderr = demo.stderr
    assert "Traceback" not in stderr
