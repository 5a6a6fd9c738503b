"""Where a local vault lives: `PIPER_HOME`, else the platform's user data folder.

Folders are created owner-only (0700) and files owner-only (0600).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "piper-mcp"
DATABASE_FILE = "vault.sqlite3"
KEY_FILE = "vault.key"
# The agent `piper-mcp serve --local` acts as unless told otherwise; every vault has it.
DEFAULT_AGENT = "local-agent"


def default_home() -> Path:
    configured = os.environ.get("PIPER_HOME")
    if configured:
        return Path(configured).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP_NAME


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
