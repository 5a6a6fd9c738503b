"""Which piper-mcp processes use a vault: announced while they run, forgotten when they die."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from piper_mcp.local import running as running_module
from piper_mcp.local.running import FOLDER, RunningProcess, announce, running, withdraw


def test_an_announced_process_is_listed_until_it_withdraws(tmp_path: Path) -> None:
    path = announce(tmp_path, RunningProcess("local serve", addresses={"Piper Link": "http://x"}))
    assert path is not None and oct(path.stat().st_mode & 0o777) == "0o600"
    [listed] = running(tmp_path)
    assert (listed.kind, listed.pid, listed.addresses) == (
        "local serve",
        os.getpid(),
        {"Piper Link": "http://x"},
    )
    withdraw(path)
    assert running(tmp_path) == []


def test_a_process_that_died_without_withdrawing_is_not_listed_and_its_file_goes(
    tmp_path: Path,
) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = announce(tmp_path, RunningProcess("serve --local", pid=int(dead.stdout)))
    assert path is not None
    assert running(tmp_path) == []
    assert not path.exists()


def test_files_that_are_not_a_process_are_skipped_never_signalled(tmp_path: Path) -> None:
    folder = tmp_path / FOLDER
    folder.mkdir()
    (folder / "torn.json").write_text('{"kind": "serve')
    (folder / "other.json").write_text(json.dumps({"kind": "x", "unknown": 1}))
    # 0 and -1 would signal this process group and every process: never asked.
    (folder / "0.json").write_text(json.dumps({"kind": "x", "pid": 0}))
    (folder / "-1.json").write_text(json.dumps({"kind": "x", "pid": -1}))
    (folder / "text.json").write_text(json.dumps({"kind": "x", "pid": "1"}))
    # Alive, but not of the shape the overview shows (it answered 500 for these once).
    me = os.getpid()
    (folder / "list.json").write_text(json.dumps({"kind": "x", "pid": me, "addresses": []}))
    (folder / "kind.json").write_text(json.dumps({"kind": 1, "pid": me}))
    (folder / "detail.json").write_text(json.dumps({"kind": "x", "pid": me, "details": {"a": 1}}))
    assert running(tmp_path) == []


def test_a_home_that_cannot_hold_the_file_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    assert announce(home, RunningProcess("local dashboard")) is None
    assert running(home) == []
    withdraw(None)


def test_a_process_is_recognised_while_it_runs_and_not_once_it_ended() -> None:
    me = running_module.identity()
    assert running_module.still_running(me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    who = running_module.identity(child.pid)
    assert running_module.still_running(who)
    child.kill()
    deadline = time.monotonic() + 10
    while running_module.still_running(who) and time.monotonic() < deadline:
        time.sleep(0.01)  # killed, not yet reaped: a zombie runs nothing
    assert not running_module.still_running(who)
    child.wait()
    assert not running_module.still_running(who)


# Linux (and so CI) always has /proc. Without it (macOS) piper-mcp reads no start time,
# and a process is told by its id alone: test_what_cannot_be_told_from_here... covers that.
NO_PROC = "no /proc here (macOS): a process is told by its id alone, no start time to compare"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason=NO_PROC)
def test_an_id_a_new_process_took_is_not_the_server_that_had_it() -> None:
    me = running_module.identity()
    where, _, started = me.rpartition(":")
    assert not running_module.still_running(f"{where}:{int(started) + 1}")


def test_what_cannot_be_told_from_here_counts_as_running() -> None:
    pid, _, rest = running_module.identity().partition(":")
    started = rest.rpartition(":")[2]
    assert running_module.still_running(f"{pid}:another-machine/4026531836:{started}")
    assert running_module.still_running("written by something else")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason=NO_PROC)
def test_a_process_named_in_no_encoding_is_still_told_apart() -> None:
    """Any process can name itself bytes that are not UTF-8 (prctl); reading must not fail."""
    renamed = (
        "import ctypes, sys, time\n"
        "ctypes.CDLL(None).prctl(15, b'\\xff) (', 0, 0, 0)\n"  # PR_SET_NAME
        "print('renamed', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", renamed], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "renamed\n"
        who = running_module.identity(child.pid)
        assert running_module.still_running(who)
    finally:
        child.kill()
        child.wait()
    assert not running_module.still_running(who)


def test_an_id_that_is_not_plain_digits_counts_as_running() -> None:
    """Written by something else: no guess at what it names."""
    rest = running_module.identity().partition(":")[2]
    for written in ("²", "-1", "1" * 20):
        assert running_module.still_running(f"{written}:{rest}")
