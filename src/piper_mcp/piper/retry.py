"""When to try a Piper call again, how long to wait first, and when to stop altogether.

Connect errors, timeouts, 429 (honouring Retry-After) and 502/503/504 are
retried with exponential backoff and full jitter, bounded in attempts. An
answer that means "no" (a missing grant, bad credentials, any other 4xx) is
never retried. Around it all runs a wall-clock deadline (`within_deadline`):
whatever the backend does (answer slowly, hang, trickle its body a byte at a
time), the operation ends when the deadline passes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from piper_mcp.piper.errors import PiperBackendError

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return min(asked, self.max_delay * 4)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _Deadline:
    ends: float  # on time.monotonic(), which is also the event loop's clock
    seconds: float
    waiting_for: str


_deadline: ContextVar[_Deadline | None] = ContextVar("piper_deadline", default=None)


@asynccontextmanager
async def within_deadline(seconds: float, *, waiting_for: str = "Piper") -> AsyncIterator[None]:
    """Run the body for at most `seconds` (PIPER_RETRY_DEADLINE) of wall time.

    The body is cancelled when the time is up, wherever it is waiting, and a
    `PiperBackendError` says so. Inside, `time_left()` tells retries whether
    another attempt or pause still fits. An enclosing, earlier deadline wins.
    """
    deadline = _Deadline(time.monotonic() + seconds, seconds, waiting_for)
    outer = _deadline.get()
    if outer is not None and outer.ends <= deadline.ends:
        deadline = _Deadline(outer.ends, outer.seconds, waiting_for)
    token = _deadline.set(deadline)
    try:
        async with asyncio.timeout(deadline.ends - time.monotonic()) as scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        raise deadline_passed() from None
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    """Seconds until the current deadline (negative once it has passed); None: no deadline."""
    deadline = _deadline.get()
    return None if deadline is None else deadline.ends - time.monotonic()


def deadline_passed() -> PiperBackendError:
    """The error for the current deadline having passed."""
    deadline = _deadline.get()
    seconds = f"{deadline.seconds:g}s" if deadline else "its deadline"
    waiting_for = deadline.waiting_for if deadline else "Piper"
    return PiperBackendError(
        f"{waiting_for} did not answer within PIPER_RETRY_DEADLINE={seconds}, so the call "
        "was given up.",
        advice="The backend is slow or not answering: check it with `piper-mcp check` and "
        "try again; if it is only slow, raise PIPER_RETRY_DEADLINE.",
    )
