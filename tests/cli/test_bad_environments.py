"""Issue 12.4: every command, in every unusable PIPER_HOME, says one line and fails.

No traceback, a non-zero exit, and a message that names the path (or the port) and
the fix. The commands come from the parser itself, so a new command is covered or this
test fails. A person meets these as: PIPER_HOME pointing at a file, under a file (not
creatable), a folder they cannot write, another user's vault; and a port in use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from piper_mcp.cli import _parser
from piper_mcp.local.vault import Vault
from piper_mcp.piper.protocol_names import DEFAULT_LINK_PORT
from tests.cli.conftest import PROGRAM, Cli

NOBODY = 65534
SETPRIV = shutil.which("setpriv") or "setpriv"

# Each command with arguments that would work in a good vault.
ARGUMENTS: dict[tuple[str, ...], list[str]] = {
    ("serve",): ["--local"],
    ("check",): ["--local"],
    ("exec",): ["--local", "--env", "TOKEN=openai_api_key", "--", "true"],
    ("local", "init"): [],
    ("local", "agent", "add"): ["ci-bot", "--variable", "openai_api_key"],
    ("local", "agent", "secretless"): ["local-agent", "on"],
    ("local", "agent", "list"): [],
    ("local", "agent", "remove"): ["local-agent"],
    ("local", "secret", "set"): ["My OpenAI key"],
    ("local", "secret", "list"): [],
    ("local", "secret", "remove"): ["My OpenAI key"],
    ("local", "grant"): ["local-agent", "openai_api_key", "My OpenAI key"],
    ("local", "revoke"): ["local-agent", "openai_api_key"],
    ("local", "grants"): [],
    ("local", "serve"): ["--port", "0", "--link-port", "0"],
    ("local", "audit"): [],
    ("local", "requests"): [],
    ("local", "approve"): ["request-id", "My OpenAI key"],
    ("local", "deny"): ["request-id"],
    ("local", "dashboard"): ["--port", "0", "--no-browser"],
}
# Commands that need no vault, and why.
NO_VAULT = {
    ("demo",): "a throwaway vault of its own in a temporary folder",
    ("audit",): "reads the MCP server's audit file (its failures: test_audit_faults.py)",
    ("local", "home"): "prints where the vault is; opens nothing",
}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        yield path
        return
    for name, subparser in subparsers[0].choices.items():
        yield from commands(subparser, (*path, name))


VAULT_COMMANDS = list(ARGUMENTS)


def test_every_command_is_run_here_or_said_why_not() -> None:
    assert sorted(commands(_parser())) == sorted([*ARGUMENTS, *NO_VAULT])


def argv(command: tuple[str, ...]) -> list[str]:
    return [*command, *ARGUMENTS[command]]


def assert_one_line_naming(code: int, err: str, named: str) -> None:
    assert code != 0, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert named in lines[0] and "PIPER_HOME" in lines[0], err


@pytest.mark.parametrize("command", VAULT_COMMANDS, ids=" ".join)
def test_piper_home_is_a_file(command: tuple[str, ...], cli: Cli, piper_home: Path) -> None:
    piper_home.write_text("not a folder\n")
    done = cli(*argv(command), stdin="sk-a-value-long-enough-1234567890")
    assert_one_line_naming(done.code, done.err, f"PIPER_HOME {piper_home} is a file")
    assert piper_home.read_text() == "not a folder\n"


@pytest.mark.parametrize("command", VAULT_COMMANDS, ids=" ".join)
def test_piper_home_cannot_be_created(
    command: tuple[str, ...], cli_env: dict[str, str], cli: Cli, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cli_env["PIPER_HOME"] = str(blocker / "vault")
    done = cli(*argv(command), stdin="sk-a-value-long-enough-1234567890")
    assert_one_line_naming(done.code, done.err, f"{blocker} is a file")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", VAULT_COMMANDS, ids=" ".join)
def test_piper_home_the_system_will_not_create(
    command: tuple[str, ...], cli_env: dict[str, str], cli: Cli
) -> None:
    """/proc takes no new folder, even from root, whom no permission check stops."""
    home = "/proc/piper-mcp-vault"
    cli_env["PIPER_HOME"] = home
    done = cli(*argv(command), stdin="sk-a-value-long-enough-1234567890")
    assert done.code != 0, done.err
    assert "Traceback" not in done.err, done.err
    [line] = [line for line in done.err.splitlines() if line.strip()]
    assert home in line, line
    if command in (("local", "init"), ("serve",)):  # the two that create a vault
        assert f"cannot create PIPER_HOME {home}" in line, line


# --- as a user who may not write the folder ---------------------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[Path]:
    """A folder every user can reach (pytest's own tmp folder is its owner's only)."""
    folder = Path(tempfile.mkdtemp(prefix="piper-bad-homes-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def run_as(uid: int | None, home: Path, command: list[str]) -> tuple[int, str]:
    """The console script as user `uid` (None: this one), in a host's minimal environment."""
    # setpriv (util-linux), not Popen(user=): the venv's Python may sit under root's home,
    # which only setpriv's exec reaches here.
    as_user = [] if uid is None else [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    done = subprocess.run(
        [*as_user, PROGRAM, *command],
        env={"PATH": "/usr/bin:/bin", "HOME": str(home.parent), "PIPER_HOME": str(home)},
        cwd=home.parent,
        # A value for `secret set`; `serve` would read it as a (broken) MCP message.
        input="" if command[0] == "serve" else "sk-a-value-long-enough-1234567890",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr


def made_vault(home: Path) -> Path:
    Vault.init(home)[0].close()
    return home


def every_command_fails_in_one_line(
    uid: int | None, home: Path, named: str, but: list[tuple[str, ...]] | None = None
) -> None:
    failing = [command for command in VAULT_COMMANDS if command not in (but or [])]
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(lambda c: (c, *run_as(uid, home, argv(c))), failing)
        for command, code, err in results:
            try:
                assert_one_line_naming(code, err, named)
            except AssertionError as error:
                raise AssertionError(f"{' '.join(command)}: {error}") from None


def test_another_users_vault(shared: Path) -> None:
    home = made_vault(shared / "theirs")
    if os.getuid() == 0:  # root reads anything: be somebody else
        uid = NOBODY
    else:  # files we may not read stand for another user's
        uid = None
        for path in home.iterdir():
            path.chmod(0)
    every_command_fails_in_one_line(uid, home, str(home))


def test_a_read_only_piper_home(shared: Path) -> None:
    home = made_vault(shared / "read-only")
    uid = NOBODY if os.getuid() == 0 else None
    if uid is not None:
        os.chown(home, uid, uid)
        for path in home.iterdir():
            os.chown(path, uid, uid)
    home.chmod(0o555)
    # `local init` finds the vault there and changes nothing: it succeeds, rightly.
    every_command_fails_in_one_line(
        uid, home, f"PIPER_HOME is read-only ({home / 'vault.sqlite3'})", but=[("local", "init")]
    )


# --- ports ------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
def test_a_port_in_use_for_serve_names_it_and_port_0(
    transport: str, taken_port: int, cli: Cli, piper_home: Path
) -> None:
    done = cli("serve", "--local", "--transport", transport, "--port", str(taken_port))
    assert done.code == 1
    assert "Traceback" not in done.err
    assert done.err.startswith(f"piper-mcp: cannot listen on 127.0.0.1:{taken_port}: ")
    assert "`--port 0`" in done.err
    assert not piper_home.exists()  # a failed start makes no vault


@pytest.mark.parametrize("flag", ["--port", "--link-port"])
def test_a_port_in_use_for_local_serve_names_it_and_both_flags(
    flag: str, taken_port: int, cli: Cli
) -> None:
    assert cli("local", "init").code == 0
    other = "--link-port" if flag == "--port" else "--port"
    done = cli("local", "serve", flag, str(taken_port), other, "0")
    assert done.code == 1
    assert "Traceback" not in done.err
    assert f"cannot listen on 127.0.0.1:{taken_port}" in done.err
    assert "`--port 0 --link-port 0`" in done.err
    assert "Piper Link app" not in done.err  # a port of the user's choosing, not Piper's


def test_piper_links_own_port_in_use_is_said_so(cli: Cli) -> None:
    """The default Link port, 31477, is the Piper Link app's (held here for an instant)."""
    assert cli("local", "init").code == 0
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_LINK_PORT))
        holder.listen()
    except OSError:  # the Piper Link app (or another run) holds it already
        pass
    try:
        done = cli("local", "serve", "--port", "0")
    finally:
        holder.close()
    assert done.code == 1
    [line] = done.err.splitlines()
    assert line.startswith(f"piper-mcp local: cannot listen on 127.0.0.1:{DEFAULT_LINK_PORT}: ")
    assert "the Piper Link app" in line and "`--port 0 --link-port 0`" in line
