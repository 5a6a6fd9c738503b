"""Ctrl-C in a command other than `serve`: a quiet exit that scripts see as a failure.

`piper-mcp check && deploy` must not go on to deploy because the user pressed Ctrl-C
while `check` waited for Piper Link.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import PROGRAM


@pytest.mark.parametrize(
    "command",
    [["check"], ["exec", "--env", "TOKEN=openai_api_key", "--", "touch", "started"]],
    ids=["check", "exec"],
)
def test_ctrl_c_while_waiting_for_link_exits_130_without_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as link:  # a Link that never answers
        link_url = f"http://127.0.0.1:{link.getsockname()[1]}"
        process = subprocess.Popen(
            [PROGRAM, *command],
            cwd=tmp_path,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(tmp_path),
                "PIPER_CLIENT_ID": "research-agent",
                "PIPER_VARIABLES": "openai_api_key",
                "PIPER_LINK_URL": link_url,
                "PIPER_LINK_TIMEOUT": "60",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        link.settimeout(30)
        asking, _ = link.accept()  # check is waiting for Link's answer
        with asking:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert not (tmp_path / "started").exists()  # exec's command never ran
