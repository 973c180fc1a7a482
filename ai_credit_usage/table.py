"""A result table, and the sink questions write their rows into.

The sink sees every row once, in order: it keeps what the text needs (the first rows, the count, the total) and hands
the rows on to the workbook. Small results are buffered and written in a thread at the end; once a result grows past
`PROCESS_WRITER_ROWS`, the rows stream into a workbook process while the pages are still arriving, so a large
answer is never held twice and its writing never stalls the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from ai_credit_usage.workbook import ProcessWorkbookWriter, WorkbookBuilder

PREVIEW_ROWS = 50
PROCESS_WRITER_ROWS = 20_000  # below this, a thread writes faster than a process starts and is fed
Progress = Callable[[float, float | None, str], Awaitable[None]]


@dataclass
class Table:
    """Column names and rows; `credits` is always the last column and a float."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def total_credits(self) -> float:
        return math.fsum(row[-1] for row in self.rows)

    @property
    def row_count(self) -> int:
        return len(self.rows)

    @property
    def preview_rows(self) -> list[tuple[Any, ...]]:
        return self.rows[:PREVIEW_ROWS]


async def _no_progress(done: float, total: float | None, message: str) -> None:
    return None


class TableSink:
    def __init__(
        self, columns: Sequence[str], *, progress: Progress | None = None, process_rows: int = PROCESS_WRITER_ROWS
    ) -> None:
        self.columns = tuple(columns)
        self.preview_rows: list[tuple[Any, ...]] = []
        self.row_count = 0
        self._progress = progress or _no_progress
        self._progress_done = 0.0
        self._sums: list[float] = []
        self._buffer: list[tuple[Any, ...]] = []
        self._process_rows = process_rows
        self._writer: ProcessWorkbookWriter | None = None

    @property
    def total_credits(self) -> float:
        return math.fsum(self._sums)

    async def progress(self, message: str, done: float | None = None, total: float | None = None) -> None:
        """Tell the client how far along the call is; MCP wants the value to grow, so it never goes back."""
        done = self._progress_done + 1 if done is None or done <= self._progress_done else done
        self._progress_done = done
        await self._progress(done, max(total, done) if total is not None else None, message)

    async def add(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows in their final order (the caller sorts); may be called any number of times."""
        if not rows:
            return
        if len(self.preview_rows) < PREVIEW_ROWS:
            self.preview_rows.extend(rows[: PREVIEW_ROWS - len(self.preview_rows)])
        self.row_count += len(rows)
        self._sums.append(math.fsum(row[-1] for row in rows))
        if self._writer is not None:
            await self._writer.append(rows)
            return
        self._buffer.extend(rows)
        if len(self._buffer) >= self._process_rows:
            self._writer = await ProcessWorkbookWriter.start(self.columns)
            buffered, self._buffer = self._buffer, []
            await self._writer.append(buffered)

    async def workbook(self, about: Sequence[tuple[str, Any]]) -> bytes:
        if self._writer is not None:
            return await self._writer.finish(about)

        def build() -> bytes:
            builder = WorkbookBuilder(self.columns)
            builder.append(self._buffer)
            return builder.finish(about)

        return await anyio.to_thread.run_sync(build)

    def close(self) -> None:
        """Release the workbook process, if any (after a failure, nothing half-written is kept)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._buffer = []
