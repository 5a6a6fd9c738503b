"""The local dashboard in a real Chromium, as a person runs it and uses it.

`piper-mcp local dashboard` is started as a person starts it, in an environment with
no display, no BROWSER and no terminal type (so it opens no browser and only prints
its login link), and stopped with Ctrl-C. The person logs in with the printed link
and works in Chromium: stores a secret, grants it, revokes it, decides the grant
request a model's waiting call raised, watches the pages follow the command line and
reads the activity charts. The models are real MCP clients (the SDK's `Client`,
running `serve --local` over stdio on the same vault).

On every page the browser must log no console error (a Content-Security-Policy
violation is one) and no script error, and nothing the browser receives, nothing the
dashboard prints and no audit trail may hold a secret value.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mcp import Client, StdioServerParameters
from mcp.client import ClientRequestContext
from mcp.types import (
    CallToolResult,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
)
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from piper_mcp.local.vault import Vault
from tests import processes
from tests.browser import Screenshot, in_a_thread
from tests.browser.conftest import TIMEOUT_MS

AGENT = "local-agent"
# Declared by the agent, granted once and then revoked: a call for it raises a request.
ASKED_FOR = "github_token"
STORED = "My GitHub token"
STORED_VALUE = "ghp_canary-dashboard-browser-0d5f"
# What the person types into the dashboard in the first test.
VARIABLE = "openai_api_key"
TYPED = "My OpenAI key"
TYPED_VALUE = "sk-canary-dashboard-browser-9a41"
CANARIES = (STORED_VALUE, TYPED_VALUE)
LOGIN = re.compile(r"http://127\.0\.0\.1:\d+/dashboard-[\w-]+/login\?token=[\w-]+")
# What a host or a server gives a process: no display, no terminal type, no BROWSER.
NO_BROWSER_HERE = {"DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "TERM"}
# A wait that includes starting a `piper-mcp` command (seconds on a busy machine).
LONG_MS = 60_000


@pytest.fixture
def piper_home(tmp_path: Path) -> Path:
    """`local-agent` declares `github_token` (granted once, then revoked); a secret is stored."""
    home = tmp_path / "piper-home"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret(STORED, STORED_VALUE, owner_user_id=me)
    vault.grant(me, AGENT, ASKED_FOR, STORED)
    vault.revoke(me, AGENT, ASKED_FOR)
    vault.close()
    return home


@pytest.fixture
def env(piper_home: Path) -> dict[str, str]:
    """The environment of every `piper-mcp` process here: the vault, and no way to a browser."""
    kept = {name: value for name, value in os.environ.items() if name not in NO_BROWSER_HERE}
    return kept | {"PIPER_HOME": str(piper_home)}


@dataclass
class RunningDashboard:
    """`piper-mcp local dashboard` running; `stop()` is Ctrl-C."""

    process: subprocess.Popen[str]
    login_link: str
    printed: str  # its output up to the login link

    @property
    def origin(self) -> str:
        return self.login_link.split("/login")[0]

    def stop(self) -> str:
        """Ctrl-C; it stops cleanly. Everything it printed, stdout then stderr."""
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=20)
        assert (self.process.returncode, err) == (0, "Stopped.\n"), err
        return self.printed + out + err


@pytest.fixture
def dashboard(env: dict[str, str]) -> Iterator[RunningDashboard]:
    process = subprocess.Popen(
        [sys.executable, "-m", "piper_mcp", "local", "dashboard"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    printed = ""
    for line in process.stdout:
        printed += line
        if found := LOGIN.search(line):
            break
    else:
        process.kill()
        raise AssertionError(f"no login link: {printed!r} {process.communicate()!r}")
    running = RunningDashboard(process, found.group(0), printed)
    yield running
    if process.poll() is None:
        assert holding_a_value([("its output", running.stop())]) == []


@pytest.fixture
def page(browser: Browser, tmp_path: Path) -> Iterator[Page]:
    """conftest's `page`, in a context that records every response it receives (a HAR file).

    Playwright's driver keeps each body as it arrives, also of pages a reload or a form
    has since left; after the test, none of them may hold a secret value.
    """
    received = tmp_path / "received.har"
    context = browser.new_context(record_har_path=received, record_har_content="embed")
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()
    responses = [
        (entry["request"]["url"], entry["response"]["content"].get("text", ""))
        for entry in json.loads(received.read_text())["log"]["entries"]
    ]
    assert any("local Piper dashboard" in body for _, body in responses)  # the pages are there
    assert holding_a_value(responses) == []


@dataclass
class Browsing:
    """A person logged in to the dashboard, and what their browser complained of."""

    page: Page
    origin: str
    complaints: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.complaints.append(f"script: {error}"))

    def open(self, path: str) -> None:
        """Go to `path`'s page (as its navigation link does)."""
        self.page.goto(self.origin + path)
        expect(self.page.locator("h1")).to_be_visible()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":  # a Content-Security-Policy violation among them
            self.complaints.append(f"console: {message.text}")


@pytest.fixture
def browsing(page: Page, dashboard: RunningDashboard) -> Iterator[Browsing]:
    """Logged in with the printed link, on the overview; no console or script error after."""
    person = Browsing(page, dashboard.origin)
    person.watch()
    page.goto(dashboard.login_link)
    expect(page).to_have_url(dashboard.origin + "/")
    expect(page.locator("h1")).to_have_text("Overview")
    yield person
    assert person.complaints == []


def skip_to_the_page(page: Page) -> None:
    """Tab to the skip link and follow it: the keyboard's focus is on the page, past the
    navigation (each step waited for, so no key is pressed into a page still moving)."""
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the page")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def holding_a_value(places: Iterable[tuple[str, str]]) -> list[str]:
    """The names of the places (name, text) whose text holds a secret value; never the value."""
    return [name for name, text in places if any(value in text for value in CANARIES)]


def get_secret(
    env: dict[str, str], *variables: str, asked: Future[str] | None = None
) -> Future[list[CallToolResult]]:
    """`get_secret` for each variable, from one MCP session of a host on `serve --local`.

    With `asked`, the host can show a grant link (URL-mode elicitation): it accepts at
    once without opening it, as a host that shows the link to the person does, and the
    call waits for the decision; `asked` gets the link.
    """

    async def show_the_link(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams) and asked is not None
        asked.set_result(params.url)  # a second question would fail here
        return ElicitResult(action="accept")

    async def calls() -> list[CallToolResult]:
        server = StdioServerParameters(
            command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=env
        )
        async with Client(server, elicitation_callback=show_the_link if asked else None) as client:
            return [
                await client.call_tool("get_secret", {"variable": variable})
                for variable in variables
            ]

    return in_a_thread(calls)


def answered(call: Future[list[CallToolResult]]) -> CallToolResult:
    [result] = call.result(timeout=60)
    return result


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(part, "text", "") for part in result.content)


def piper_mcp(env: dict[str, str], *args: str) -> None:
    """`piper-mcp ARGS...` at the command line; it succeeds."""
    done = processes.piper_mcp(*args, env=env)
    assert done.returncode == 0, done.stderr


def next_poll(page: Page) -> None:
    """Wait until the page's script has asked /changes again."""
    with page.expect_response(lambda response: urlsplit(response.url).path.endswith("/changes")):
        pass


def test_a_person_adds_a_secret_grants_it_and_revokes_it(
    piper_home: Path,
    env: dict[str, str],
    dashboard: RunningDashboard,
    browsing: Browsing,
    page: Page,
    screenshot: Screenshot,
) -> None:
    expect(page.locator("#agents")).to_contain_text(AGENT)
    screenshot(page, "overview")

    page.get_by_role("link", name="Secrets", exact=True).click()
    expect(page.locator("h1")).to_have_text("Secrets")
    page.locator("#secret-name").fill(TYPED)
    page.locator("#secret-value").fill(TYPED_VALUE)
    expect(page.locator("#secret-value")).to_have_attribute("type", "password")
    page.get_by_role("button", name="Store", exact=True).click()
    expect(page.locator("#notice")).to_contain_text(f"Stored '{TYPED}'")
    expect(page.locator("#secrets")).to_contain_text(TYPED)
    screenshot(page, "secrets")

    page.get_by_role("link", name="Grants", exact=True).click()
    expect(page.locator("h1")).to_have_text("Grants")
    page.locator("#grant-agent").select_option(AGENT)
    page.locator("#grant-variable").fill(VARIABLE)
    page.locator("#grant-secret").select_option(TYPED)
    page.get_by_role("button", name="Grant", exact=True).click()
    expect(page.locator("#notice")).to_contain_text(f"Granted '{TYPED}' to '{AGENT}'")
    expect(page.locator("#grants")).to_contain_text(VARIABLE)

    result = answered(get_secret(env, VARIABLE))
    assert result.is_error is False, text_of(result)
    assert (result.structured_content or {}).get("source") == "piper_sts"  # holds a token

    browsing.open("/grants")
    page.get_by_role("button", name=f"Revoke {VARIABLE} from {AGENT}").click()
    expect(page.locator("#notice")).to_contain_text(f"Revoked '{VARIABLE}' from '{AGENT}'")
    expect(page.locator("#grants")).to_have_count(0)  # nothing granted any more
    result = answered(get_secret(env, VARIABLE))
    assert result.is_error is True
    browsing.open("/grants")
    screenshot(page, "grants")

    said = dashboard.stop()
    vault = Vault.open(piper_home, only_to_read=True)
    audited = [(f"vault audit row {n}", repr(row)) for n, row in enumerate(vault.audit(1000))]
    vault.close()
    trail = (piper_home / "audit.jsonl").read_text()
    assert any("dashboard_secret" in row for _, row in audited) and VARIABLE in trail
    assert holding_a_value([("dashboard output", said), ("audit.jsonl", trail), *audited]) == []


def decide_a_waiting_request(
    env: dict[str, str], browsing: Browsing, page: Page, screenshot: Screenshot, button: str
) -> tuple[str, CallToolResult]:
    """A model's call raises a grant request, the open Grants page shows it; press `button`.

    What the page then says, and what the call is answered.
    """
    browsing.open("/grants")
    expect(page.locator("#requests")).to_contain_text("No grant requests are waiting")
    asked: Future[str] = Future()
    call = get_secret(env, ASKED_FOR, asked=asked)
    asked.result(timeout=60)  # the host showed a link (the request is in the vault by then)
    request = page.locator("form.request")
    expect(request).to_be_visible()  # the page reloaded itself: nobody reloads it here
    expect(request).to_contain_text(f"The agent {AGENT} asks for the variable {ASKED_FOR}")
    assert not call.done()  # the call waits
    screenshot(page, "grants-waiting")
    request.get_by_label("Grant a stored secret").select_option(STORED)
    request.get_by_role("button", name=button, exact=True).click()
    # Read before the call ends: what it writes to the trails redraws the page, without it.
    expect(page.locator("#notice")).to_be_visible()
    said = page.locator("#notice").inner_text()
    expect(page.locator("form.request")).to_have_count(0)
    return said, answered(call)


def test_a_waiting_request_is_approved_in_the_dashboard_and_the_call_is_answered(
    piper_home: Path, env: dict[str, str], browsing: Browsing, page: Page, screenshot: Screenshot
) -> None:
    said, result = decide_a_waiting_request(env, browsing, page, screenshot, "Approve")
    assert said.startswith(f"Granted '{STORED}' to '{AGENT}' as '{ASKED_FOR}'")
    assert result.is_error is False, text_of(result)
    assert (result.structured_content or {}).get("source") == "piper_sts"
    vault = Vault.open(piper_home)
    assert vault.grant_requests() == []
    [grant] = vault.grants(client_id=AGENT)
    vault.close()
    assert (grant.variable, grant.secret_name) == (ASKED_FOR, STORED)


def test_a_denied_request_answers_the_call_with_a_refusal(
    piper_home: Path, env: dict[str, str], browsing: Browsing, page: Page, screenshot: Screenshot
) -> None:
    said, result = decide_a_waiting_request(env, browsing, page, screenshot, "Deny")
    assert said == f"Denied '{AGENT}' the variable '{ASKED_FOR}'."
    assert result.is_error is True
    assert "the user denied the grant." in text_of(result)
    vault = Vault.open(piper_home)
    assert vault.grant_requests() == []
    assert vault.grants(client_id=AGENT) == []
    vault.close()


def test_the_page_follows_the_command_line(
    env: dict[str, str], browsing: Browsing, page: Page
) -> None:
    matrix = page.locator("#grant-matrix")
    expect(matrix.locator("td.ungranted")).to_have_text("not granted")
    page.evaluate("window.drawn = 'once'")  # gone if the page reloads
    next_poll(page)
    next_poll(page)
    assert page.evaluate("window.drawn") == "once"  # nothing changed: it stays as it is

    piper_mcp(env, "local", "grant", AGENT, ASKED_FOR, STORED)
    expect(matrix.locator("td.granted")).to_have_text(STORED)  # nobody reloads it here
    assert page.evaluate("window.drawn") is None

    browsing.open("/grants")
    typing = page.locator("#grant-variable")
    typing.fill("half-typed")
    page.evaluate("window.drawn = 'once'")
    expect(page.locator("#stale")).to_be_hidden()
    piper_mcp(env, "local", "revoke", AGENT, ASKED_FOR)
    expect(page.locator("#stale")).to_be_visible()  # instead of reloading
    expect(typing).to_have_value("half-typed")
    expect(page.locator("#grants")).to_contain_text(ASKED_FOR)  # still as it was drawn
    assert page.evaluate("window.drawn") == "once"
    page.locator("#stale").get_by_role("link", name="Reload it").click()
    expect(page.locator("#grants")).to_have_count(0)


def test_the_page_keeps_the_keyboards_place_when_the_vault_changes(
    env: dict[str, str], browsing: Browsing, page: Page
) -> None:
    """A plain reload would send a keyboard or screen-reader user back to the top."""
    browsing.open("/secrets")
    skip_to_the_page(page)
    page.keyboard.press("Tab")
    remove = page.get_by_role("button", name=f"Remove {STORED}")
    expect(remove).to_be_focused()
    page.set_viewport_size({"width": 800, "height": 300})  # short: the page scrolls
    page.evaluate("window.scrollTo(0, 40); window.drawn = 'once'")
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0
    # Drawn again, with the change; the wait includes starting the command.
    with page.expect_event("load", timeout=LONG_MS):
        piper_mcp(env, "local", "grant", AGENT, ASKED_FOR, STORED)
    assert page.evaluate("window.drawn") is None
    expect(remove).to_be_focused()
    assert page.evaluate("window.scrollY") == scrolled
    expect(page.locator("#stale")).to_be_hidden()


def test_an_agent_at_work_does_not_redraw_a_page_that_does_not_show_its_work(
    env: dict[str, str], browsing: Browsing, page: Page
) -> None:
    """A call adds to the audit trails only, which the Secrets page does not show.

    Redrawing it anyway would take away what the page said was just done and where the
    keyboard was, every time an agent works: two polls after the call, both are there.
    """
    browsing.open("/secrets")
    page.locator("#secret-name").fill(TYPED)
    page.locator("#secret-value").fill(TYPED_VALUE)
    page.locator("#secret-value").press("Enter")
    expect(page.locator("#notice")).to_contain_text(f"Stored '{TYPED}'")
    remove = page.get_by_role("button", name=f"Remove {TYPED}")
    remove.focus()
    page.evaluate("window.drawn = 'once'")

    [refused] = get_secret(env, ASKED_FOR).result(timeout=60)
    assert refused.is_error is True
    next_poll(page)
    next_poll(page)
    assert page.evaluate("window.drawn") == "once", "the page was drawn again"
    expect(page.locator("#notice")).to_contain_text(f"Stored '{TYPED}'")
    expect(remove).to_be_focused()


def test_the_activity_page_charts_what_agents_did(
    env: dict[str, str], browsing: Browsing, page: Page, screenshot: Screenshot
) -> None:
    with page.expect_event("load", timeout=LONG_MS):  # the overview shows the grant
        piper_mcp(env, "local", "grant", AGENT, VARIABLE, STORED)
    # Granted, then not granted: the host cannot show a grant link, so the call is refused.
    results = get_secret(env, VARIABLE, ASKED_FOR).result(timeout=60)
    assert [result.is_error for result in results] == [False, True]

    page.get_by_role("link", name="Activity", exact=True).click()
    expect(page.locator("h1")).to_have_text("Activity")
    expect(page.locator("#calls-chart rect.ok").first).to_be_visible()
    expect(page.locator("#calls-chart rect.refused").first).to_be_visible()
    lanes = page.locator("#lanes-chart text.lane-label")
    expect(lanes.filter(has_text=f"{AGENT} · {VARIABLE}")).to_have_count(1)
    expect(lanes.filter(has_text=f"{AGENT} · {ASKED_FOR}")).to_have_count(1)
    rows = page.locator("#events tbody tr")
    expect(rows.filter(has=page.locator(".outcome.ok")).first).to_be_visible()
    expect(rows.filter(has=page.locator(".outcome.refused")).first).to_be_visible()
    screenshot(page, "activity")

    page.get_by_label("Outcome", exact=True).select_option("refused")
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page).to_have_url(re.compile(r"[?&]outcome=refused(&|$)"))
    expect(rows.filter(has=page.locator(".outcome.ok"))).to_have_count(0)
    refused = rows.filter(has=page.locator(".outcome.refused"))
    expect(refused.filter(has_text=ASKED_FOR).first).to_be_visible()
    assert refused.count() == rows.count()
    expect(page.locator("#calls-chart rect.ok")).to_have_count(0)


def test_the_keyboard_reaches_everything_and_submits_a_form(browsing: Browsing, page: Page) -> None:
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to the page")).to_be_focused()
    navigation = page.get_by_role("navigation", name="Dashboard pages")
    for name in ("Overview", "Grants", "Secrets"):
        page.keyboard.press("Tab")
        expect(navigation.get_by_role("link", name=name, exact=True)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Secrets")

    skip_to_the_page(page)
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name=f"Remove {STORED}")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#secret-name")).to_be_focused()
    page.keyboard.type(TYPED)
    page.keyboard.press("Tab")
    expect(page.locator("#secret-value")).to_be_focused()
    page.keyboard.type(TYPED_VALUE)
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text(f"Stored '{TYPED}'")
    expect(page.locator("#secrets")).to_contain_text(TYPED)
