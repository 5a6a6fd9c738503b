"""`piper-mcp`: the one console command, with a subcommand per job."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from piper_mcp import __version__

if TYPE_CHECKING:
    from piper_mcp.server.settings import ServeSettings

INTERRUPTED = 130  # the exit code a shell gives a command ended by Ctrl-C


class _Help(argparse.HelpFormatter):
    """Prose wrapped to the terminal; example lines (indented two spaces) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line
            if line.startswith("  ")
            else super(_Help, self)._fill_text(line, width, indent)
            for line in text.splitlines()
        )


def add_command(
    group: Any,
    name: str,
    summary: str,
    description: str,
    examples: list[str],
    handler: Callable[..., Any] | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose --help says what it does and shows how it is run."""
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
        formatter_class=_Help,
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line's parser; when `argv` names a command, with that command only.

    Building all of them (some forty parsers, the `local` group's modules imported)
    takes half of `exec`'s start, which is added to the start of the command it runs.
    """
    parser = argparse.ArgumentParser(
        prog="piper-mcp",
        description="User-approved, short-lived credentials from Piper for AI agents, over "
        "the Model Context Protocol.",
        epilog="start here:\n"
        "  piper-mcp demo               the whole flow on a throwaway local Piper\n"
        "  piper-mcp serve --local      an MCP server over your local vault (for a host)\n"
        "  piper-mcp check --local      is everything a host needs working?",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"piper-mcp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    named = argv[0] if argv else None  # a command first: `piper-mcp -h local` lists them all
    for name, register in COMMANDS.items():
        if named not in COMMANDS or name == named:
            register(commands)
    return parser


def _demo_command(commands: Any) -> None:
    add_command(
        commands,
        "demo",
        "run the whole Piper flow against a throwaway local Piper",
        "Start a local Piper with a demo vault and walk an agent through an STS token, a "
        "Secret Manager read, a missing grant and the environment fallback. Touches no vault "
        "of yours.",
        ["piper-mcp demo"],
    )


def _serve_command(commands: Any) -> None:
    from piper_mcp.invocation import INSPECTOR

    serve = add_command(
        commands,
        "serve",
        "serve Piper to MCP hosts (stdio by default)",
        "Run the MCP server. Over stdio (the default) it waits for an MCP host (Claude "
        "Desktop, Claude Code, Cursor, the MCP Inspector) to talk JSON-RPC on stdin: let the "
        "host start it. Ctrl-C (or Ctrl-D in a terminal) stops it. Flags override PIPER_MCP_* "
        "settings.",
        [
            "piper-mcp serve --local",
            f'npx {INSPECTOR} -e PIPER_HOME="$(piper-mcp local home)" piper-mcp serve --local',
            "piper-mcp serve --local --transport streamable-http --port 0",
        ],
    )
    _server_options(serve)
    serve.add_argument(
        "--transport", choices=["stdio", "sse", "streamable-http"], help="stdio (default)"
    )
    serve.add_argument("--host", help="address for sse / streamable-http (127.0.0.1)")
    serve.add_argument("--port", type=int, help="port for sse / streamable-http (8000; 0: any)")
    serve.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="stderr log level"
    )
    serve.add_argument(
        "--reveal",
        choices=["ask", "allow", "deny"],
        help="raw secret values: ask the user (default), allow, or deny (tokens only)",
    )
    serve.add_argument(
        "--auth-token",
        dest="http_token",
        metavar="TOKEN",
        help="bearer token HTTP clients must send, 32 characters or more (visible in the "
        "process list: prefer --auth-token-file)",
    )
    serve.add_argument(
        "--auth-token-file",
        dest="http_token_file",
        metavar="FILE",
        help="read the bearer token from FILE, which only its owner may read (chmod 600); "
        "/dev/stdin takes it from a pipe",
    )
    serve.add_argument(
        "--allow-host",
        dest="allowed_hosts",
        action="append",
        metavar="HOST:PORT",
        help="another Host header to accept over HTTP (repeat for more)",
    )


def _check_command(commands: Any) -> None:
    check = add_command(
        commands,
        "check",
        "check that everything a host needs works, with a fix for each problem",
        "Check configuration (which vault or agent), Piper Link, the backend and agent "
        "credentials, and each declared variable's grant. Exit code 0 only when all pass.",
        ["piper-mcp check --local", "piper-mcp check --json"],
    )
    _server_options(check)
    check.add_argument("--json", action="store_true", help="print JSON for scripts")


def _audit_command(commands: Any) -> None:
    audit = add_command(
        commands,
        "audit",
        "the MCP server's audit trail: get_secret outcomes, never values",
        "Print the most recent get_secret outcomes (PIPER_MCP_AUDIT_FILE, by default "
        "PIPER_HOME/audit.jsonl): time, client, variable, mode, outcome, source.",
        ["piper-mcp audit --limit 20", "piper-mcp audit --json"],
    )
    audit.add_argument("--limit", type=int, default=50, help="most recent N entries (50)")
    audit.add_argument("--json", action="store_true", help="print JSON for scripts")


def _exec_command(commands: Any) -> None:
    run = add_command(
        commands,
        "exec",
        "start a program with Piper secrets in its environment (wrap another MCP server)",
        "Start COMMAND with each --env NAME=VARIABLE, and each environment variable whose "
        "value is piper:VARIABLE, set to the raw value the agent is granted for VARIABLE "
        "(Piper only: no fallback). The values never pass through a model, so a host's "
        "configuration can run another MCP server without holding its key. Each injection "
        "is audited (piper-mcp audit). piper-mcp's own PIPER_* settings are not passed on. "
        "If a value is missing, it says why on stderr and COMMAND is not started. Exit "
        "code: COMMAND's; 1 when piper-mcp cannot provide a value, 2 for a command line "
        "it cannot use, 126/127 when COMMAND cannot run or is not found.",
        [
            "GITHUB_PERSONAL_ACCESS_TOKEN=piper:github_token piper-mcp exec --local -- "
            "docker run -i --rm -e GITHUB_PERSONAL_ACCESS_TOKEN ghcr.io/github/github-mcp-server",
            "piper-mcp exec --local --env=OPENAI_API_KEY=openai_api_key -- python agent.py",
        ],
    )
    run.add_argument(
        "--local",
        action="store_true",
        default=None,
        help="act as an agent of the local vault in PIPER_HOME (else the Piper cloud's, "
        "PIPER_CLIENT_ID)",
    )
    run.add_argument("--agent", help="with --local: the vault's agent to act as (local-agent)")
    run.add_argument(
        "--env",
        dest="inject",
        action="append",
        default=[],
        metavar="NAME=VARIABLE",
        help="set NAME to VARIABLE's value in COMMAND's environment (repeat for more)",
    )
    run.add_argument(
        "program", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]", help="what to run"
    )


def _local_commands(commands: Any) -> None:
    from piper_mcp.local.commands import add_commands

    add_commands(commands)


# In the order `piper-mcp --help` lists them.
COMMANDS: dict[str, Callable[[Any], None]] = {
    "demo": _demo_command,
    "serve": _serve_command,
    "check": _check_command,
    "audit": _audit_command,
    "exec": _exec_command,
    "local": _local_commands,
}


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--local",
        action="store_true",
        default=None,
        help="use the local Piper in PIPER_HOME (created if missing)",
    )
    parser.add_argument("--agent", help="with --local: the vault's agent to act as (local-agent)")


def _serve_settings(args: argparse.Namespace) -> ServeSettings:
    from piper_mcp.server.settings import ServeSettings

    flags = (
        "transport",
        "host",
        "port",
        "log_level",
        "local",
        "agent",
        "reveal",
        "http_token",
        "http_token_file",
        "allowed_hosts",
    )
    given = {name: getattr(args, name, None) for name in flags}
    return ServeSettings(**{name: value for name, value in given.items() if value is not None})


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up makes some 80 000 objects that live as long as the process (the SDK's
    # models and schemas): collecting while they are made only walks them over and over,
    # a tenth of the start. `serve` freezes them once built (collections then skip them)
    # and turns collecting back on; every other command right away.
    gc.disable()
    try:
        return _main(argv)
    except BrokenPipeError:  # `piper-mcp check | head`: the reader left; so do we, quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:  # Ctrl-C while starting up, before the command took it over
        return INTERRUPTED
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(words)
    args, extras = parser.parse_known_args(words)
    if extras and getattr(args, "extras_unechoed", False):  # maybe a secret's value
        args.value_on_command_line = extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command != "serve":
        gc.enable()
    if args.command == "demo":
        from piper_mcp import demo

        return demo.run(sys.stdout)
    if args.command == "exec" and args.local:
        import os

        from piper_mcp import exec as command

        plain = command.plain_local_options(args.agent, os.environ)
        if plain is not None:
            return command.run(plain, args.inject, args.program, agent_flag=args.agent is not None)
    if args.command in ("serve", "check", "audit", "exec"):
        return _run_server_command(args)
    if args.command == "local":
        from piper_mcp.local.commands import run

        return run(args)
    parser.print_help()
    return 2


def _run_server_command(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from piper_mcp.bundle import forget_unfilled_fields
    from piper_mcp.local.errors import VaultError
    from piper_mcp.piper import PiperError
    from piper_mcp.printable import printable
    from piper_mcp.server.settings import ServeSettings
    from piper_mcp.validation import setting_problems, unparsable_setting

    forget_unfilled_fields(os.environ)  # an MCP Bundle's optional fields left empty
    try:
        options = _serve_settings(args)
        if args.command == "audit":
            return _print_audit(options, args)
        if args.command == "exec":
            from piper_mcp import exec as command

            return command.run(
                command.ExecOptions.of(options),
                args.inject,
                args.program,
                agent_flag=args.agent is not None,
            )
        if args.command == "check":
            from piper_mcp.server.check import run_check

            return run_check(options, sys.stdout, as_json=args.json)
        from piper_mcp.server.serve import serve

        return serve(options)
    except ValidationError as error:
        print(f"piper-mcp: {setting_problems(error, ServeSettings)[0]}", file=sys.stderr)
    except SettingsError as error:
        # pydantic-settings could not even parse a value (PIPER_MCP_REVEAL_OVERRIDES not JSON).
        setting = unparsable_setting(error, ServeSettings)
        example = """PIPER_MCP_REVEAL_OVERRIDES='{"openai_api_key": "allow"}'"""
        print(f"piper-mcp: {setting} is not valid JSON; e.g. {example}", file=sys.stderr)
    except (PiperError, VaultError) as error:
        print(f"piper-mcp: {printable(str(error))}", file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C is how a person stops `serve`
        return 0 if args.command == "serve" else INTERRUPTED
    return 1


def _print_audit(options: ServeSettings, args: argparse.Namespace) -> int:
    import json

    from piper_mcp.printable import printable
    from piper_mcp.server.audit import AuditError, AuditTrail

    if args.limit < 1:
        print("piper-mcp: --limit must be at least 1", file=sys.stderr)
        return 1
    path = options.audit_path()
    try:
        entries = AuditTrail(path).recent(args.limit)
    except AuditError as error:
        print(f"piper-mcp: {printable(str(error))}", file=sys.stderr)
        return 1
    if entries.skipped:
        lines = "line" if entries.skipped == 1 else "lines"
        skipped = f"skipped {entries.skipped} unreadable {lines} in {printable(str(path))}"
        print(f"piper-mcp: {skipped}", file=sys.stderr)
    if args.json:
        print(json.dumps(entries, indent=2, ensure_ascii=False))
        return 0
    for entry in entries:
        consent = " (user asked)" if entry.get("consent_asked") else ""
        variable = repr(entry.get("variable"))  # repr escapes control characters too
        time, client, mode, outcome, source = (
            printable(str(entry.get(name) or "-"))
            for name in ("time", "client", "mode", "outcome", "source")
        )
        # A brokered call's request and answer; the command `exec` started.
        what = " ".join(
            printable(str(entry[name]))
            for name in ("method", "host", "status", "command")
            if entry.get(name) is not None
        )
        what = f"  {what}" if what else ""
        print(f"{time}  {client}  {variable}  {mode}  {outcome}  {source}{what}{consent}")
    if not entries and not entries.skipped:
        print("Nothing recorded yet.")
    return 0
