"""Run an ASGI app under a real uvicorn server in a background thread, for tests that need real HTTP.

Tests talk to the app over a real socket, so client code (timeouts, retries, connection handling) is exercised
exactly as in production. The server thread owns its own event loop, so plain synchronous tests and fixtures can use
it; the app must therefore be thread-safe with respect to state that tests read or mutate from the main thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["ServerThread", "serve_in_thread"]


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
        self.server = uvicorn.Server(config)
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
        self.server.should_exit = True
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
