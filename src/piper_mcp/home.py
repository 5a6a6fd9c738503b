"""Where piper-mcp keeps a user's local vault: `PIPER_HOME`, else the platform's data folder.

Shared by the MCP server (`serve --local`) and the local backend (`piper-mcp local`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "piper-mcp"
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
