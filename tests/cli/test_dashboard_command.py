"""`piper-mcp local dashboard` and `local serve --dashboard` as a person starts them.

The console command in a minimal environment (no display, no browser known, as on a
server or in CI): one login link printed, pages served over loopback to the browser
that used it, Ctrl-C or SIGTERM a clean stop that leaves nothing behind.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import Cli, Serving

LOGIN = re.compile(r"http://127\.0\.0\.1:(\d+)/dashboard-[\w-]+/login\?token=[\w-]+")


@pytest.fixture
def headless_env(cli_env: dict[str, str]) -> dict[str, str]:
    """What a host or a server gives: no display, no terminal type, no BROWSER."""
    gone = {"DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "TERM"}
    return {name: value for name, value in cli_env.items() if name not in gone}


@pytest.fixture
def dashboard(headless_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "piper_mcp", "local", "dashboard", *args],
            env=headless_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def login_link(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        if found := LOGIN.search(line):
            return found.group(0)
        if "Stop with" in line:
            break
    raise AssertionError(f"no login link: {process.communicate()}")


@contextmanager
def logged_in(link: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=link.split("/login")[0], timeout=20) as browser:
        assert browser.get(link).status_code == 200
        yield browser


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_one_link_serves_the_pages_until_stopped(
    cli: Cli,
    piper_home: Path,
    dashboard: Callable[..., subprocess.Popen[str]],
    signum: int,
) -> None:
    cli("local", "init")
    process = dashboard()
    link = login_link(process)
    with logged_in(link) as browser:
        overview = browser.get("/")
        assert overview.status_code == 200
        assert str(piper_home) in overview.text and "local dashboard" in overview.text
        assert browser.get("/activity").status_code == 200
    assert list((piper_home / "running").glob("*.json"))  # announced while it runs
    process.send_signal(signum)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 0
    assert err == "Stopped.\n" and "Traceback" not in out
    assert list((piper_home / "running").glob("*.json")) == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(link, timeout=5)


def test_a_taken_port_is_one_line_naming_it_and_the_way_out(
    cli: Cli, dashboard: Callable[..., subprocess.Popen[str]]
) -> None:
    cli("local", "init")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = dashboard("--port", str(port))
        out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and out == ""
    assert err.count("\n") == 1 and str(port) in err and "--port 0" in err


def test_without_a_vault_it_says_how_to_make_one_and_makes_none(
    piper_home: Path, dashboard: Callable[..., subprocess.Popen[str]]
) -> None:
    process = dashboard()
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and out == ""
    assert err.count("\n") == 1 and "local init" in err and str(piper_home) in err
    assert not (piper_home / "vault.sqlite3").exists()


def test_local_serve_serves_the_dashboard_beside_the_protocol(
    cli: Cli, serve_local: Callable[..., Serving]
) -> None:
    cli("local", "init")
    serving = serve_local("--dashboard", "--no-browser")
    link = serving.info["dashboard_login_url"]
    assert LOGIN.fullmatch(link)
    with logged_in(link) as browser:
        overview = browser.get("/").text
    assert "local serve" in overview and serving.info["link_url"] in overview
    assert serving.stop() == (0, "Stopped.\n")


def test_the_help_names_the_command_and_its_options(cli: Cli) -> None:
    done = cli("local", "dashboard", "--help")
    assert done.code == 0
    assert "--no-browser" in done.out and "--port" in done.out and "works once" in done.out
    assert "local dashboard --no-browser" in done.out  # the example


def test_local_serve_with_a_taken_dashboard_port_stops_with_one_line_and_leaves_nothing(
    cli: Cli, cli_process: Cli, piper_home: Path
) -> None:
    cli("local", "init")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli_process(
            "local", "serve", "--port", "0", "--link-port", "0", "--dashboard",
            "--dashboard-port", str(port), "--no-browser",
        )  # fmt: skip
    assert done.code == 1 and done.out == ""
    assert done.err.count("\n") == 1 and str(port) in done.err and "Traceback" not in done.err
    assert "choose another with --dashboard-port, or --dashboard-port 0" in done.err
    assert list((piper_home / "running").glob("*.json")) == []
