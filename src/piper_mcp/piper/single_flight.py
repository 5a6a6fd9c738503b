"""Single-flight: one run of a piece of work for every concurrent caller that wants it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Concurrent callers with the same key share one run of their work and its outcome."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[T]] = {}

    async def run(self, key: Hashable, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """The outcome of `work`, started now unless a run for `key` is under way."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        # shield: one caller giving up must not cancel the others' answer.
        return await asyncio.shield(task)
