"""A result table, and the sink questions write their rows into.

The sink sees every row once, in order: it keeps what the text and the Summary sheet need (the first rows, the count,
the total, the credits of the rows not shown, running sums per user, module, product and skill) and hands the rows
on to a `WorkbookWriter`, which decides where the workbook is written.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ai_credit_usage.settings import DEFAULT_WORKBOOK_PROCESS_ROWS
from ai_credit_usage.workbook import Report
from ai_credit_usage.workbook_writer import WorkbookWriter

PREVIEW_ROWS = 50
BREAKDOWN_DIMENSIONS = ("user", "module", "product", "skill")
TOP_ROWS = 5
Progress = Callable[[float, float | None, str], Awaitable[None]]


@dataclass
class Table:
    """Column names and rows. The last `amounts` columns are credits (floats); the one at `total_index` (the very
    last, by default) is the row's total."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    amounts: int = 1
    total_index: int = -1

    @property
    def total_credits(self) -> float:
        return math.fsum(row[self.total_index] for row in self.rows)

    @property
    def rest_credits(self) -> float:
        return math.fsum(row[self.total_index] for row in self.rows[PREVIEW_ROWS:])

    @property
    def row_count(self) -> int:
        return len(self.rows)

    @property
    def preview_rows(self) -> list[tuple[Any, ...]]:
        return self.rows[:PREVIEW_ROWS]


async def _no_progress(done: float, total: float | None, message: str) -> None:
    return None


class TableSink:
    """`columns` may be left empty when only the question knows them (a trend's series); it then calls `define`."""

    def __init__(
        self,
        columns: Sequence[str] = (),
        *,
        amounts: int = 1,
        progress: Progress | None = None,
        process_rows: int = DEFAULT_WORKBOOK_PROCESS_ROWS,
        process_slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        self.preview_rows: list[tuple[Any, ...]] = []
        self.row_count = 0
        self._progress = progress or _no_progress
        self._progress_done = 0.0
        self._shown_sums: list[float] = []
        self._rest_sums: list[float] = []
        self._breakdowns: dict[str, dict[str, float]] = {}
        self._process_rows = process_rows
        self._process_slots = process_slots
        self._writer: WorkbookWriter | None = None
        self.define(columns, amounts=amounts)

    def define(self, columns: Sequence[str], *, amounts: int = 1, total: int = -1) -> None:
        """`total`: the index of the column holding each row's credits (the last, except in a forecast's days)."""
        if self.row_count:
            raise RuntimeError("the columns are fixed once rows have arrived")
        self.columns = tuple(columns)
        self.amounts = amounts
        self.total_index = total
        labels = self.columns[: len(self.columns) - amounts]
        self._breakdown_columns = [(name, labels.index(name)) for name in BREAKDOWN_DIMENSIONS if name in labels]

    @property
    def total_credits(self) -> float:
        return math.fsum([*self._shown_sums, *self._rest_sums])

    @property
    def rest_credits(self) -> float:
        """The credits of the rows the preview does not show (0 when it shows them all)."""
        return math.fsum(self._rest_sums)

    def tally(self, dimension: str, credits: Mapping[str, float]) -> None:
        """Credits per value of a dimension the rows do not carry as a column (the events' skill, a total's users)."""
        sums = self._breakdowns.setdefault(dimension, {})
        for name, value in credits.items():
            sums[name] = sums.get(name, 0.0) + value

    def breakdown(self, dimension: str) -> dict[str, float] | None:
        """Every value of the dimension with its credits; None when this answer does not know the dimension."""
        return self._breakdowns.get(dimension)

    def top(self, dimension: str, count: int = TOP_ROWS) -> list[tuple[str, float]]:
        sums = self._breakdowns.get(dimension) or {}
        return sorted(sums.items(), key=lambda item: (-item[1], item[0]))[:count]

    async def progress(self, message: str, done: float | None = None, total: float | None = None) -> None:
        """Tell the client how far along the call is; MCP wants the value to grow, so it never goes back."""
        done = self._progress_done + 1 if done is None or done <= self._progress_done else done
        self._progress_done = done
        await self._progress(done, max(total, done) if total is not None else None, message)

    async def add(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows in their final order (the caller sorts); may be called any number of times."""
        if not rows:
            return
        room = max(0, PREVIEW_ROWS - len(self.preview_rows))
        if room:
            self.preview_rows.extend(rows[:room])
            self._shown_sums.append(math.fsum(row[self.total_index] for row in rows[:room]))
        if len(rows) > room:
            self._rest_sums.append(math.fsum(row[self.total_index] for row in rows[room:]))
        self.row_count += len(rows)
        # Running sums for the Summary sheet's top 5s: cheap, and the rows need not be kept for them.
        for dimension, index in self._breakdown_columns:
            sums = self._breakdowns.setdefault(dimension, {})
            for row in rows:
                sums[row[index]] = sums.get(row[index], 0.0) + row[self.total_index]
        await self._workbook().append(rows)

    async def workbook(self, report: Report) -> bytes:
        return await self._workbook().finish(report)

    def close(self) -> None:
        """Release the workbook's writer (after a failure, nothing half-written is kept)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _workbook(self) -> WorkbookWriter:
        """The writer, created with the first row (or at the end): by then the columns are final."""
        if self._writer is None:
            self._writer = WorkbookWriter(
                self.columns, amounts=self.amounts, process_rows=self._process_rows, slots=self._process_slots
            )
        return self._writer
