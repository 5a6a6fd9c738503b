"""Single-flight: concurrent callers with one key share one run and its outcome."""

from __future__ import annotations

import anyio
import pytest

from piper_mcp.piper.single_flight import SingleFlight

pytestmark = pytest.mark.anyio


class Work:
    def __init__(self) -> None:
        self.runs = 0
        self.release = anyio.Event()

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        return f"answer-{self.runs}"


async def test_concurrent_callers_share_one_run_and_a_later_caller_starts_another() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work, seen = Work(), []

    async def ask() -> None:
        seen.append(await flight.run("key", work))

    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(ask)
        await anyio.wait_all_tasks_blocked()
        work.release.set()
    assert (seen, work.runs) == (["answer-1"] * 10, 1)
    assert await flight.run("key", work) == "answer-2"


async def test_keys_are_kept_apart() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.release.set()
    async with anyio.create_task_group() as group:
        group.start_soon(flight.run, "a", work)
        group.start_soon(flight.run, "b", work)
    assert work.runs == 2


async def test_one_caller_giving_up_does_not_cancel_the_others() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work, seen = Work(), []

    async def ask() -> None:
        seen.append(await flight.run("key", work))

    async with anyio.create_task_group() as group:
        group.start_soon(ask)
        async with anyio.create_task_group() as impatient:
            impatient.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            impatient.cancel_scope.cancel()
        work.release.set()
    assert (seen, work.runs) == (["answer-1"], 1)


async def test_a_failure_reaches_every_caller() -> None:
    flight: SingleFlight[str] = SingleFlight()

    async def fail() -> str:
        raise ValueError("Piper said no")

    with pytest.raises(ValueError, match="Piper said no"):
        await flight.run("key", fail)
