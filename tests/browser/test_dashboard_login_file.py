"""The way `piper-mcp local dashboard` opens a browser: a file of the user's, not the link.

A browser's command line is readable by every local user, so the dashboard hands the
browser an owner-only page in PIPER_HOME that leads to the one-time link. In Chromium:
that page logs in (the SameSite=Strict cookie goes along, though the way in started at
a file), it is removed once used, and the link in it does not work a second time.
"""

from __future__ import annotations

import stat
import webbrowser

import pytest
from playwright.sync_api import Page, expect

from piper_mcp.local.dashboard import command
from piper_mcp.local.dashboard.command import RunningDashboard


class RecordingBrowser:
    """What `webbrowser` would start: the address it was given, recorded, nothing run."""

    name = "chromium"

    def __init__(self) -> None:
        self.opened: list[str] = []

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        self.opened.append(url)
        return True


def test_the_browser_gets_an_owner_only_file_that_logs_it_in_once(
    running: RunningDashboard, page: Page, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = RecordingBrowser()
    monkeypatch.setattr(webbrowser, "get", lambda using=None: recorder)
    monkeypatch.setattr(webbrowser, "open", recorder.open)
    dashboard = running.dashboard
    command.show_login(dashboard, open_browser=True)

    [opened] = recorder.opened
    assert opened.startswith("file://") and dashboard.sessions.login_token not in opened
    login_file = dashboard.login_file
    assert login_file is not None and opened == login_file.as_uri()
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600

    page.goto(opened)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert not login_file.exists()  # spent: the link in it is of no more use
    page.goto(dashboard.login_url)
    expect(page.get_by_role("heading", name="Not logged in")).to_be_visible()


def test_a_console_browser_is_not_started_in_the_terminal_that_shows_the_link(
    running: RunningDashboard, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = RecordingBrowser()
    recorder.name = "lynx"
    monkeypatch.setattr(webbrowser, "get", lambda using=None: recorder)
    command.show_login(running.dashboard, open_browser=True)
    assert recorder.opened == [] and running.dashboard.login_file is None
    assert running.dashboard.login_url in capsys.readouterr().out
