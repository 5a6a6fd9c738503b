"""The audit trail: one JSON line per `get_secret` outcome, never a value or a token.

Owner-only file in the data directory; rotated by size (`audit.jsonl.1` … `.3`).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BACKUPS = 3
FIELD_LIMIT = 300


class AuditTrail:
    def __init__(self, path: Path, *, max_bytes: int = 1_048_576) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()

    def record(self, **fields: Any) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        for name, value in fields.items():
            entry[name] = value[:FIELD_LIMIT] if isinstance(value, str) else value
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._rotate_if_full(len(line.encode()))
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as file:
                file.write(line)

    def _rotate_if_full(self, adding: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + adding <= self.max_bytes:
            return
        for n in range(BACKUPS, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                newer.replace(older)

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last `limit` entries, oldest first (from the current file only)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines[-limit:]:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a torn last line after a crash
        return entries
