"""The files of a local vault, created owner-only: folders 0700, files 0600."""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_FILE = "vault.sqlite3"
KEY_FILE = "vault.key"


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def write_private_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the start (never briefly world-readable)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
