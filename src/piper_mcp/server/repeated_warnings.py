"""Warnings a peer can repeat at will are logged a few times a minute, then counted.

A host (or anything writing to the server's stdin or port) decides how often
the server warns about what it sent: an unreadable line, a notification with
malformed params. Logged each time, a flood of junk becomes a flood of stderr.
`RepeatedWarnings` sits on the log handler and lets `per_minute` warnings of
one kind (the logger and the line that logs it) through in each minute, then
says once that it is holding the rest back, and how many it held back when the
kind next gets through (a flood that stops for good leaves that count unsaid). Errors
always pass: they are rare, and each matters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# Kinds are lines of code that log, so they are few; the bound is a backstop: past it, the
# oldest window goes.
MAX_KINDS = 256


class RepeatedWarnings(logging.Filter):
    def __init__(self, per_minute: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.per_minute = per_minute
        self._clock = clock
        self._windows: dict[tuple[str, str, int], _Window] = {}  # oldest window first
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        kind = (record.name, record.pathname, record.lineno)  # its call: f-strings too
        with self._lock:  # handlers filter outside their own lock, from any thread
            window = self._windows.get(kind)
            now = self._clock()
            if window is None or now - window.start >= 60:
                if window is None and len(self._windows) >= MAX_KINDS:
                    del self._windows[next(iter(self._windows))]  # the oldest window
                held_back = window.held_back if window else 0
                self._windows.pop(kind, None)
                window = self._windows[kind] = _Window(now)
                if held_back:
                    _append(record, f" ({held_back} more like it were not logged before this one)")
            window.seen += 1
            if window.seen > self.per_minute:
                window.held_back += 1
                return False
            if window.seen == self.per_minute:
                _append(record, " (more like it in this minute are counted, not logged)")
            return True


@dataclass(slots=True)
class _Window:
    start: float
    seen: int = 0
    held_back: int = 0


def _append(record: logging.LogRecord, note: str) -> None:
    try:
        said = record.getMessage()
    except (TypeError, ValueError):  # a call whose arguments do not fit its format
        return  # logging's own handling reports it, as for every other call
    record.msg = said + note
    record.args = None
