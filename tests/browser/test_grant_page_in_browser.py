"""The local grant page in a real Chromium: a person grants what a model's call lacks.

`serve --local` over stdio, started by the SDK's client (which supports URL-mode
elicitation) as a host starts it; the client, like a host, opens the link it is
sent and answers at once, and the call waits for the grant. The person's part is
done in the browser: choose the stored secret, press Grant. This is where the
page's guards meet a real browser (its session cookie, CSRF field, the Origin and
Sec-Fetch-Site a form post sends, the Content-Security-Policy) rather than an HTTP
client playing one, as in tests/cli/test_grant_just_in_time.py.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.client import ClientRequestContext
from mcp.types import (
    CallToolResult,
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
)
from playwright.sync_api import ConsoleMessage, Page, expect

from piper_mcp.local.vault import Vault
from tests.browser import Screenshot, in_a_thread

VARIABLE = "github_token"
SECRET = "My GitHub token"
VALUE = "ghp_canary-browser-grant-3e8a"
OTHER_SECRET = "My GitLab token"
OTHER_VALUE = "glpat-canary-browser-grant-71c4"


@pytest.fixture
def piper_home(tmp_path: Path) -> Path:
    """`local-agent` declares `github_token` (granted once, then revoked); two secrets stored."""
    home = tmp_path / "piper-home"
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.put_secret(SECRET, VALUE, owner_user_id=me)
    vault.put_secret(OTHER_SECRET, OTHER_VALUE, owner_user_id=me)
    vault.grant(me, "local-agent", VARIABLE, OTHER_SECRET)
    vault.revoke(me, "local-agent", VARIABLE)
    vault.close()
    return home


def call_as_a_host(piper_home: Path, link: Future[str]) -> Future[CallToolResult]:
    """`get_secret` from a host that hands the grant link to the browser (`link`)."""

    async def open_in_the_browser(
        context: ClientRequestContext, params: ElicitRequestParams
    ) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        link.set_result(params.url)  # a second question would fail here
        return ElicitResult(action="accept")

    async def call() -> CallToolResult:
        server = StdioServerParameters(
            command=sys.executable,
            args=["-m", "piper_mcp", "serve", "--local"],
            env={**os.environ, "PIPER_HOME": str(piper_home)},
        )
        async with Client(server, elicitation_callback=open_in_the_browser) as client:
            return await client.call_tool("get_secret", {"variable": VARIABLE})

    return in_a_thread(call)


def test_a_person_grants_a_stored_secret_and_the_call_is_answered(
    piper_home: Path, page: Page, screenshot: Screenshot
) -> None:
    link: Future[str] = Future()
    call = call_as_a_host(piper_home, link)
    asked_or_done: list[Future[Any]] = [link, call]
    wait(asked_or_done, timeout=60, return_when=FIRST_COMPLETED)
    if not link.done():
        raise AssertionError(f"no grant link was sent; the call: {call.result(timeout=0)}")
    complaints: list[str] = []
    page.on("console", lambda message: complaints.extend(_complaint(message)))

    page.goto(link.result())
    expect(page.get_by_role("heading")).to_have_text("Grant a secret to an agent")
    expect(page.locator("main")).to_contain_text(VARIABLE)
    page.get_by_label("Grant a stored secret").select_option(SECRET)
    screenshot(page, "chosen")
    page.get_by_role("button", name="Grant", exact=True).click()
    expect(page.get_by_role("heading")).to_have_text("Granted")
    screenshot(page, "granted")

    result = call.result(timeout=60)
    assert result.is_error is False, result.content
    source = (result.structured_content or {}).get("source")  # the answer holds a token
    assert source == "piper_sts"
    vault = Vault.open(piper_home, only_to_read=True)
    granted = vault.grant_for(vault.local_user_id, "local-agent", VARIABLE)
    vault.close()
    assert granted is not None and granted.secret_name == SECRET  # the one chosen
    assert complaints == []  # the page's own stylesheet loads under its policy
    shown = page.content()
    assert VALUE not in shown and OTHER_VALUE not in shown


def _complaint(message: ConsoleMessage) -> list[str]:
    """A console error (a Content-Security-Policy violation among them), as a list."""
    return [message.text] if message.type == "error" else []
