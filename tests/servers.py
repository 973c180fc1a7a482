"""Run an ASGI app under a real uvicorn server in a background thread, for tests that need real HTTP.

Tests talk to the app over a real socket, so client code (timeouts, retries, connection handling) is exercised
exactly as in production. The server thread owns its own event loop, so plain synchronous tests and fixtures can use
it; the app must therefore be thread-safe with respect to state that tests read or mutate from the main thread.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx2
import pytest
import uvicorn

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["PromptServer", "ServerThread", "serve_in_thread"]
POLL_SECONDS = 0.005  # how often a stopping server looks whether its connections are gone


class PromptServer(uvicorn.Server):
    """uvicorn, stopping as soon as it is asked: uvicorn itself notices `should_exit` on a 0.1 s tick and then waits
    0.1 s more per check of open connections, which makes every test that starts servers pay about 0.2 s a server.
    Here the main loop wakes on the request itself, and shutdown polls finely; everything else is uvicorn's."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # on_tick keeps the Date header fresh and reads should_exit
            counter += 1
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)

    def request_exit(self) -> None:
        """Thread-safe: stop serving now."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_graceful_shutdown
        while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
            if loop.time() >= deadline:
                for task in self.server_state.tasks:
                    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
                break
            await asyncio.sleep(POLL_SECONDS)
        if not self.force_exit:
            await self.lifespan.shutdown()


class ServerThread:
    """A uvicorn server on 127.0.0.1 with an OS-assigned port, running in a daemon thread.

    Use as a context manager: entering starts the server and waits (bounded) until it accepts connections; ``url``
    is then ``http://127.0.0.1:<port>``. Exiting asks uvicorn to shut down and joins the thread.
    """

    def __init__(self, app: Any, *, startup_timeout: float = 10.0, shutdown_timeout: float = 10.0) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            # Long-lived requests (slow fakes, SSE streams) must not block test teardown forever.
            timeout_graceful_shutdown=1,
        )
        self.server = PromptServer(config)
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.url = ""
        self._thread = threading.Thread(target=self._run, name="uvicorn-test-server", daemon=True)
        self._finished = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # uvicorn may sys.exit() on bind errors; start() reports it
            self._error = exc
        finally:
            self._finished.set()

    def start(self) -> str:
        """Start the thread and block until uvicorn reports ``started``; return the base URL."""
        self._thread.start()
        for _ in range(int(self.startup_timeout / 0.01)):
            if self.server.started:
                port = self.server.servers[0].sockets[0].getsockname()[1]
                self.url = f"http://127.0.0.1:{port}"
                return self.url
            if self._finished.wait(0.01):  # doubles as the poll interval; returns early if the thread died
                raise RuntimeError(f"uvicorn exited during startup: {self._error!r}") from self._error
        self.stop()
        raise RuntimeError(f"uvicorn did not start within {self.startup_timeout} s")

    def stop(self) -> None:
        """Ask uvicorn to exit gracefully, then force it if it has not stopped in time."""
        self.server.request_exit()
        self._thread.join(self.shutdown_timeout)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(self.shutdown_timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` for the duration of the ``with`` block and yield its base URL."""
    with ServerThread(app) as url:
        yield url


def free_port() -> int:
    """A loopback port free right now, for a process the test starts, chosen below the kernel's ephemeral range
    (32768-60999 on Linux): a port that bind(0) handed out, once closed, can be handed to another test's server
    under xdist before the child binds it, and the test then talks to the wrong server."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port between 20000 and 32000")


def wait_for_health(port: int, proc: subprocess.Popen[str], *, timeout: float = 30) -> httpx2.Response:
    """`/health`'s first 200 on a loopback port served by `proc` (a main.py the test started); the test fails if
    the process exits or none comes within `timeout` seconds. Polling for a server to come up, not sleeping."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            response = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1)
            if response.status_code == 200:
                return response
        except httpx2.TransportError:
            time.sleep(0.05)  # not listening yet
    pytest.fail(f"no /health on port {port}; exit status {proc.poll()}")


class DemoProcess:
    """`main.py --demo` as an operator starts it, in `cwd`, on a free loopback port, with only `settings` of this
    project's environment variables: `port` answers /health inside the `with` block; `stderr` is its console
    afterwards."""

    def __init__(self, cwd: Path, **settings: str) -> None:
        self.port = free_port()
        self.stderr = ""
        own = ("OPENMETER_", "MCP_", "PUBLIC_", "TENANT_")
        env = {name: value for name, value in os.environ.items() if not name.startswith(own)}
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--demo"],
            env={**env, "MCP_PORT": str(self.port), **settings},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> DemoProcess:
        try:
            wait_for_health(self.port, self._process)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self._process.terminate()
        _, self.stderr = self._process.communicate(timeout=15)
