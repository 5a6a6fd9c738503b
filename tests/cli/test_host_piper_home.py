"""Issue 12.2, hosts: a PIPER_HOME copied from a host example, unedited, is refused.

Host configurations carry PIPER_HOME in the server's `env`. Left as the example path,
or as a variable the host passes on unexpanded (`${PIPER_HOME}` where the host does not
expand it, as Claude Code does not when the variable is unset), every command says so
in one line, with the command that prints the real folder, and creates nothing: not
the example path, not a folder named `${PIPER_HOME}` wherever the host started it.
A relative folder is refused the same way: it would be another vault in each folder a
host happens to start the server in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import Cli
from tests.cli.test_bad_environments import VAULT_COMMANDS, argv, assert_one_line_naming

PLACEHOLDER = "/absolute/path/to/your/piper-home"  # the examples' (examples/hosts/, mcp.json)
UNEXPANDED = ["${PIPER_HOME}", "$PIPER_HOME/vault", "%LOCALAPPDATA%\\piper-mcp"]
RELATIVE = ["piper-home", "./vault", "../elsewhere/piper-home"]
RELATIVE_FOLDER = "a relative folder"


@pytest.mark.parametrize("command", VAULT_COMMANDS, ids=" ".join)
def test_the_example_path_is_refused_and_not_created(
    command: tuple[str, ...], cli_env: dict[str, str], cli: Cli
) -> None:
    cli_env["PIPER_HOME"] = PLACEHOLDER
    done = cli(*argv(command), stdin="sk-a-value-long-enough-1234567890")
    assert_one_line_naming(done.code, done.err, "the example value")
    assert "`piper-mcp local home`" in done.err
    assert not Path(PLACEHOLDER).parents[-2].exists()  # /absolute


@pytest.mark.parametrize(
    ("value", "named"),
    [
        *[(value, "a variable the host did not expand") for value in UNEXPANDED],
        *[(value, RELATIVE_FOLDER) for value in RELATIVE],
    ],
)
@pytest.mark.parametrize("command", VAULT_COMMANDS, ids=" ".join)
def test_a_folder_that_depends_on_where_the_host_starts_it_is_refused_and_not_created(
    command: tuple[str, ...],
    value: str,
    named: str,
    cli_env: dict[str, str],
    cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started_in = tmp_path / "where-the-host-started-it"
    started_in.mkdir()
    monkeypatch.chdir(started_in)  # where a relative PIPER_HOME would land
    cli_env["PIPER_HOME"] = value
    done = cli(*argv(command), stdin="sk-a-value-long-enough-1234567890")
    assert_one_line_naming(done.code, done.err, named)
    # The fix: the absolute form of this folder, or the command that prints the real one.
    fix = f"(from here: {started_in / value})" if named == RELATIVE_FOLDER else "local home`"
    assert fix in done.err
    assert list(started_in.iterdir()) == [] and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("value", [PLACEHOLDER, "${PIPER_HOME}", "piper-home"])
def test_local_home_does_not_print_a_folder_a_host_would_not_find(
    value: str, cli_env: dict[str, str], cli: Cli
) -> None:
    """`local home` prints what goes into a host entry's env: never one of these."""
    cli_env["PIPER_HOME"] = value
    done = cli("local", "home")
    assert_one_line_naming(done.code, done.err, f"PIPER_HOME is {value}")
    assert done.out == ""
