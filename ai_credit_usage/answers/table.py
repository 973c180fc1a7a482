"""A result table, and the sink that writes a question's rows into the workbook as they arrive."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ai_credit_usage.answers.workbook import Report
from ai_credit_usage.answers.workbook_writer import WorkbookWriter
from ai_credit_usage.questions.sink import PREVIEW_ROWS, Progress, TableSink
from ai_credit_usage.runtime.settings import DEFAULT_WORKBOOK_PROCESS_ROWS


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


class WorkbookSink(TableSink):
    """The sink of a tool call: every row also goes to a `WorkbookWriter`, which decides where the workbook is
    written (a thread, or a child process for big answers)."""

    def __init__(
        self,
        columns: Sequence[str] = (),
        *,
        amounts: int = 1,
        progress: Progress | None = None,
        process_rows: int = DEFAULT_WORKBOOK_PROCESS_ROWS,
        process_slots: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._process_rows = process_rows
        self._process_slots = process_slots
        self._writer: WorkbookWriter | None = None
        super().__init__(columns, amounts=amounts, progress=progress)

    async def _rows_out(self, rows: list[tuple[Any, ...]]) -> None:
        await self._workbook().append(rows)

    async def workbook(self, report: Report) -> bytes:
        return await self._workbook().finish(report)

    def close(self) -> None:
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
