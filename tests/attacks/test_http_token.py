"""Issue 9.2: an empty, blank or short HTTP token never turns authentication off.

An unset variable in a compose or unit file (`PIPER_MCP_HTTP_TOKEN=`) used to
start the server with no authentication at all, even on 0.0.0.0, where a
remote client could then answer its own consent prompt.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from piper_mcp.local.vault import Vault
from tests.cli.conftest import cli_env, piper_home  # noqa: F401
from tests.processes import mcp_http_servers

pytestmark = pytest.mark.anyio

GOOD_TOKEN = "a-good-http-token-3c9e1f7a0b5d2e8f4a6c"
WEAK = {"empty": "", "blank": "   ", "short": "x" * 31}


def run_in_process(
    env: dict[str, str], argv: list[str]
) -> tuple[threading.Thread, subprocess.CompletedProcess[str]]:
    """`piper_mcp.cli.main(argv)` on a thread with `env` as the environment, up to 20 s.

    The thread is still alive if the command did not end (a server that started).
    """
    from piper_mcp.cli import main

    out, err = io.StringIO(), io.StringIO()
    codes: list[int] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in set(os.environ) - set(env):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        with redirect_stderr(err), redirect_stdout(out):
            running = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
            running.start()
            running.join(20)
    code = codes[0] if codes else -1
    return running, subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def start_refused(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    """Start `serve` over HTTP; it must refuse (a server that starts would time out).

    In this process (`piper_mcp.cli.main` on a thread, `env` as the environment); the
    console script's refusal is `test_the_console_script_refuses_a_weak_token_too`.
    """
    argv = ["serve", "--local", "--transport", "streamable-http", "--port", "0", *flags]
    serving, done = run_in_process(env, argv)
    if serving.is_alive():
        pytest.fail(f"served with {flags}: authentication was off")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done


def test_the_console_script_refuses_a_weak_token_too(
    piper_home: Path,  # noqa: F811
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    Vault.init(piper_home)[0].close()
    command = [sys.executable, "-m", "piper_mcp", "serve", "--local", "--host", "0.0.0.0"]
    command += ["--transport", "streamable-http", "--port", "0", "--auth-token", ""]
    try:
        done = subprocess.run(
            command, env=cli_env, capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("served with an empty token: authentication was off")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "HTTP bearer token (PIPER_MCP_HTTP_TOKEN / --auth-token) is empty" in done.stderr


@pytest.fixture
def vault_env(piper_home: Path, cli_env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    Vault.init(piper_home)[0].close()
    return cli_env


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
@pytest.mark.parametrize("weak", WEAK.values(), ids=WEAK.keys())
def test_a_weak_token_from_the_flag_or_the_environment_refuses_to_start(
    vault_env: dict[str, str], host: str, weak: str
) -> None:
    by_flag = start_refused(vault_env, "--host", host, "--auth-token", weak)
    by_env = start_refused({**vault_env, "PIPER_MCP_HTTP_TOKEN": weak}, "--host", host)
    for done in (by_flag, by_env):
        assert "HTTP bearer token (PIPER_MCP_HTTP_TOKEN / --auth-token)" in done.stderr
        assert ("at least 32" in done.stderr) or ("is empty" in done.stderr)


@pytest.mark.parametrize("weak", [*WEAK.values(), GOOD_TOKEN + "\n\n"], ids=[*WEAK, "2 lines"])
def test_a_weak_token_in_a_file_refuses_to_start(
    vault_env: dict[str, str], tmp_path: Path, weak: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(weak)
    token_file.chmod(0o600)
    env = {**vault_env, "PIPER_MCP_HTTP_TOKEN_FILE": str(token_file)}
    done = start_refused(env, "--host", "0.0.0.0")
    assert f"HTTP bearer token in {token_file}" in done.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
def test_a_token_file_others_can_read_is_refused_with_the_fix(
    vault_env: dict[str, str], tmp_path: Path, mode: int
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN)
    token_file.chmod(mode)
    done = start_refused(vault_env, "--auth-token-file", str(token_file))
    assert f"chmod 600 {token_file}" in done.stderr and GOOD_TOKEN not in done.stderr


def test_a_missing_or_empty_token_file_setting_is_refused(
    vault_env: dict[str, str], tmp_path: Path
) -> None:
    missing = start_refused(vault_env, "--auth-token-file", str(tmp_path / "nope"))
    assert f"cannot read the HTTP token file {tmp_path / 'nope'}" in missing.stderr
    # An unset variable in a unit file: not "." (the current folder), not "no token".
    unset = start_refused({**vault_env, "PIPER_MCP_HTTP_TOKEN_FILE": ""}, "--host", "0.0.0.0")
    assert "PIPER_MCP_HTTP_TOKEN_FILE: an empty path" in unset.stderr


def test_a_token_and_a_token_file_together_are_refused(
    vault_env: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN)
    token_file.chmod(0o600)
    env = {**vault_env, "PIPER_MCP_HTTP_TOKEN": GOOD_TOKEN}
    done = start_refused(env, "--auth-token-file", str(token_file))
    assert "not both" in done.stderr and GOOD_TOKEN not in done.stderr


@contextmanager
def served_with_token_piped_in(env: dict[str, str], log: Path) -> Iterator[str]:
    """Piping the token to `serve --auth-token-file /dev/stdin`, as docs/security.md shows it."""
    command = [sys.executable, "-m", "piper_mcp", "serve", "--local"]
    command += ["--transport", "streamable-http", "--port", "0"]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*command, "--auth-token-file", "/dev/stdin"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    assert process.stdin is not None
    process.stdin.write(GOOD_TOKEN.encode() + b"\n")
    process.stdin.close()
    deadline = time.monotonic() + 60
    try:
        while not (found := re.search(r"serving MCP at (\S+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(params=["file", "pipe"])
def served_with_token_file(
    vault_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Path]]:
    if request.param == "pipe":
        log = tmp_path / "stderr.log"
        with served_with_token_piped_in(vault_env, log) as url:
            yield url, log
        return
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN + "\n")  # as `echo` or an editor writes it
    token_file.chmod(0o600)
    with mcp_http_servers(vault_env) as start:
        url = start("streamable-http", "--host", "0.0.0.0", "--auth-token-file", str(token_file))
        yield url, start.logs[url]  # type: ignore[attr-defined]


def test_the_token_file_keeps_the_token_out_of_argv_and_guards_the_server(
    served_with_token_file: tuple[str, Path],
) -> None:
    url, log = served_with_token_file
    assert httpx.post(url, json={}).status_code == 401
    wrong = httpx.post(url, json={}, headers={"authorization": "Bearer " + "y" * 40})
    assert wrong.status_code == 401
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    assert GOOD_TOKEN not in ps.stdout
    assert GOOD_TOKEN not in log.read_text()


async def test_a_client_with_the_token_from_the_file_is_served(
    served_with_token_file: tuple[str, Path],
) -> None:
    url, _ = served_with_token_file
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {GOOD_TOKEN}"})
    async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        tools = await client.list_tools()
    assert "get_secret" in {tool.name for tool in tools.tools}


@pytest.mark.parametrize("weak", WEAK.values(), ids=WEAK.keys())
def test_a_weak_client_secret_is_a_configuration_error_not_protocol_v2(
    cli_env: dict[str, str],  # noqa: F811
    weak: str,
) -> None:
    env = {**cli_env, "PIPER_CLIENT_ID": "research", "PIPER_CLIENT_SECRET": weak}
    _, done = run_in_process(env, ["check"])
    assert done.returncode == 1 and done.stdout == "" and done.stderr.count("\n") == 1
    assert "PIPER_CLIENT_SECRET: the agent's client secret is" in done.stderr
