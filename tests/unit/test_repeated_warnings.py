"""RepeatedWarnings: a few warnings of one kind a minute, then a count."""

from __future__ import annotations

import logging
import threading
import time

from piper_mcp.server.repeated_warnings import MAX_KINDS, RepeatedWarnings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str, *args: object, level: int = logging.WARNING, name: str = "peer", line: int = 1
) -> logging.LogRecord:
    """A record as the logging call on `line` of this file makes it."""
    return logging.LogRecord(name, level, __file__, line, msg, args, None)


def test_a_kind_passes_per_minute_times_then_is_counted_and_the_count_said_later() -> None:
    clock = Clock()
    warnings = RepeatedWarnings(per_minute=3, clock=clock)
    passed = [
        warnings.filter(rec := record("junk of %d bytes", n)) and rec.getMessage() for n in range(5)
    ]
    assert passed[:2] == ["junk of 0 bytes", "junk of 1 bytes"]
    assert passed[2] == "junk of 2 bytes (more like it in this minute are counted, not logged)"
    assert passed[3:] == [False, False]

    clock.now += 60
    later = record("junk of %d bytes", 9)
    assert warnings.filter(later)
    assert later.getMessage() == "junk of 9 bytes (2 more like it were not logged before this one)"


def test_kinds_are_counted_apart_and_errors_always_pass() -> None:
    warnings = RepeatedWarnings(per_minute=1, clock=Clock())
    assert warnings.filter(record("one kind"))
    assert not warnings.filter(record("one kind"))
    assert warnings.filter(record("one kind", name="another logger"))
    assert warnings.filter(record("another kind", line=2))
    assert all(warnings.filter(record("one kind", level=logging.ERROR)) for _ in range(5))
    assert all(warnings.filter(record("one kind", level=logging.INFO)) for _ in range(5))


def test_a_message_the_caller_formats_itself_is_one_kind() -> None:
    """The SDK logs `f"Invalid Host header: {host}"`: a peer chooses the host."""
    warnings = RepeatedWarnings(per_minute=10, clock=Clock())
    passed = [warnings.filter(record(f"Invalid Host header: evil-{n}")) for n in range(300)]
    assert passed.count(True) == 10


def test_lines_that_log_cannot_grow_memory() -> None:
    warnings = RepeatedWarnings(per_minute=1, clock=Clock())
    for line in range(MAX_KINDS * 4):
        assert warnings.filter(record("from many places", line=line))
    assert len(warnings._windows) <= MAX_KINDS


def test_other_kinds_do_not_reset_a_flood_until_it_is_the_oldest() -> None:
    warnings = RepeatedWarnings(per_minute=1, clock=Clock())
    assert warnings.filter(record("flood"))
    for line in range(2, MAX_KINDS + 1):
        warnings.filter(record("elsewhere", line=line))
    assert not warnings.filter(record("flood"))


def test_a_call_whose_arguments_do_not_fit_is_left_to_logging() -> None:
    warnings = RepeatedWarnings(per_minute=2, clock=Clock())
    assert warnings.filter(record("id %d"))
    wrong = record("id %d", "not a number")
    assert warnings.filter(wrong)  # the note is not added; logging reports the call
    assert not warnings.filter(wrong)


def test_threads_together_get_no_more_through_than_one() -> None:
    now = 1000.0

    def clock() -> float:
        time.sleep(0.0001)  # another thread runs here, in the middle of `filter`
        return now

    warnings = RepeatedWarnings(per_minute=10, clock=clock)
    passed: list[bool] = []
    start = threading.Barrier(8)

    def flood() -> None:
        start.wait()
        passed.extend(warnings.filter(record("junk")) for _ in range(50))

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert passed.count(True) == 10
    now += 60
    later = record("junk")
    assert warnings.filter(later)
    assert "(390 more like it were not logged before this one)" in later.getMessage()
