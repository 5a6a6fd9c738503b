"""Running `piper-mcp` as a person does: a subprocess with its own PIPER_HOME."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The console script a person runs, beside this Python (the venv's bin).
PROGRAM = str(Path(sys.executable).with_name("piper-mcp"))


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Done]


@pytest.fixture
def piper_home(tmp_path: Path) -> Path:
    return tmp_path / "piper-home"


@pytest.fixture
def cli_env(piper_home: Path) -> dict[str, str]:
    return {**os.environ, "PIPER_HOME": str(piper_home)}


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Cli:
    """`cli("local", "init", stdin="...")` runs the command and returns what it did.

    In this process: `piper_mcp.cli.main` with `cli_env` as the environment, stdin from
    the string, stdout and stderr captured. `cli_process` runs the console script.
    """
    from piper_mcp.cli import main

    def run(*args: str, stdin: str | None = None) -> Done:
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            for name in set(os.environ) - set(cli_env):
                patch.delenv(name)
            for name, value in cli_env.items():
                patch.setenv(name, value)
            patch.setattr(sys, "stdin", io.StringIO(stdin or ""))
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exit:  # argparse: usage errors and --help
                    code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
        return Done(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def cli_process(cli_env: dict[str, str]) -> Cli:
    """Like `cli`, but the `piper-mcp` process a person starts: `python -m piper_mcp ...`."""

    def run(*args: str, stdin: str | None = None) -> Done:
        done = subprocess.run(
            [sys.executable, "-m", "piper_mcp", *args],
            input=stdin if stdin is not None else "",
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Done(done.returncode, done.stdout, done.stderr)

    return run


@dataclass
class Serving:
    process: subprocess.Popen[str]
    info: dict[str, Any]

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(signum)
        _, err = self.process.communicate(timeout=20)
        return self.process.returncode, err


@pytest.fixture
def serve_local(cli_env: dict[str, str]) -> Iterator[Callable[..., Serving]]:
    """Start `piper-mcp local serve --json` on free ports; stopped after the test."""
    started: list[Serving] = []

    def start(*extra: str) -> Serving:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "piper_mcp",
                "local",
                "serve",
                "--port",
                "0",
                "--link-port",
                "0",
                "--json",
                *extra,
            ],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"serve did not start: {process.communicate()[1]}")
        serving = Serving(process, json.loads(line))
        started.append(serving)
        return serving

    yield start
    for serving in started:
        if serving.process.poll() is None:
            serving.process.kill()
            serving.process.communicate()


# A variable `local-agent` declares but is not granted, and the stored secret to grant it:
# a call for it raises a grant request (tests of grants made while the call waits).
UNGRANTED = "github_token"
STORED = "My GitHub token"
STORED_VALUE = "ghp_canary-cli-just-in-time-5b2d"


@pytest.fixture
def ungranted_home(piper_home: Path) -> Path:
    """`local-agent` declares `github_token` (granted once, then revoked); a secret is stored."""
    from piper_mcp.local.vault import Vault

    vault, _ = Vault.init(piper_home)
    me = vault.local_user_id
    vault.put_secret(STORED, STORED_VALUE, owner_user_id=me)
    vault.grant(me, "local-agent", UNGRANTED, STORED)
    vault.revoke(me, "local-agent", UNGRANTED)
    vault.close()
    return piper_home
