"""Which piper-mcp processes serve a vault right now, for the dashboard's overview.

Each long-running process (`serve --local`, `local serve`, `local dashboard`) leaves
a small owner-only file in `PIPER_HOME/running/` while it runs: what it is, its
process id and its addresses. Readers keep only files whose process is alive, so a
process killed without removing its file is not shown. It is a hint for people,
never a security decision; failing to write it changes nothing else. `alive` also
tells whether the server that raised a grant request still waits for it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from piper_mcp.local.files import make_private_dir, write_private_file

FOLDER = "running"


@dataclass(frozen=True)
class RunningProcess:
    kind: str  # "serve --local", "local serve", "local dashboard"
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    addresses: dict[str, str] = field(default_factory=dict)  # e.g. {"Piper Link": url}
    details: dict[str, str] = field(default_factory=dict)  # e.g. {"agent": "local-agent"}


def announce(home: Path, process: RunningProcess) -> Path | None:
    """Leave `process`'s file in `home`; its path to `withdraw`, None if it could not be written."""
    folder = home / FOLDER
    # One process may run two things (`local serve --dashboard`): one file for each.
    path = folder / f"{process.pid}-{process.kind.replace(' ', '_').replace('-', '')}.json"
    try:
        make_private_dir(folder)
        path.unlink(missing_ok=True)  # a process of the same id that died without withdrawing
        write_private_file(path, json.dumps(asdict(process)).encode())
    except OSError:
        return None
    return path


def withdraw(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def running(home: Path) -> list[RunningProcess]:
    """The processes that announced themselves in `home` and are still alive, oldest first."""
    found = []
    try:
        files = sorted((home / FOLDER).glob("*.json"))
    except OSError:
        return []
    for path in files:
        try:
            process = RunningProcess(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue  # half-written or not ours: nothing to show
        if not _well_formed(process):
            continue
        if alive(process.pid):
            found.append(process)
        else:
            path.unlink(missing_ok=True)  # its process died without cleaning up
    return sorted(found, key=lambda process: process.started_at)


def _well_formed(process: RunningProcess) -> bool:
    def texts(mapping: object) -> bool:
        return isinstance(mapping, dict) and all(
            isinstance(key, str) and isinstance(value, str) for key, value in mapping.items()
        )

    return (
        isinstance(process.kind, str)
        and isinstance(process.started_at, int | float)
        and texts(process.addresses)
        and texts(process.details)
    )


def alive(pid: object) -> bool:
    """Whether process `pid` of this machine still runs (a hint: ids are reused)."""
    if not isinstance(pid, int) or pid <= 0:
        return False  # 0 and negative numbers name process groups
    if os.name == "nt":
        return True  # os.kill there ends the process: trust the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True
