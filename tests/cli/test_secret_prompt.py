"""Issue 12.4: Ctrl-C or Ctrl-D at `local secret set`'s hidden prompt is one line, no change.

The prompt reads from the terminal, so the test gives the command one: a pty that is its
controlling terminal, as in a person's shell.
"""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from piper_mcp.local.vault import Vault
from tests.cli.conftest import PROGRAM
from tests.cli.terminal import controlling_terminal, read_until


@pytest.mark.parametrize(("key", "code"), [(b"\x03", 130), (b"\x04", 1)], ids=["ctrl-c", "ctrl-d"])
def test_stopping_at_the_hidden_prompt_stores_nothing(
    key: bytes, code: int, piper_home: Path
) -> None:
    Vault.init(piper_home)[0].close()
    terminal, tty = pty.openpty()
    process = subprocess.Popen(
        [PROGRAM, "local", "secret", "set", "My OpenAI key"],
        stdin=tty,
        stdout=tty,
        stderr=tty,
        env={"PATH": "/usr/bin:/bin", "PIPER_HOME": str(piper_home), "TERM": "xterm"},
        preexec_fn=controlling_terminal,
    )
    os.close(tty)
    try:
        read_until(terminal, b"(hidden): ")
        os.write(terminal, key)
        said = read_until(terminal, b"nothing was stored").decode()
        assert process.wait(timeout=10) == code
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(terminal)
    assert "Traceback" not in said
    assert "piper-mcp local: no value given; nothing was stored" in said
    vault = Vault.open(piper_home)
    assert vault.secrets() == []
    vault.close()
