"""`piper-mcp`: the one console command, with a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from piper_mcp import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="piper-mcp",
        description="User-approved, short-lived credentials from Piper for AI agents.",
    )
    parser.add_argument("--version", action="version", version=f"piper-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "demo",
        help="run the whole Piper flow against a throwaway local Piper",
        description="Start a local Piper with a demo vault and walk an agent through "
        "an STS token, a Secret Manager read, a missing grant and the env fallback.",
    )
    from piper_mcp.local.commands import add_commands

    add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from piper_mcp import demo

        return demo.run(sys.stdout)
    if args.command == "local":
        from piper_mcp.local.commands import run

        return run(args)
    parser.print_help()
    return 2
