"""The backend's audit rows: who asked (`Caller`), written off the event loop by one thread.

A request never holds up the event loop on SQLite: it hands its row to the
writer, which writes rows in batches. An answer that hands out a credential
(an agent token, an STS token, a raw value, a Secret Manager payload) waits
for its row to commit and fails with the storage error if it cannot: the
vault's audit table is the backend's only record of who was given what, so no
record, no credential. Every other row (a resolved mapping, a refusal, an
unproven request) gives nothing away, and its answer does not wait: the row is
written behind it, in order, within `BEHIND_SECONDS` or with the next
credential's row (a resolve and the token that follows it share one
transaction). While writes fail such rows are kept and written once the vault
takes writes again, `MAX_PENDING_ROWS` at most; beyond that the oldest are
dropped and a row says how many.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

from piper_mcp.local.storage import FAILED, StorageError, StorageFaultLog, storage_error
from piper_mcp.local.vault import AuditEntry, Vault

logger = logging.getLogger(__name__)

MAX_PENDING_ROWS = 10_000
BEHIND_SECONDS = 0.05
# How long to wait before trying kept rows again after a failed write.
RETRY_PAUSE_SECONDS = 1.0


@dataclass
class Caller:
    """What a handler learned about who sent the request, for its audit row."""

    client_id: str | None = None
    user_id: str | None = None
    subject: str | None = None
    proven: bool = False  # the request proved which agent (or token holder) it is

    def entry(self, action: str, outcome: str, reason: str | None) -> AuditEntry:
        return AuditEntry(
            time.time(), self.client_id, self.user_id, action, self.subject, outcome, reason
        )


@dataclass(frozen=True)
class _Pending:
    entry: AuditEntry
    done: Future[None] | None  # set when an answer waits for the commit


class AuditWriter:
    """Appends audit rows to a vault from one thread; `close()` writes what is left."""

    def __init__(self, vault: Vault, faults: StorageFaultLog) -> None:
        self._vault = vault
        self._faults = faults
        self._wake = threading.Condition()
        self._pending: deque[_Pending] = deque()
        self._waiting = 0  # rows in _pending an answer waits for
        self._dropped = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="piper-audit-writer", daemon=True)
        self._thread.start()

    async def commit(self, entry: AuditEntry) -> None:
        """Write `entry` before answering; raises the `StorageError` if it cannot be written."""
        done: Future[None] = Future()
        self._submit(_Pending(entry, done))
        await asyncio.wrap_future(done)

    def record(self, entry: AuditEntry) -> None:
        """Write `entry` behind the answer."""
        self._submit(_Pending(entry, None))

    def close(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _submit(self, row: _Pending) -> None:
        with self._wake:
            if self._closed:
                _settle(row, StorageError(FAILED, "The local Piper is stopping."))
                return
            self._pending.append(row)
            self._drop_beyond_limit()
            if row.done is not None:
                self._waiting += 1
                self._wake.notify()
            elif len(self._pending) == 1:
                self._wake.notify()  # starts the BEHIND_SECONDS wait

    def _drop_beyond_limit(self) -> None:
        while len(self._pending) > MAX_PENDING_ROWS:
            oldest = next((row for row in self._pending if row.done is None), None)
            if oldest is None:
                return
            self._pending.remove(oldest)
            self._dropped += 1

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._waiting):
                    if not self._pending:
                        self._wake.wait()
                    elif not self._wake.wait(BEHIND_SECONDS):
                        break
                if not self._pending:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._waiting = 0
                dropped, self._dropped = self._dropped, 0
            entries = [row.entry for row in batch]
            if dropped:
                entries.append(_dropped_entry(dropped))
            failure = self._write(entries)
            if failure is None:
                for row in batch:
                    _settle(row)
            elif self._kept_after(batch, dropped, failure):
                return

    def _write(self, entries: list[AuditEntry]) -> StorageError | None:
        try:
            self._vault.append_audit(entries)
        except (sqlite3.Error, OSError) as error:
            failure = storage_error(error, self._vault.database)
        except Exception:
            logger.exception("Writing %d audit rows failed unexpectedly.", len(entries))
            failure = StorageError(FAILED, "The local Piper could not write its audit trail.")
        else:
            return None
        self._faults.report(failure)
        return failure

    def _kept_after(self, batch: list[_Pending], dropped: int, failure: StorageError) -> bool:
        """Fail the rows answers wait for and keep the others for later; True: stop now."""
        with self._wake:
            # Rows that arrived while this write waited would meet the same lock or disk.
            rows = batch + list(self._pending)
            self._pending.clear()
            self._waiting = 0
            self._dropped += dropped
            stopping = self._closed
            kept = [row for row in rows if row.done is None]
            lost = 0
            if stopping:
                lost, self._dropped = self._dropped + len(kept), 0
            else:
                self._pending.extend(kept)
                self._drop_beyond_limit()
        for row in rows:
            if row.done is not None:
                _settle(row, failure)
        if stopping:
            if lost:
                logger.error("%d audit rows could not be written before stopping.", lost)
            return True
        with self._wake:
            self._wake.wait_for(lambda: self._closed or self._waiting > 0, RETRY_PAUSE_SECONDS)
        return False


def _settle(row: _Pending, failure: StorageError | None = None) -> None:
    if row.done is None:
        return
    try:
        if failure is None:
            row.done.set_result(None)
        else:
            row.done.set_exception(failure)
    except InvalidStateError:  # cancelled: the answer stopped waiting (its deadline passed)
        pass


def _dropped_entry(count: int) -> AuditEntry:
    return AuditEntry(
        time.time(),
        None,
        None,
        "audit",
        None,
        "dropped",
        f"{count} audit rows were dropped while the vault could not be written",
    )
