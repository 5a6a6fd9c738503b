"""Issue 12.1: Ctrl-C and SIGTERM end `piper-mcp serve` over stdio within a second.

Run as README runs it (`piper-mcp serve --local`, the console script, a host's minimal
environment), with stdin left open: a host's pipe, or a terminal in which a person
pressed Ctrl-C or Ctrl-D. In a terminal, stderr says once what the server is waiting for.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time
from pathlib import Path

import pytest

from piper_mcp.invocation import INSPECTOR
from tests.cli.conftest import PROGRAM
from tests.cli.terminal import controlling_terminal, read_until

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "signal-test", "version": "1"},
    },
}
WAITS_FOR_A_HOST = "it waits for an MCP host"


def host_env(piper_home: Path) -> dict[str, str]:
    """What a host gives a server: hardly anything."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(piper_home.parent), "PIPER_HOME": str(piper_home)}


def seconds_to_exit(process: subprocess.Popen[bytes], send: object) -> float:
    """Time from `send()` to the process's exit; fails if it outlives five seconds."""
    started = time.monotonic()
    send()  # type: ignore[operator]
    process.wait(timeout=5)
    return time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_server_while_the_host_keeps_stdin_open(
    signum: int, piper_home: Path
) -> None:
    process = subprocess.Popen(
        [PROGRAM, "serve", "--local"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=host_env(piper_home),
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["id"] == 1  # serving; stdin stays open
    took = seconds_to_exit(process, lambda: process.send_signal(signum))
    stderr = process.stderr.read().decode()
    assert process.returncode == 0, stderr
    assert took < 1.0, f"{signal.Signals(signum).name} took {took:.2f} s"
    assert "Traceback" not in stderr
    assert WAITS_FOR_A_HOST not in stderr  # a host's pipe is no person at a terminal
    process.stdin.close()


def test_ctrl_c_while_it_starts_is_a_quiet_exit(piper_home: Path) -> None:
    """A person who changes their mind at once: Ctrl-C while start-up still imports."""
    process = subprocess.Popen(
        [PROGRAM, "serve", "--local"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Python reports each import on stderr as it ends; `piper_mcp.local` is the first
        # that `main()` itself imports, and a tenth of a second of them follows.
        env={**host_env(piper_home), "PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert process.stderr
    read_until(process.stderr.fileno(), b" piper_mcp.local\n")
    took = seconds_to_exit(process, lambda: process.send_signal(signal.SIGINT))
    said = [
        line
        for line in process.communicate()[1].decode().splitlines()
        if not line.startswith("import time:")
    ]
    assert process.returncode in (0, 130), said  # stopped, or interrupted before serving
    assert took < 1.0, f"SIGINT took {took:.2f} s"
    assert not said


@pytest.mark.parametrize(("key", "name"), [(b"\x03", "Ctrl-C"), (b"\x04", "Ctrl-D")])
def test_ctrl_c_or_ctrl_d_in_a_terminal_ends_it_after_one_explanation(
    key: bytes, name: str, piper_home: Path
) -> None:
    terminal, tty = pty.openpty()
    process = subprocess.Popen(
        [PROGRAM, "serve", "--local"],
        stdin=tty,
        stdout=tty,
        stderr=tty,
        env={**host_env(piper_home), "TERM": "xterm"},
        preexec_fn=controlling_terminal,
    )
    os.close(tty)
    try:
        said = read_until(terminal, b"shows the whole flow").decode()
        took = seconds_to_exit(process, lambda: os.write(terminal, key))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(terminal)
    assert process.returncode == 0
    assert took < 1.0, f"{name} took {took:.2f} s"
    assert said.count(WAITS_FOR_A_HOST) == 1
    assert "Ctrl-C or Ctrl-D stops it" in said
    assert f"`{PROGRAM} demo`" in said  # not on PATH: named as started
    # The Inspector starts servers without the shell's PIPER_HOME: the hint names the vault.
    inspector = f"npx {INSPECTOR} -e PIPER_HOME={piper_home} {PROGRAM} serve --local`"
    assert inspector in " ".join(said.split())
    assert "Traceback" not in said


def test_a_closed_stdout_is_one_line_and_makes_no_vault(piper_home: Path) -> None:
    done = subprocess.run(
        [PROGRAM, "serve", "--local"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=host_env(piper_home),
        pass_fds=(),
        preexec_fn=lambda: os.close(1),
        timeout=30,
        check=False,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert stderr.startswith("piper-mcp: stdout is closed") and stderr.count("\n") == 1
    assert not piper_home.exists()
