"""Which piper-mcp processes serve a vault right now, for the dashboard's overview.

Each long-running process (`serve --local`, `local serve`, `local dashboard`) leaves
a small owner-only file in `PIPER_HOME/running/` while it runs: what it is, its
process id and its addresses. Readers keep only files whose process is alive, so a
process killed without removing its file is not shown. It is a hint for people,
never a security decision; failing to write it changes nothing else.

A grant request names the server whose call waits for it by `identity`: its process
id, and where the system says, its pid namespace and start time, so that
`still_running` can tell a killed server (or one whose id a new process took) from a
live one, and says "still running" when it cannot tell (another container).
"""

from __future__ import annotations

import json
import os
import re
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


def identity(pid: int | None = None) -> str:
    """This process (or `pid`) as `still_running` recognises it: "pid:where:start", where
    = the machine and its pid namespace."""
    pid = os.getpid() if pid is None else pid
    state = _proc_state(pid)
    return f"{pid}:{_where()}:{state[1] if state else ''}"


def still_running(named: str) -> bool:
    """Whether the process `named` (an `identity`) runs; True when this one cannot tell."""
    pid, _, rest = named.partition(":")
    where, _, started = rest.rpartition(":")
    if not re.fullmatch(r"[0-9]{1,10}", pid):
        return True
    if where != _where():
        return True  # another machine or container: its ids mean nothing here
    if not alive(int(pid)):
        return False
    state = _proc_state(int(pid))
    if state is None:
        return True  # no /proc (macOS), or it is hidden: the id is all there is
    running, start = state
    return running and (not started or start == started)


def _where() -> str:
    """This machine, and this pid namespace where the system names it (a container)."""
    import platform  # here: `exec --local` loads this module and never asks

    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = ""
    return f"{platform.node().replace(':', '_')}/{namespace}"


def _proc_state(pid: int) -> tuple[bool, str] | None:
    """(not a zombie, its start time in clock ticks) from /proc; None where there is none."""
    try:  # bytes: a process may name itself anything, not only UTF-8
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode("latin-1")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name before it may hold anything
    if len(fields) < 20:
        return None
    return fields[0] != "Z", fields[19]
