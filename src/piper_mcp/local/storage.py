"""When the vault's storage fails: which way, said for a person, and logged once a minute.

SQLite and the file system report a failing PIPER_HOME as codes (SQLITE_FULL,
EROFS, SQLITE_BUSY, SQLITE_CORRUPT, ...). A person needs the cause, the file
and what to do: `storage_error` turns a code into that. The backend answers
such a failure as `storage_unavailable` and logs it through `StorageFaultLog`,
once per cause a minute and without a traceback, so a broken disk under a
busy agent costs one line, not a megabyte of stderr.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from piper_mcp.invocation import command
from piper_mcp.local.errors import VaultError
from piper_mcp.local.files import KEY_FILE

if TYPE_CHECKING:
    import logging

FULL = "full"
READ_ONLY = "read-only"
LOCKED = "locked"
DAMAGED = "damaged"
FAILED = "failed"

# How long a write waits for another process's write lock before the vault says it is
# locked. Writes are single short transactions: a lock held longer than this is stuck.
BUSY_TIMEOUT_SECONDS = 2.0


class StorageError(VaultError):
    """PIPER_HOME cannot be read or written as the vault needs; the message says what to do."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class DamagedSecretError(StorageError):
    """One stored secret does not decrypt with the vault's key: its row was changed on disk."""

    def __init__(self, name: str, secret_id: str) -> None:
        super().__init__(
            DAMAGED,
            f"The stored value of {name!r} ({secret_id}) is damaged: it fails its integrity "
            f"check. Set it again with `{command('local', 'secret', 'set', name)}`.",
        )
        self.secret_id = secret_id


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(error: sqlite3.Error | OSError | StorageError, database: Path) -> StorageError:
    """What a failed read or write of `database` means, and what to do about it."""
    if isinstance(error, StorageError):
        return error
    if isinstance(error, OSError):
        detail = error.strerror or type(error).__name__
        if error.errno in _FULL_ERRNOS:
            return StorageError(FULL, _said(FULL, database, detail))
        if error.errno in _READ_ONLY_ERRNOS:
            return StorageError(READ_ONLY, _said(READ_ONLY, database, detail))
        return StorageError(FAILED, _said(FAILED, database, detail))
    primary = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    name = getattr(error, "sqlite_errorname", None) or type(error).__name__
    if primary == sqlite3.SQLITE_FULL:
        cause = FULL
    elif primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        cause = READ_ONLY
    elif primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        cause = LOCKED
    elif primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        cause = DAMAGED
    elif primary == sqlite3.SQLITE_CANTOPEN and not os.access(database.parent, os.W_OK):
        # In WAL mode even a reader creates files beside the database: a folder it may
        # not write to (or a read-only mount) fails the open itself.
        cause = READ_ONLY
    else:
        cause = FAILED
    return StorageError(cause, _said(cause, database, name))


def damaged(database: Path, detail: str) -> StorageError:
    return StorageError(DAMAGED, _said(DAMAGED, database, detail))


def _said(cause: str, database: Path, detail: str) -> str:
    where = f"({database})"
    if cause == FULL:
        return (
            f"PIPER_HOME is full {where}: free space on its disk (or raise the quota), "
            "then try again."
        )
    if cause == READ_ONLY:
        return (
            f"PIPER_HOME is read-only {where}: make the folder and its files writable by this "
            "user, or set PIPER_HOME to a writable copy."
        )
    if cause == LOCKED:
        return (
            f"PIPER_HOME is locked by another process {where}: it has held the vault's write "
            f"lock for more than {BUSY_TIMEOUT_SECONDS:g} s. Close it (an open `sqlite3` shell, "
            "a backup tool) and try again."
        )
    if cause == DAMAGED:
        return (
            f"PIPER_HOME is damaged ({database}: {detail}): stop piper-mcp and restore "
            f"{database.name} from a backup (keep {database.parent / KEY_FILE}); without a "
            f"backup, move both files away and start again with `{command('local', 'init')}`."
        )
    return (
        f"PIPER_HOME could not be read or written ({database}: {detail}): check the disk "
        "and the folder's permissions, then try again."
    )


class StorageFaultLog:
    """Logs each cause of storage failure at most once per `every` seconds, without tracebacks.

    A failing disk fails every request; one line a minute per cause, with how
    many failures went unlogged meanwhile, says as much as a line each.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def report(self, error: StorageError) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(error.cause)
            if last is not None and now - last < self._every:
                self._unlogged[error.cause] = self._unlogged.get(error.cause, 0) + 1
                return
            self._last[error.cause] = now
            unlogged = self._unlogged.pop(error.cause, 0)
        since = f" ({unlogged} more failures like it since the last report)" if unlogged else ""
        self._logger.error("%s%s", error, since)
