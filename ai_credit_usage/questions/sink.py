"""The sink a question writes its rows into.

The sink sees every row once, in order: it keeps what the text and the Summary sheet need (the first rows, the count,
the total, the credits of the rows not shown, running sums per user, module, product and skill) and passes the rows
on (`_rows_out`); the answer side's `WorkbookSink` writes them into the workbook. The questions know only this class.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ai_credit_usage.questions.filters import DIMENSIONS

PREVIEW_ROWS = 50
TOP_ROWS = 5
Progress = Callable[[float, float | None, str], Awaitable[None]]
Top = tuple[str, float, float | None]  # a name, its credits, their share of the total (None when that is 0)


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
    ) -> None:
        self.preview_rows: list[tuple[Any, ...]] = []
        self.row_count = 0
        self._progress = progress or _no_progress
        self._progress_done = 0.0
        self._shown_sums: list[float] = []
        self._rest_sums: list[float] = []
        self._breakdowns: dict[str, dict[str, float]] = {}
        self.define(columns, amounts=amounts)

    def define(self, columns: Sequence[str], *, amounts: int = 1, total: int = -1, running_sums: bool = True) -> None:
        """`total`: the index of the column holding each row's credits (the last, except in a forecast's days).
        `running_sums`: keep per-dimension sums of the dimension columns as rows arrive; off when the question
        tallies every dimension itself (then a column is not counted a second time)."""
        if self.row_count:
            raise RuntimeError("the columns are fixed once rows have arrived")
        self.columns = tuple(columns)
        self.amounts = amounts
        self.total_index = total
        labels = self.columns[: len(self.columns) - amounts]
        self._breakdown_columns = (
            [(name, labels.index(name)) for name in DIMENSIONS if name in labels] if running_sums else []
        )

    @property
    def total_credits(self) -> float:
        return math.fsum([*self._shown_sums, *self._rest_sums])

    @property
    def rest_credits(self) -> float:
        """The credits of the rows the preview does not show (0 when it shows them all)."""
        return math.fsum(self._rest_sums)

    def tally(self, dimension: str, credits: Mapping[str, float]) -> None:
        """Credits per value of a dimension the rows do not carry as a column (the events' skill, a total's users)."""
        if any(name == dimension for name, _ in self._breakdown_columns):  # it would be counted twice
            raise RuntimeError(f"{dimension} is summed from its column already")
        sums = self._breakdowns.setdefault(dimension, {})
        for name, value in credits.items():
            sums[name] = sums.get(name, 0.0) + value

    def breakdown(self, dimension: str) -> dict[str, float] | None:
        """Every value of the dimension with its credits; None when this answer does not know the dimension."""
        return self._breakdowns.get(dimension)

    def tops(self, count: int = TOP_ROWS) -> dict[str, list[Top]]:
        """The top `count` of every dimension this answer knows, over all its rows, largest first (then by name):
        what the text, the structured result and the Summary sheet name."""
        total = self.total_credits
        return {
            dimension: [
                (name, credits, credits / total if total else None)
                for name, credits in heapq.nsmallest(count, sums.items(), key=lambda item: (-item[1], item[0]))
            ]
            for dimension in DIMENSIONS
            if (sums := self._breakdowns.get(dimension))
        }

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
        await self._rows_out(rows)

    async def _rows_out(self, rows: list[tuple[Any, ...]]) -> None:
        """Where the rows go once counted; here nowhere (a question's own tests), the workbook in `WorkbookSink`."""

    def close(self) -> None:
        """Release whatever holds the rows (after a failure, nothing half-written is kept)."""
