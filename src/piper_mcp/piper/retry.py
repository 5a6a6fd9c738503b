"""When to try a Piper call again, and how long to wait first.

Connect errors, timeouts, 429 (honouring Retry-After) and 502/503/504 are
retried with exponential backoff and full jitter, bounded in attempts and by
a deadline for the whole `get_secret`. An answer that means "no" (a missing
grant, bad credentials, any other 4xx) is never retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})

_deadline: ContextVar[float | None] = ContextVar("piper_deadline", default=None)


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


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound everything inside (calls, retries, waits) to `seconds` from now.

    An enclosing, earlier deadline wins.
    """
    ends = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(ends if outer is None else min(outer, ends))
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left() -> float | None:
    ends = _deadline.get()
    return None if ends is None else ends - time.monotonic()
