"""The audit trail: one JSON line per `get_secret` outcome, never a value or a token.

Owner-only file in the data directory; rotated by size (`audit.jsonl.1` … `.3`), safely
when several servers share it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

if sys.platform == "win32":  # no flock there: one server per audit file
    LOCK_EX = LOCK_SH = LOCK_UN = 0

    def flock(fd: int, operation: int, /) -> None:
        return None
else:
    from fcntl import LOCK_EX, LOCK_SH, LOCK_UN, flock


FILE_NAME = "audit.jsonl"  # in PIPER_HOME, beside the vault, unless PIPER_MCP_AUDIT_FILE says
DEFAULT_MAX_BYTES = 1_048_576  # rotated past this (PIPER_MCP_AUDIT_MAX_BYTES) ...
MIN_MAX_BYTES = 4096  # ... which may be no smaller
BACKUPS = 3
FIELD_LIMIT = 300
READ_BLOCK = 65_536
MAX_LINE = 65_536  # far longer than an entry, whose every field is cut at FIELD_LIMIT

CAUSES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.EISDIR: "it is a directory",
    errno.ENOTDIR: "a folder on its path is a file",
    errno.EEXIST: "a folder on its path is a file",  # mkdir, when a file stands there
}


class AuditError(Exception):
    """The audit trail cannot be written or read; the message names the file and the cause."""

    def __init__(self, doing: str, path: Path, error: OSError) -> None:
        cause = CAUSES.get(error.errno or 0) or str(error.strerror or error).lower()
        fix = "Free space or fix the permissions there" if doing == "write" else "Fix it"
        super().__init__(
            f"cannot {doing} the audit trail at {path}: {cause}. {fix}, or set "
            "PIPER_MCP_AUDIT_FILE to another file (default PIPER_HOME/audit.jsonl)."
        )


class RecentEntries(list[dict[str, Any]]):
    """Entries read back, oldest first, and how many unreadable lines were skipped on the way."""

    def __init__(self, entries: Iterable[dict[str, Any]] = (), skipped: int = 0) -> None:
        super().__init__(entries)
        self.skipped = skipped


class AuditTrail:
    """Appends entries, each one `write()` to an `O_APPEND` descriptor kept open.

    Several processes may share the file. Each append holds a shared `flock` on
    `audit.jsonl.lock` and checks (one `stat`) that its descriptor is still the current
    file, reopening it after another process rotated. Rotating, and looking at a last
    line another writer left, take the lock exclusively, so no process writes into a file
    being rotated away or is halfway through a line being looked at.
    Nothing is fsynced: an entry survives the process dying, not the machine losing power.
    """

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock_path = path.with_name(f"{path.name}.lock")
        self._threads = threading.Lock()
        # "trail" and "lock" descriptors, opened on first use and closed with the trail.
        self._descriptors: dict[str, int] = {}
        self._identity = (0, 0)  # (st_dev, st_ino) of the open trail
        self._end = -1  # where this process's last entry ended, if it is still the end
        weakref.finalize(self, close_all, self._descriptors)

    def record(self, **fields: Any) -> None:
        """Append one entry; `AuditError` says why it could not be written."""
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        for name, value in fields.items():
            entry[name] = value[:FIELD_LIMIT] if isinstance(value, str) else value
        line = json.dumps(entry, ensure_ascii=False).encode("utf-8", "replace") + b"\n"
        with self._threads:
            try:
                self._append(line)
            except OSError as error:
                close_all(self._descriptors)  # start afresh next time, torn tail included
                raise AuditError("write", self.path, error) from error

    def _append(self, line: bytes) -> None:
        lock = self._descriptor("lock", self._lock_path, os.O_RDWR | os.O_CREAT)
        flock(lock, LOCK_SH)
        try:
            size = self._current_size()
            if size != self._end or self._full(size, line):
                # Someone else wrote last (another process, or a crash) or the file is full:
                # with every other writer held off, rotate, and start a new line if theirs
                # is torn rather than glue this entry to the fragment.
                flock(lock, LOCK_EX)
                size = self._current_size()
                if self._full(size, line):
                    self._rotate()
                    size = self._current_size()
                if size and os.pread(self._descriptors["trail"], 1, size - 1) != b"\n":
                    line = b"\n" + line
            written = os.write(self._descriptors["trail"], line)
            if written < len(line):  # a regular file takes all of it unless it cannot grow
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._end = size + written
        finally:
            flock(lock, LOCK_UN)

    def _full(self, size: int, line: bytes) -> bool:
        return size > 0 and size + len(line) > self.max_bytes

    def _current_size(self) -> int:
        """The size of the file at `path`, reopening it if it is not the one open here."""
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            status = None
        if status and "trail" in self._descriptors and self._identity == identity(status):
            return status.st_size
        if "trail" in self._descriptors:
            os.close(self._descriptors.pop("trail"))
        trail = self._descriptor("trail", self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        status = os.fstat(trail)
        self._identity = identity(status)
        self._end = -1
        return status.st_size

    def _rotate(self) -> None:
        for n in range(BACKUPS, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            with contextlib.suppress(FileNotFoundError):
                newer.replace(older)

    def _descriptor(self, name: str, path: Path, flags: int) -> int:
        if name not in self._descriptors:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._descriptors[name] = os.open(path, flags, 0o600)
        return self._descriptors[name]

    def recent(self, limit: int = 50) -> RecentEntries:
        """The last `limit` entries, oldest first (from the current file only).

        Lines that are not a JSON object in UTF-8 (a torn line after a crash, a stray
        edit) are skipped and counted, among the lines read back to the `limit`th entry.
        The file is read from its end, a block at a time: a huge trail costs no memory.
        """
        entries = RecentEntries()
        if limit <= 0:
            return entries
        try:
            with self.path.open("rb") as file:
                for line in lines_backwards(file, os.fstat(file.fileno()).st_size):
                    if line == b"":
                        continue  # the end of the file, or a blank line: nothing was lost there
                    entry = None if line is None else parse(line)
                    if entry is None:
                        entries.skipped += 1
                        continue
                    entries.append(entry)
                    if len(entries) >= limit:
                        break  # before the next line is read: it may be a gigabyte away
        except FileNotFoundError:
            return RecentEntries()
        except OSError as error:
            raise AuditError("read", self.path, error) from error
        entries.reverse()
        return entries


def lines_backwards(file: BinaryIO, size: int) -> Iterator[bytes | None]:
    """The lines of `file`'s first `size` bytes, last first; None for one over `MAX_LINE`.

    A line that long is no entry (every field is cut at `FIELD_LIMIT`), so it is dropped
    as it is read rather than held.
    """
    position, tail, dropped = size, b"", False
    while position > 0:
        start = max(0, position - READ_BLOCK)
        file.seek(start)
        first, *ends = file.read(position - start).split(b"\n")
        position = start
        if ends:  # the newline before `tail`'s line is in this block: that line is whole
            *whole, last = ends
            yield None if dropped else last + tail
            yield from reversed(whole)
            tail, dropped = first, False
        elif not dropped:
            tail = first + tail
        if len(tail) > MAX_LINE:
            tail, dropped = b"", True
    yield None if dropped else tail


def parse(line: bytes) -> dict[str, Any] | None:
    """One entry, or None if `line` is not a JSON object that can be printed as UTF-8."""
    try:
        text = line.decode("utf-8")
        entry = json.loads(text)
        if "\\u" in text:  # an escaped lone surrogate parses, then fails every print
            json.dumps(entry, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None


def identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def close_all(descriptors: dict[str, int]) -> None:
    while descriptors:
        os.close(descriptors.popitem()[1])
