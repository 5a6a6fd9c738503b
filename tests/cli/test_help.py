"""Issue 12.11: every command's --help says what it does and shows it run.

Walked from the parser itself, so a command added without help fails here. Each
example must also parse as the command it illustrates.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator

import pytest

from piper_mcp.cli import _parser
from tests.cli.conftest import Cli

CommandPath = tuple[str, ...]


def parsers(
    parser: argparse.ArgumentParser, path: CommandPath = ()
) -> Iterator[tuple[CommandPath, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from parsers(subparser, (*path, name))


EVERY = list(parsers(_parser()))


def examples(parser: argparse.ArgumentParser) -> list[list[str]]:
    """The example commands of an epilog, as argv after `piper-mcp`."""
    found = []
    for line in (parser.epilog or "").splitlines():
        command = re.split(r"\s{2,}", line.strip())[0]  # what follows is a gloss
        words = shlex.split(command.split("|")[-1])  # what is piped into piper-mcp
        words = [word for word in words if "=" not in word or word.startswith("-")]
        if "piper-mcp" in words:
            found.append(words[words.index("piper-mcp") + 1 :])
    return found


@pytest.mark.parametrize(
    ("path", "parser"), EVERY, ids=[" ".join(p) or "piper-mcp" for p, _ in EVERY]
)
def test_each_command_says_what_it_does_with_an_example(
    path: CommandPath, parser: argparse.ArgumentParser
) -> None:
    assert parser.description and len(parser.description) > 20, "no description"
    shown = examples(parser)
    assert shown, "no example in the epilog"
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"positional {action.metavar or action.dest} has no help"
    assert any(tuple(argv[: len(path)]) == path for argv in shown), f"no example of {path}"
    for argv in shown:
        _parser().parse_args(argv)  # an example that does not parse would exit here


def test_serve_help_says_stdio_waits_for_a_host_and_how_to_stop(cli: Cli) -> None:
    done = cli("serve", "--help")
    assert done.code == 0
    said = " ".join(done.out.split())
    assert "waits for an MCP host" in said
    assert "Ctrl-C" in said


def test_help_before_a_command_lists_every_command(cli: Cli) -> None:
    """Only the named command's parser is built (exec starts faster): not for `-h local`."""
    done = cli("-h", "local")
    assert done.code == 0
    assert all(name in done.out for name in ("demo", "serve", "check", "audit", "exec", "local"))
