"""Which client-secret checks the token endpoint runs: a few at a time, none for a guesser.

A check is an scrypt hash, costly on purpose (16 MiB and tens of milliseconds
each). Left unbounded, a flood of wrong secrets turns that cost against the
user's machine (80 at once took the backend from 91 to 786 MiB) and lets an
attacker guess at full speed. The gate bounds both: at most
`MAX_CONCURRENT_CHECKS` hashes run, on threads of their own, with at most
`MAX_WAITING_CHECKS` more waiting; anything beyond is refused at once, without
hashing. A client id that failed `FAILURES_BEFORE_BACKOFF` times in a row is
refused for a delay that doubles with each further failure, up to
`MAX_BACKOFF_SECONDS`; a success forgets its failures. Unknown client ids are
tracked like registered ones, so the answers do not tell which ids exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from piper_mcp.local.request_body import RequestRejected, rejected
from piper_mcp.piper.protocol_names import TOO_MANY_REQUESTS

Checked = TypeVar("Checked")

MAX_CONCURRENT_CHECKS = 2
MAX_WAITING_CHECKS = 8
FAILURES_BEFORE_BACKOFF = 5
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
# Enough for every agent a vault holds many times over; ~1 MiB at most.
MAX_TRACKED_CLIENTS = 4096
BUSY_RETRY_AFTER_SECONDS = 1


@dataclass(slots=True)
class _Failures:
    count: int = 0
    refused_until: float = 0.0


class SecretCheckGate:
    """Runs client-secret checks within the bounds above; `check` raises 429 when it refuses."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # Least recently failed first. Keyed by a digest: a client id can be 64 KiB long.
        self._failures: OrderedDict[bytes, _Failures] = OrderedDict()
        self._admitted = 0
        # Own threads, not the shared pool: at most MAX_CONCURRENT_CHECKS threads ever hash,
        # so at most that many malloc arenas keep scrypt's buffers after use, whatever else
        # the shared pool runs; and no asyncio primitive ties the gate to one event loop.
        self._workers = ThreadPoolExecutor(
            MAX_CONCURRENT_CHECKS, thread_name_prefix="piper-secret-check"
        )

    @property
    def tracked_clients(self) -> int:
        """How many client ids have failures on record."""
        with self._lock:
            return len(self._failures)

    async def check(self, client_id: str, verify: Callable[[], Checked | None]) -> Checked | None:
        """`verify()` on a worker thread (None means the secret was wrong), if admitted."""
        key = hashlib.sha256(client_id.encode()).digest()
        with self._lock:
            self._refuse_if_backing_off(key)
            if self._admitted >= MAX_CONCURRENT_CHECKS + MAX_WAITING_CHECKS:
                raise _too_many(
                    "The token endpoint is busy checking other client secrets: "
                    f"try again in {BUSY_RETRY_AFTER_SECONDS} s.",
                    BUSY_RETRY_AFTER_SECONDS,
                )
            self._admitted += 1
        try:
            work = self._workers.submit(lambda: self._checked(key, verify))
            return await asyncio.wrap_future(work)
        finally:
            with self._lock:
                self._admitted -= 1

    def _checked(self, key: bytes, verify: Callable[[], Checked | None]) -> Checked | None:
        # Asked again once a worker is free: failures that finished while this one
        # waited may have started a backoff, and a waiting guess must not slip through.
        with self._lock:
            self._refuse_if_backing_off(key)
        found = verify()
        with self._lock:
            if found is None:
                self._record_failure(key)
            else:
                self._failures.pop(key, None)
        return found

    def _refuse_if_backing_off(self, key: bytes) -> None:
        failures = self._failures.get(key)
        wait = failures.refused_until - self._clock() if failures else 0.0
        if wait > 0:
            seconds = math.ceil(wait)
            raise _too_many(
                "Too many failed attempts for this client_id: check the client secret and "
                f"try again in {seconds} s.",
                seconds,
            )

    def _record_failure(self, key: bytes) -> None:
        failures = self._failures.pop(key, None)
        if failures is None:
            failures = _Failures()
            if len(self._failures) >= MAX_TRACKED_CLIENTS:
                self._forget_one()
        failures.count += 1
        beyond = failures.count - FAILURES_BEFORE_BACKOFF
        if beyond >= 0:
            # The exponent is capped too: 2**1100 does not fit in a float.
            delay = FIRST_BACKOFF_SECONDS * 2 ** min(beyond, 32)
            failures.refused_until = self._clock() + min(delay, MAX_BACKOFF_SECONDS)
        self._failures[key] = failures

    def _forget_one(self) -> None:
        # A flood of random ids must not push out an id that is backing off (that would
        # reset a guesser's delay), so the oldest id with few failures goes first.
        for key, failures in self._failures.items():
            if failures.count < FAILURES_BEFORE_BACKOFF:
                del self._failures[key]
                return
        self._failures.popitem(last=False)


def _too_many(description: str, retry_after: int) -> RequestRejected:
    refusal = rejected(429, TOO_MANY_REQUESTS, description)
    refusal.response.headers["Retry-After"] = str(retry_after)
    return refusal
