"""Ask several things at once: the one way the questions run their OpenMeter requests in parallel.

Structured concurrency (an anyio task group), so the first failure cancels the rest instead of leaving them running,
and the error raised is the one the chat should read (a user-facing one first, see `errors.first_error`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import anyio

from ai_credit_usage.runtime.errors import first_error

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
Call = Callable[[], Awaitable[A]]


@overload
async def together(first: Call[A], second: Call[B], /) -> tuple[A, B]: ...
@overload
async def together(first: Call[A], second: Call[B], third: Call[C], /) -> tuple[A, B, C]: ...
@overload
async def together(first: Call[A], second: Call[B], third: Call[C], fourth: Call[D], /) -> tuple[A, B, C, D]: ...
async def together(*calls: Call[Any]) -> tuple[Any, ...]:
    """Every call at the same time, their results in order; the first failure (a user-facing one first) ends all."""
    results: list[Any] = [None] * len(calls)

    async def run(index: int) -> None:
        results[index] = await calls[index]()

    try:
        async with anyio.create_task_group() as tasks:
            for index in range(len(calls)):
                tasks.start_soon(run, index)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    return tuple(results)
