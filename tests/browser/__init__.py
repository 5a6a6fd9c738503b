"""Tests that drive a real Chromium, and what they share: async work beside the browser."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

from playwright.sync_api import Page

T = TypeVar("T")


class Screenshot(Protocol):
    """The `screenshot` fixture: `screenshot(page, name)` saves a PNG (the whole page, or
    with `full_page=False` what the window shows); its path."""

    def __call__(self, page: Page, name: str, *, full_page: bool = True) -> Path: ...


def in_a_thread(main: Callable[[], Coroutine[Any, Any, T]]) -> Future[T]:
    """Run `main()` on an asyncio loop of its own in another thread; its result, later.

    Playwright's sync API keeps the test thread's asyncio loop marked as running
    (`asyncio.run` there refuses), so an async MCP client runs beside it instead.
    """
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(asyncio.run(main()))
        except BaseException as error:
            done.set_exception(error)

    # A daemon: a test that fails while the call still waits does not hold up pytest's exit.
    threading.Thread(target=run, name="async beside the browser", daemon=True).start()
    return done
