"""Where a workbook is written: in a thread for a small answer, in a child process for a big one.

`WorkbookWriter` takes the rows as they arrive. It buffers them, and once an answer grows past `process_rows` it
starts a `ProcessWorkbookWriter` and streams the rest to it while the pages are still arriving, so a large answer is
never held twice and its writing never stalls the event loop. Small answers are written in a thread at the end,
faster than a process starts and is fed.

Child processes are capped (`slots`, WORKBOOK_PROCESSES): an answer that outgrows `process_rows` while every slot is
taken waits for one, and its question stops paging meanwhile (at most `process_rows` rows are buffered). The wait
counts against the call's deadline, so a call that cannot get a slot in time ends with the usual "took longer"
sentence. Waiting rather than falling back to the thread writer is deliberate: the thread would hold the GIL for the
whole write (seconds per 100,000 rows, stalling every other request) and the whole answer in memory, exactly when
the server is busiest.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import anyio.to_thread

from ai_credit_usage.answers.workbook import Report, WorkbookBuilder, build_workbook
from ai_credit_usage.runtime.errors import UserFacingError

WORKBOOK_FAILED = "The Excel file for this answer could not be written; try again, or ask for a shorter window."
logger = logging.getLogger(__name__)
_CONTEXT = multiprocessing.get_context("forkserver")  # fork() in a threaded server is unsafe; spawn is slow
# Not "__main__": CPython 3.11-3.13 never pass its path to the forkserver (it asks for a key named "main_path"), so a
# child re-runs the main script's top level anyway; main.py keeps its imports inside main() for that reason.
_CONTEXT.set_forkserver_preload(["ai_credit_usage.answers.workbook_writer"])
Row = tuple[Any, ...]


class WorkbookWriter:
    """One answer's workbook: rows in order through `append`, then `finish` for the bytes; `close` in any case."""

    def __init__(
        self,
        columns: Sequence[str],
        *,
        amounts: int,
        process_rows: int,
        slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._columns = tuple(columns)
        self._amounts = amounts
        self._process_rows = process_rows
        self._slots = slots
        self._holds_slot = False
        self._buffer: list[Row] = []
        self._process: ProcessWorkbookWriter | None = None

    async def append(self, rows: list[Row]) -> None:
        if self._process is not None:
            await self._process.append(rows)
            return
        self._buffer.extend(rows)
        if len(self._buffer) >= self._process_rows:
            if self._slots is not None:
                if self._slots.available_tokens < 1:
                    logger.info(
                        "all %d workbook processes are busy: this answer waits for one", self._slots.total_tokens
                    )
                await self._slots.acquire_on_behalf_of(self)  # the call's deadline bounds the wait
                self._holds_slot = True
            try:
                self._process = await ProcessWorkbookWriter.start(self._columns, self._amounts)
            except BaseException:
                self._release()
                raise
            buffered, self._buffer = self._buffer, []
            await self._process.append(buffered)

    async def finish(self, report: Report) -> bytes:
        if self._process is not None:
            try:
                return await self._process.finish(report)  # which stops the child, in any case
            finally:
                self._process = None
                self._release()
        table = _Buffered(self._columns, self._buffer, self._amounts)
        # A deadline or cancel does not wait for the thread: it finishes (or fails) on its own and cleans up after
        # itself, and nothing else touches these rows.
        return await anyio.to_thread.run_sync(lambda: build_workbook(table, report=report), abandon_on_cancel=True)

    def close(self) -> None:
        """Release the workbook process, if any (after a failure, nothing half-written is kept)."""
        if self._process is not None:
            self._process.close()
            self._process = None
        self._release()
        self._buffer = []

    def _release(self) -> None:
        """Give the process slot back, once the child is gone."""
        if self._holds_slot and self._slots is not None:
            self._holds_slot = False
            self._slots.release_on_behalf_of(self)


@dataclass(frozen=True)
class _Buffered:
    columns: tuple[str, ...]
    rows: list[Row]
    amounts: int


class ProcessWorkbookWriter:
    """A `WorkbookBuilder` in a child process, fed rows over a pipe while the pages are still arriving.

    openpyxl holds the GIL for the whole write (about 4 s per 100,000 rows here), which in a thread would still stall
    the event loop and every other request; a process does not. Children fork from a forkserver that has already
    imported openpyxl, so starting one costs ~15 ms (the first, which starts the forkserver, about 1 s).

    The child keeps its temporary files in a directory of its own, which `close` deletes: a killed child cannot.
    Pipe operations run in a thread that a cancelled call abandons; that thread then still owns the pipe and closes
    it when it returns (killing the child makes it return at once), so `close` never closes a pipe in use.
    """

    def __init__(self, process: BaseProcess, connection: Connection, scratch: str) -> None:
        self._process = process
        self._connection = connection
        self._scratch = scratch
        self._lock = threading.Lock()
        self._in_use = False
        self._closed = threading.Event()  # set by close(), read by the pipe thread

    @classmethod
    async def start(cls, columns: Sequence[str], amounts: int = 1) -> ProcessWorkbookWriter:
        scratch = tempfile.mkdtemp(prefix="ai-credits-workbook-")
        parent, child = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=_serve_builder, args=(child, tuple(columns), amounts, scratch), daemon=True)
        writer = cls(process, parent, scratch)
        try:
            await anyio.to_thread.run_sync(process.start)
        except BaseException:
            writer.close()
            raise
        finally:
            child.close()
        return writer

    async def append(self, rows: list[tuple[Any, ...]]) -> None:
        # send() blocks while the child is busy writing: wait in a thread, never on the event loop.
        await self._use_pipe(lambda connection: connection.send(("rows", rows)))

    async def finish(self, report: Report) -> bytes:
        def finish_in_child(connection: Connection) -> tuple[str, Any]:
            connection.send(("finish", report))  # the Summary and About sheets are written in the child too
            answer: tuple[str, Any] = connection.recv()
            return answer

        try:
            status, payload = await self._use_pipe(finish_in_child)
        finally:
            self.close()
        if status != "ok" or not isinstance(payload, bytes):
            logger.warning("the workbook process failed: %s", payload)
            raise UserFacingError(WORKBOOK_FAILED)
        return payload

    def close(self) -> None:
        """Stop the child whatever state it is in (also after a failed or abandoned call) and delete its files."""
        with self._lock:  # closes happen under the lock: a second close of a reused fd would hit someone else's file
            self._closed.set()
            if not self._in_use:
                self._connection.close()
        if self._process.pid is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(timeout=5)
        shutil.rmtree(self._scratch, ignore_errors=True)

    async def _use_pipe(self, operation: Callable[[Connection], Any]) -> Any:
        try:
            return await anyio.to_thread.run_sync(self._in_thread, operation, abandon_on_cancel=True)
        except _ChildGone as gone:
            logger.warning("the workbook process is gone (exit code %s): %s", self._process.exitcode, gone)
            raise UserFacingError(WORKBOOK_FAILED) from gone

    def _in_thread(self, operation: Callable[[Connection], Any]) -> Any:
        with self._lock:
            if self._closed.is_set():
                raise _ChildGone("it was stopped")
            self._in_use = True
        try:
            return operation(self._connection)
        except (EOFError, OSError) as exc:  # killed (out of memory?), or it failed, said why and exited
            raise _ChildGone(f"{exc!r}; its last message: {_last_word(self._connection)}") from exc
        finally:
            with self._lock:
                self._in_use = False
                if self._closed.is_set():  # close() left the pipe to this thread
                    self._connection.close()


class _ChildGone(Exception):
    """The workbook process can no longer be talked to."""


def _last_word(connection: Connection) -> str:
    """The error a child sent before exiting, if it did (it is still in the pipe)."""
    with contextlib.suppress(Exception):
        if connection.poll():
            return str(connection.recv()[1])
    return "none"


def _serve_builder(connection: Connection, columns: tuple[str, ...], amounts: int, scratch: str) -> None:
    """The child's whole life: rows until "finish", then the bytes (or the error) back, then exit."""
    tempfile.tempdir = scratch  # openpyxl's per-sheet temporary files go where the parent can delete them
    builder = WorkbookBuilder(columns, amounts=amounts)
    try:
        while True:
            kind, payload = connection.recv()
            if kind == "rows":
                builder.append(payload)
            else:
                connection.send(("ok", builder.finish(payload)))
                return
    except EOFError:  # the parent gave up on this call
        return
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
