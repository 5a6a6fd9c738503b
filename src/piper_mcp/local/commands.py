"""`piper-mcp local ...`: run and administer a local Piper from the command line.

Each command prints for people, or one JSON document with `--json`; on
failure it prints one line saying why to stderr and exits 1. Secret values
are read from stdin or a hidden prompt, never from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import json
import secrets
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from piper_mcp.home import DEFAULT_AGENT, default_home
from piper_mcp.invocation import command as runnable
from piper_mcp.invocation import first_steps
from piper_mcp.local import decisions
from piper_mcp.local.dashboard import command as dashboard_command
from piper_mcp.local.errors import VaultError
from piper_mcp.local.files import DATABASE_FILE
from piper_mcp.network import ListenError, is_loopback_host
from piper_mcp.piper.protocol_names import DEFAULT_LINK_PORT
from piper_mcp.printable import printable

if TYPE_CHECKING:
    from piper_mcp.local.vault import Agent, Vault

DEFAULT_PORT = 31478


class CommandError(Exception):
    """A command that cannot do what was asked; the message is the one line shown."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_commands(commands: Any) -> None:
    """Register the `local` command group on the top-level subparsers."""
    from piper_mcp.cli import add_command

    local = add_command(
        commands,
        "local",
        "run and administer a local, self-hosted Piper",
        "A Piper-compatible backend on this machine. Its vault lives in PIPER_HOME "
        "(default: the user data folder); `piper-mcp serve --local` serves it to MCP hosts.",
        ["piper-mcp local init", "PIPER_HOME=~/work-vault piper-mcp local secret list"],
    )
    group = local.add_subparsers(dest="local_command", metavar="COMMAND", required=True)

    def with_json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        return parser

    with_json(
        add_command(
            group,
            "init",
            "create a vault (changes nothing if one exists)",
            "Create a vault in PIPER_HOME with the agent 'local-agent', which "
            "`piper-mcp serve --local` acts as. Run again, it changes nothing.",
            ["piper-mcp local init"],
            init,
        )
    )

    add_command(
        group,
        "home",
        "print the vault's folder (PIPER_HOME), for a host's configuration",
        "Print the folder of the vault these commands use: PIPER_HOME, else the user data "
        "folder. Hosts start piper-mcp without your shell's environment, so give them this "
        "path as PIPER_HOME in their configuration.",
        [
            "piper-mcp local home",
            'claude mcp add piper -e PIPER_HOME="$(piper-mcp local home)" -- '
            "piper-mcp serve --local",
        ],
        home,
    )

    agent = add_command(
        group,
        "agent",
        "register, list and remove agents",
        "Agents are the programs a user grants secrets to, each asking for variables by name.",
        ["piper-mcp local agent list"],
    )
    agents = agent.add_subparsers(dest="agent_command", metavar="COMMAND", required=True)
    add = add_command(
        agents,
        "add",
        "register an agent and its variable names",
        "Register an agent and the variables it asks for. Its client secret is generated "
        "and shown once (only a hash is kept), read from stdin, or left out (--secretless).",
        ["piper-mcp local agent add research --variable openai_api_key"],
        agent_add,
    )
    add.add_argument("client_id", metavar="ID", help="the agent's client id, e.g. research")
    add.add_argument(
        "--variable",
        action="append",
        required=True,
        metavar="NAME",
        help="a variable the agent asks for (repeat for more)",
    )
    proof = add.add_mutually_exclusive_group()
    proof.add_argument(
        "--secret-stdin",
        action="store_true",
        help="read the client secret (32 characters or more) from stdin instead of generating one",
    )
    proof.add_argument(
        "--secretless",
        action="store_true",
        help="no client secret: serve it over protocol v2, which trusts any process that can "
        "reach the ports as you",
    )
    with_json(add)
    secretless = add_command(
        agents,
        "secretless",
        "allow or stop protocol v2 (no client secret) for an agent",
        "Protocol v2 requests carry no proof: with it on, any process that can reach "
        "`local serve`'s ports as you can act as the agent.",
        ["piper-mcp local agent secretless research on"],
        agent_secretless,
    )
    secretless.add_argument("client_id", metavar="ID", help="the agent's client id")
    secretless.add_argument("state", choices=["on", "off"], help="on: allow v2; off: v1 only")
    with_json(
        add_command(
            agents,
            "list",
            "list agents",
            "List the agents, how each proves itself, and the variables it asks for.",
            ["piper-mcp local agent list --json"],
            agent_list,
        )
    )
    remove = add_command(
        agents,
        "remove",
        "remove an agent and its grants",
        "Remove an agent and every grant made to it; its tokens stop working.",
        ["piper-mcp local agent remove research"],
        agent_remove,
    )
    remove.add_argument("client_id", metavar="ID", help="the agent's client id")

    secret = add_command(
        group,
        "secret",
        "store, list and remove secrets",
        "Secrets are the values agents are granted, stored encrypted (AES-GCM) in the vault.",
        ["piper-mcp local secret list"],
    )
    secrets_ = secret.add_subparsers(dest="secret_command", metavar="COMMAND", required=True)
    put = add_command(
        secrets_,
        "set",
        "store a secret; the value from stdin or a hidden prompt",
        "Store a secret under NAME, or replace its value. In a terminal the value is asked "
        "for at a hidden prompt; otherwise it is read from stdin. It is never printed.",
        [
            "piper-mcp local secret set 'My OpenAI key'",
            "pass show openai | piper-mcp local secret set 'My OpenAI key'",
        ],
        secret_set,
    )
    put.add_argument("name", metavar="NAME", help="the secret's name, e.g. 'My OpenAI key'")
    # A value typed after the name is refused without being echoed (argparse would print it
    # in "unrecognized arguments", `-sk-...` too): it is in the shell's history already.
    put.add_argument("value_on_command_line", nargs="*", help=argparse.SUPPRESS)
    put.set_defaults(extras_unechoed=True)
    with_json(put)
    with_json(
        add_command(
            secrets_,
            "list",
            "list secrets (never values)",
            "List the stored secrets by name and id, with when each was last set.",
            ["piper-mcp local secret list"],
            secret_list,
        )
    )
    drop = add_command(
        secrets_,
        "remove",
        "remove a secret and every grant of it",
        "Remove a secret and every grant of it; tokens minted for it stop working.",
        ["piper-mcp local secret remove 'My OpenAI key'"],
        secret_remove,
    )
    drop.add_argument("name", metavar="NAME", help="the secret's name")

    grant_parser = add_command(
        group,
        "grant",
        "let AGENT have SECRET when it asks for VARIABLE",
        "Grant AGENT the stored SECRET under the variable name VARIABLE (declared for the "
        "agent if it was not). A running `serve --local` sees it on the next call. With "
        "--use, the grant also says where call_api may send it: a preset (anthropic, github, "
        "google, notion, openai, slack, stripe) or host names, with --inject for where the "
        "credential goes (default: 'Authorization: Bearer {value}').",
        [
            "piper-mcp local grant local-agent openai_api_key 'My OpenAI key'",
            "piper-mcp local grant local-agent openai_api_key 'My OpenAI key' --use openai",
            "piper-mcp local grant local-agent weather_key 'Weather key' "
            "--use api.weather.example --inject 'query:appid'",
        ],
        grant,
    )
    grant_parser.add_argument("agent", metavar="AGENT", help="the agent's client id")
    grant_parser.add_argument("variable", metavar="VARIABLE", help="the name the agent asks for")
    grant_parser.add_argument("secret", metavar="SECRET", help="a stored secret's name")
    grant_parser.add_argument(
        "--use",
        metavar="PRESET|HOSTS",
        help="let call_api send it: a preset name, or comma-separated host names (HTTPS)",
    )
    grant_parser.add_argument(
        "--inject",
        metavar="WHERE",
        help="with hosts: 'Header-Name: format with {value}' or 'query:PARAMETER'",
    )
    revoke_parser = add_command(
        group,
        "revoke",
        "take VARIABLE away from AGENT",
        "Revoke the grant: the agent's next request for VARIABLE is refused.",
        ["piper-mcp local revoke local-agent openai_api_key"],
        revoke,
    )
    revoke_parser.add_argument("agent", metavar="AGENT", help="the agent's client id")
    revoke_parser.add_argument("variable", metavar="VARIABLE", help="the granted variable")
    decisions.add_commands(group, with_json)
    dashboard_command.add_command(group)
    with_json(
        add_command(
            group,
            "grants",
            "list grants",
            "List every grant: agent, variable, secret and status.",
            ["piper-mcp local grants"],
            grants,
        )
    )

    serve_parser = with_json(
        add_command(
            group,
            "serve",
            "serve the Piper protocol until interrupted",
            "Serve Piper's wire protocol and a Piper Link on this machine, for programs that "
            "use a Piper client (the published SDK, piper_mcp.piper). Ctrl-C stops it. The "
            f"default ports are Piper's ({DEFAULT_PORT}, Link {DEFAULT_LINK_PORT}); if the "
            "Piper Link app holds them, take free ones with --port 0 --link-port 0.",
            ["piper-mcp local serve", "piper-mcp local serve --port 0 --link-port 0"],
            serve,
        )
    )
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve_parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"protocol port ({DEFAULT_PORT}; 0 picks a free one)",
    )
    serve_parser.add_argument(
        "--link-port",
        type=int,
        default=DEFAULT_LINK_PORT,
        help=f"Piper Link port on 127.0.0.1 ({DEFAULT_LINK_PORT}; 0 picks a free one)",
    )
    serve_parser.add_argument(
        "--dashboard", action="store_true", help="serve the dashboard too, and print its login link"
    )
    dashboard_command.add_arguments(serve_parser, prefix="dashboard-")
    serve_parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate")
    serve_parser.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")

    audit_parser = with_json(
        add_command(
            group,
            "audit",
            "who asked for what, when, and the outcome",
            "The local backend's audit trail: each request, the agent, the variable and the "
            "outcome, never a value.",
            ["piper-mcp local audit --limit 20"],
            audit,
        )
    )
    audit_parser.add_argument("--limit", type=int, default=50, help="most recent N entries (50)")


def run(args: argparse.Namespace) -> int:
    import sqlite3

    from piper_mcp.local.storage import storage_error

    try:
        result: int = args.handler(args)
        if result == 0 and not getattr(args, "json", False) and args.handler not in SAY_THEIR_VAULT:
            print(f"Vault: {default_home()}")  # a host may serve another one (PIPER_HOME)
        return result
    except CommandError as error:
        print(f"piper-mcp local: {error}", file=sys.stderr)
        return error.exit_code
    except VaultError as error:
        print(f"piper-mcp local: {error}", file=sys.stderr)
    except sqlite3.Error as error:  # the disk or the lock, mid-command: say which
        print(
            f"piper-mcp local: {storage_error(error, default_home() / DATABASE_FILE)}",
            file=sys.stderr,
        )
    return 1


def open_vault() -> Vault:
    # Imported here: `piper-mcp serve` builds this parser too, and must start fast.
    from piper_mcp.local.vault import Vault

    return Vault.open(default_home())


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    print(json.dumps(data, indent=2) if args.json else text)
    return 0


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


# --- commands ---


def home(args: argparse.Namespace) -> int:
    from piper_mcp.local.files import check_named

    home = default_home()
    check_named(home)  # what a host entry's env would be given must be usable there
    print(home)
    return 0


def init(args: argparse.Namespace) -> int:
    home = default_home()
    from piper_mcp.local.vault import Vault

    vault, created = Vault.init(home)
    data = {
        "home": str(home),
        "created": created,
        "user_id": vault.local_user_id,
        "instance_id": vault.local_instance_id,
    }
    text = (
        f"Created a vault in {home}, with the agent {DEFAULT_AGENT!r} for "
        f"`{runnable('serve', '--local')}`.\nNext: store a secret and grant it:\n"
        f"{first_steps(DEFAULT_AGENT)}"
        if created
        else f"A vault already exists in {home}; nothing changed."
    )
    return _emit(args, data, text)


SECRETLESS_WARNING = (
    "protocol v2 carries no proof: any process that can reach `piper-mcp local serve` "
    "as you can act as this agent"
)


def agent_add(args: argparse.Namespace) -> int:
    generated = not (args.secret_stdin or args.secretless)
    client_secret: str | None = None
    if generated:
        client_secret = secrets.token_urlsafe(32)
    elif args.secret_stdin:
        client_secret = _read_stdin("client secret")
    vault = open_vault()
    agent = vault.add_agent(
        args.client_id,
        client_secret,
        owner_user_id=vault.local_user_id,
        variables=args.variable,
        secretless=args.secretless,
    )
    data: dict[str, Any] = {
        "client_id": agent.client_id,
        "variables": list(agent.variables),
        "secretless": agent.secretless,
    }
    text = f"Registered agent {agent.client_id!r} asking for: {', '.join(agent.variables)}."
    if generated:
        data["client_secret"] = client_secret
        text += f"\nIts client secret, shown this once (only a hash is kept):\n{client_secret}"
    if agent.secretless:
        text += f"\nSecretless: {SECRETLESS_WARNING}."
    return _emit(args, data, text)


def agent_secretless(args: argparse.Namespace) -> int:
    on = args.state == "on"
    vault = open_vault()
    vault.set_secretless(args.client_id, on)
    agent = vault.agent(args.client_id)
    if on:
        print(f"Agent {args.client_id!r} is served over protocol v2: {SECRETLESS_WARNING}.")
    elif agent is not None and agent.has_client_secret:
        print(f"Agent {args.client_id!r} must prove itself with its client secret (protocol v1).")
    else:
        serve = runnable("serve", "--local", "--agent", args.client_id)
        print(
            f"Agent {args.client_id!r} is not served over protocol v2 any more; it has no client "
            f"secret, so only `{serve}` acts as it."
        )
    return 0


def agent_list(args: argparse.Namespace) -> int:
    agents = open_vault().agents()
    data = [
        {
            "client_id": a.client_id,
            "variables": list(a.variables),
            "proof": _proof(a),
            "created": _when(a.created_at),
        }
        for a in agents
    ]
    lines = [
        f"{a['client_id']}  ({a['proof']})  variables: {', '.join(a['variables'])}" for a in data
    ]
    return _emit(args, data, "\n".join(lines) or "No agents yet.")


def _proof(agent: Agent) -> str:
    if agent.has_client_secret:
        return "client secret: protocol v1"
    if agent.serves_v2:
        return "secretless: protocol v2"
    return "serve --local only"


def agent_remove(args: argparse.Namespace) -> int:
    open_vault().remove_agent(args.client_id)
    print(f"Removed agent {args.client_id!r} and its grants.")
    return 0


def secret_set(args: argparse.Namespace) -> int:
    from piper_mcp.local.vault import checked_secret_name

    if args.value_on_command_line:  # never shown back: it may be a value
        example = runnable("local", "secret", "set", "My OpenAI key")
        raise CommandError(
            f"`local secret set` takes the secret's name only, quoted if it has spaces "
            f"(`{example}`). A value is never given on the command line, where other "
            "users' `ps` and your shell's history keep it (if you typed one, remove it from "
            "the history): type it at the hidden prompt, or pipe it in"
        )
    vault = open_vault()
    checked_secret_name(args.name)  # before asking for the value
    value = _read_stdin("secret value") if not sys.stdin.isatty() else _prompt(args.name)
    replaced = vault.find_secret(args.name) is not None
    secret_id = vault.put_secret(args.name, value, owner_user_id=vault.local_user_id)
    _record(vault, "replaced" if replaced else "stored", args.name, action="command_line_secret")
    return _emit(
        args, {"name": args.name, "id": secret_id}, f"Stored {args.name!r} as {secret_id}."
    )


def secret_list(args: argparse.Namespace) -> int:
    data = [
        {
            "name": s.name,
            "id": s.secret_id,
            "created": _when(s.created_at),
            "updated": _when(s.updated_at),
        }
        for s in open_vault().secrets()
    ]
    lines = [f"{s['name']}  id={s['id']}  updated {s['updated']}" for s in data]
    return _emit(args, data, "\n".join(lines) or "No secrets yet.")


def secret_remove(args: argparse.Namespace) -> int:
    vault = open_vault()
    vault.remove_secret(args.name)
    _record(vault, "removed", args.name, action="command_line_secret")
    print(f"Removed {args.name!r}; agents granted it lose it on their next call.")
    return 0


def grant(args: argparse.Namespace) -> int:
    from piper_mcp.broker.rules import RuleError, rule_from_use  # only here: commands start lean

    if args.inject and not args.use:
        raise CommandError("--inject says where the credential goes for --use hosts; add --use")
    try:
        rule = rule_from_use(args.use, args.inject) if args.use else None
    except RuleError as error:
        raise CommandError(str(error)) from None
    vault = open_vault()
    made, declared = vault.grant(
        vault.local_user_id,
        args.agent,
        args.variable,
        args.secret,
        api_rule=rule.model_dump_json() if rule else None,
    )
    _record(vault, "granted", f"{made.variable} {made.secret_name}", agent=made.client_id)
    if declared:
        print(f"Declared {args.variable!r} as a variable of {made.client_id!r}.")
    print(f"Granted {made.secret_name!r} to {made.client_id!r} as {made.variable!r}.")
    if rule is not None:
        print(f"call_api may send it to {', '.join(rule.hosts)} ({rule.inject}).")
    return 0


def revoke(args: argparse.Namespace) -> int:
    vault = open_vault()
    vault.revoke(vault.local_user_id, args.agent, args.variable)
    _record(vault, "revoked", args.variable, agent=args.agent)
    print(f"Revoked {args.variable!r} from {args.agent!r}; it takes effect on the next call.")
    return 0


def grants(args: argparse.Namespace) -> int:
    vault = open_vault()
    data = [
        {
            "agent": g.client_id,
            "variable": g.variable,
            "secret": g.secret_name,
            "status": g.status,
            "created": _when(g.created_at),
            "call_api_hosts": list(json.loads(g.api_rule)["hosts"]) if g.api_rule else [],
        }
        for g in vault.grants(vault.local_user_id)
    ]
    lines = [
        f"{g['agent']}  {g['variable']} → {g['secret']}  ({g['status']})"
        + (f"  call_api: {', '.join(g['call_api_hosts'])}" if g["call_api_hosts"] else "")
        for g in data
    ]
    return _emit(args, data, "\n".join(lines) or "No grants yet.")


def audit(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    entries = open_vault().audit(args.limit)
    data = [
        {
            "at": _when(e.at),
            "agent": e.client_id,
            "action": e.action,
            "subject": e.subject,
            "outcome": e.outcome,
            "reason": e.reason,
        }
        for e in entries
    ]
    lines = [
        "  ".join(
            printable(str(e[name] or "-"))
            for name in ("at", "agent", "action", "subject", "outcome")
        )
        for e in data
    ]
    return _emit(args, data, "\n".join(lines) or "Nothing recorded yet.")


def serve(args: argparse.Namespace) -> int:
    from piper_mcp.local.running import RunningProcess, announce, withdraw
    from piper_mcp.local.server_thread import LocalBackend, Tls

    if (args.tls_cert is None) != (args.tls_key is None):
        raise CommandError("give both --tls-cert and --tls-key, or neither")
    tls = Tls(args.tls_cert, args.tls_key) if args.tls_cert else None
    if tls and not (tls.certfile.is_file() and tls.keyfile.is_file()):
        raise CommandError("the --tls-cert or --tls-key file does not exist")
    if not is_loopback_host(args.host) and tls is None:
        raise CommandError(f"serving {args.host} beyond this machine needs --tls-cert/--tls-key")
    vault = open_vault()
    vault.check()  # a damaged vault is said now, not call by call
    try:
        backend = LocalBackend(
            vault,
            instance_id=vault.local_instance_id,
            host=args.host,
            port=args.port,
            link_port=args.link_port,
            tls=tls,
        )
    except ListenError as error:
        held = error.in_use and error.port in (DEFAULT_PORT, DEFAULT_LINK_PORT)
        hint = " (Piper's own port: the Piper Link app, or another piper-mcp?)" if held else ""
        raise CommandError(
            f"{error}{hint}; choose other ports with --port and --link-port "
            "(`--port 0 --link-port 0` takes free ones and prints them)"
        ) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    backend.start()
    # Before announcing: a dashboard port that is taken ends the command here.
    dashboard = (
        dashboard_command.start(vault, args.dashboard_port, "--dashboard-port")
        if args.dashboard
        else None
    )
    addresses = {"protocol": backend.base_url}
    if backend.link_url:
        addresses["Piper Link"] = backend.link_url
    announced = announce(vault.home, RunningProcess("local serve", addresses=addresses))
    settings = backend.environment()
    if args.json:
        answer = {"url": backend.base_url, "link_url": backend.link_url, "env": settings}
        if dashboard:
            answer["dashboard_login_url"] = dashboard.dashboard.login_url
        print(json.dumps(answer))
    else:
        print(f"Local Piper serving the vault in {vault.home}")
        print(f"  protocol:   {backend.base_url}")
        print(f"  Piper Link: {backend.link_url}")
        print("Point a Piper client at it with:")
        for name, value in settings.items():
            print(f"  export {name}={shlex.quote(value)}")  # pasted into a shell as is
        if dashboard:
            dashboard_command.show_login(dashboard.dashboard, open_browser=not args.no_browser)
        print("Stop with Ctrl-C.")
    sys.stdout.flush()
    stop.wait()
    withdraw(announced)
    if dashboard:
        dashboard.stop()
    backend.stop()
    vault.close()
    print("Stopped.", file=sys.stderr)
    return 0


# Commands whose own output names the vault (or that name none: `home` prints only it).
SAY_THEIR_VAULT = {home, init, serve, dashboard_command.run}


def _record(
    vault: Vault,
    outcome: str,
    subject: str,
    *,
    agent: str | None = None,
    action: str = "command_line",
) -> None:
    """A change made here, in the vault's audit table beside the dashboard's."""
    vault.record(
        action,
        outcome,
        client_id=agent,
        user_id=vault.local_user_id,
        subject=subject,
    )


def _read_stdin(what: str) -> str:
    value = sys.stdin.read()
    value = value[:-1] if value.endswith("\n") else value
    if not value:
        raise CommandError(f"the {what} on stdin is empty; nothing was written")
    return value


def _prompt(name: str) -> str:
    try:
        value = getpass.getpass(f"Value of {name!r} (hidden): ")
    except (EOFError, KeyboardInterrupt) as stopped:  # Ctrl-D, Ctrl-C at the prompt
        print(file=sys.stderr)  # the prompt's line was left open
        interrupted = isinstance(stopped, KeyboardInterrupt)
        raise CommandError(
            "no value given; nothing was stored", exit_code=130 if interrupted else 1
        ) from None
    if not value:
        raise CommandError("the value is empty; nothing was written")
    return value
