"""A person's terminal for a command under test: a pty that is its controlling terminal.

Ctrl-C typed there reaches the command as SIGINT, and a hidden prompt reads from it,
as in a shell; a pty merely passed as stdin would do neither.
"""

from __future__ import annotations

import fcntl
import os
import select
import termios
import time


def controlling_terminal() -> None:
    """`preexec_fn`: a session of its own, whose controlling terminal is the pty on stdin."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def read_until(stream: int, text: bytes, seconds: float = 20.0) -> bytes:
    """Read `stream` until `text` has come; fails if it does not within `seconds`."""
    seen = b""
    deadline = time.monotonic() + seconds
    while text not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {text!r} within {seconds} s: {seen.decode(errors='replace')}"
        try:
            chunk = os.read(stream, 65536)
        except OSError:  # a pty whose command ended and closed it
            chunk = b""
        assert chunk, f"ended before {text!r}: {seen.decode(errors='replace')}"
        seen += chunk
    return seen
