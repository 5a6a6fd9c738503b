"""`piper-mcp local dashboard` (and `local serve --dashboard`): serve the dashboard on loopback.

Binds 127.0.0.1 only, prints the one login link and opens the browser where one
can be opened (`--no-browser` to only print it). Runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import html
import os
import signal
import sys
import threading
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from piper_mcp.invocation import command
from piper_mcp.local.files import write_private_file
from piper_mcp.local.running import RunningProcess, announce, withdraw
from piper_mcp.network import ListenError, bind, url_of

if TYPE_CHECKING:  # imported when the dashboard starts: `serve` builds this parser too
    from piper_mcp.local.dashboard.app import Dashboard
    from piper_mcp.local.server_thread import ServerThread
    from piper_mcp.local.vault import Vault

# `webbrowser` offers these where no graphical browser is known; they would take over the
# terminal that shows the login link.
CONSOLE_BROWSERS = frozenset({"www-browser", "links", "elinks", "lynx", "w3m"})


def add_arguments(parser: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """The dashboard's own options; `prefix` ("dashboard-") where another command hosts it."""
    parser.add_argument(
        f"--{prefix}port",
        type=int,
        default=0,
        dest="dashboard_port",
        help="the dashboard's port on 127.0.0.1 (0, the default: a free one)",
    )
    parser.add_argument(
        "--no-browser",
        action="store_true",
        help="print the login link only; do not open a browser",
    )


@dataclass
class RunningDashboard:
    """A dashboard served in a background thread; `stop()` ends it."""

    dashboard: Dashboard
    server: ServerThread
    announced: Path | None

    def stop(self) -> None:
        withdraw(self.announced)
        self.server.stop()
        if self.dashboard.login_file is not None:
            self.dashboard.login_file.unlink(missing_ok=True)


def start(vault: Vault, port: int, flag: str = "--port") -> RunningDashboard:
    """Serve the dashboard for `vault` on 127.0.0.1:`port`; `CommandError` if the port is taken.

    `flag`: the command's option that chose the port, for the way out.
    """
    from piper_mcp.local.commands import CommandError
    from piper_mcp.local.dashboard.app import Dashboard
    from piper_mcp.local.dashboard.sessions import Sessions
    from piper_mcp.local.server_thread import ServerThread, Site

    try:
        sock = bind("127.0.0.1", port)
    except ListenError as error:
        raise CommandError(
            f"{error}; choose another with {flag}, or {flag} 0 for a free one"
        ) from None
    origin = url_of(sock)
    dashboard = Dashboard(vault, origin, _audit_path(vault.home), Sessions())
    server = ServerThread([Site(dashboard.asgi, sock)])
    server.start()
    announced = announce(
        vault.home, RunningProcess("local dashboard", addresses={"dashboard": origin})
    )
    return RunningDashboard(dashboard, server, announced)


def show_login(dashboard: Dashboard, *, open_browser: bool) -> None:
    """Print the login link, and open it in a browser where one can be."""
    print(f"Dashboard of the vault in {dashboard.vault.home}")
    print(f"Log in (the link works once, in one browser): {dashboard.login_url}")
    sys.stdout.flush()
    if open_browser and _can_open_browser():
        # Not the link itself: a browser's command line is readable by every local user.
        dashboard.login_file = _login_file(dashboard)
        webbrowser.open(dashboard.login_file.as_uri())


def run(args: argparse.Namespace) -> int:
    """`piper-mcp local dashboard`."""
    from piper_mcp.local.commands import open_vault

    vault = open_vault()
    vault.check()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    running = start(vault, args.dashboard_port)
    show_login(running.dashboard, open_browser=not args.no_browser)
    print("Stop with Ctrl-C.")
    sys.stdout.flush()
    stop.wait()
    running.stop()
    vault.close()
    print("Stopped.", file=sys.stderr)
    return 0


def add_command(group: Any) -> None:
    from piper_mcp.cli import add_command as add

    parser = add(
        group,
        "dashboard",
        "see and decide in a browser: grants, secrets, requests, activity",
        "Serve the local Piper dashboard on 127.0.0.1 and print its login link (it works "
        "once); the browser that opens it may then grant, revoke, decide waiting grant "
        "requests, store and remove secrets and see the activity of every agent. Opens a "
        "browser where it can. Ctrl-C stops it.",
        [command("local", "dashboard"), command("local", "dashboard", "--no-browser")],
        run,
    )
    add_arguments(parser)


def _audit_path(home: Path) -> Path:
    """The MCP server's audit trail beside the vault in `home`, where `serve` writes it
    (unless PIPER_MCP_AUDIT_FILE names another file)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from piper_mcp.local.commands import CommandError
    from piper_mcp.server.audit import FILE_NAME
    from piper_mcp.server.settings import ServeSettings
    from piper_mcp.validation import setting_problems

    try:
        return ServeSettings().audit_file or home / FILE_NAME
    except ValidationError as error:
        raise CommandError(setting_problems(error, ServeSettings)[0]) from None
    except SettingsError as error:
        raise CommandError(str(error)) from None


def _login_file(dashboard: Dashboard) -> Path:
    """An owner-only page in PIPER_HOME that leads this user's browser to the login link;
    removed at login or when the dashboard stops."""
    page = dashboard.vault.home / f"dashboard-login-{os.getpid()}.html"
    link = html.escape(dashboard.login_url, quote=True)
    page.unlink(missing_ok=True)  # a file a killed dashboard of the same pid left
    write_private_file(
        page,
        f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url={link}">'
        f'<title>Local Piper dashboard</title><a href="{link}">Open the dashboard</a>\n'.encode(),
    )
    return page


def _can_open_browser() -> bool:
    """Whether a browser can open beside this terminal: not a console one that takes it over."""
    try:
        browser = webbrowser.get()
    except webbrowser.Error:  # none known: a server, a container, a test
        return False
    return getattr(browser, "name", "") not in CONSOLE_BROWSERS
