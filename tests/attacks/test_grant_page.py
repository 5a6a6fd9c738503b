"""The grant page against everyone but the user: other local processes, other sites, rebinding.

Each attack runs over real loopback HTTP against the page `serve --local` serves, and
ends with the vault unchanged: no grant, no new secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from piper_mcp.local.errors import VaultError
from piper_mcp.local.grant_requests import GrantRequest
from piper_mcp.local.vault import MAX_WAITING_REQUESTS, Vault
from piper_mcp.server.local_piper import LocalPiper

AGENT = "page-agent"
VARIABLE = "stripe_key"
SECRET = "Stripe key"
CANARY = "sk_live_canary-grant-page-0c4e71"


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPiper]:
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    vault, _ = Vault.init(home)
    vault.add_agent(AGENT, None, owner_user_id=vault.local_user_id, variables=[VARIABLE])
    vault.put_secret(SECRET, CANARY, owner_user_id=vault.local_user_id)
    vault.close()
    piper = LocalPiper(AGENT).open()
    yield piper
    piper.stop()


@pytest.fixture
def request_(local: LocalPiper) -> GrantRequest:
    return local.grant_requests.open(AGENT, VARIABLE, "Attacked Client 1.0")


def link(local: LocalPiper, request: GrantRequest, key: str | None = None) -> str:
    return f"{local.grants.page_url}/grant/{request.request_id}?key={key or request.key}"


def opened(browser: httpx.Client, url: str) -> str:
    page = browser.get(url)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def granted(local: LocalPiper) -> bool:
    vault = Vault.open(local.home)
    try:
        return bool(vault.grants(client_id=AGENT))
    finally:
        vault.close()


def post(browser: httpx.Client, local: LocalPiper, request: GrantRequest, **form: str) -> int:
    origin = form.pop("origin", local.grants.page_url)
    headers = {"Origin": origin} if origin else {}
    url = f"{local.grants.page_url}/grant/{request.request_id}"
    return browser.post(
        url, data={"action": "grant", "secret": SECRET, **form}, headers=headers
    ).status_code


def test_the_user_path_works_so_the_refusals_below_mean_something(
    local: LocalPiper, request_: GrantRequest
) -> None:
    with httpx.Client() as browser:
        csrf = opened(browser, link(local, request_))
        assert post(browser, local, request_, csrf=csrf) == 200
    assert granted(local)


def test_without_the_links_key_nothing_opens(local: LocalPiper, request_: GrantRequest) -> None:
    with httpx.Client() as browser:
        assert (
            browser.get(f"{local.grants.page_url}/grant/{request_.request_id}").status_code == 403
        )
        assert browser.get(link(local, request_, key="guessed-" + "a" * 36)).status_code == 403
    assert not granted(local)


def test_a_link_opens_once(local: LocalPiper, request_: GrantRequest) -> None:
    url = link(local, request_)
    with httpx.Client() as user, httpx.Client() as other_process:
        opened(user, url)
        assert other_process.get(url).status_code == 403  # replayed from history or a log
        # The other process cannot decide it with the user's csrf either, without the cookie.
        assert post(other_process, local, request_, csrf="x") == 403
    assert not granted(local)


def test_a_form_posted_from_another_site_changes_nothing(
    local: LocalPiper, request_: GrantRequest
) -> None:
    with httpx.Client() as browser:
        csrf = opened(browser, link(local, request_))
        assert post(browser, local, request_, csrf=csrf, origin="https://evil.example") == 403
        assert post(browser, local, request_, csrf=csrf, origin="null") == 403
        assert post(browser, local, request_, csrf=csrf, origin="") == 403  # no Origin at all
        url = f"{local.grants.page_url}/grant/{request_.request_id}"
        cross_site = browser.post(
            url,
            data={"action": "grant", "secret": SECRET, "csrf": csrf},
            headers={"Origin": local.grants.page_url, "Sec-Fetch-Site": "cross-site"},
        )
        assert cross_site.status_code == 403
    assert not granted(local)


def test_a_post_without_the_csrf_token_changes_nothing(
    local: LocalPiper, request_: GrantRequest
) -> None:
    with httpx.Client() as browser:
        opened(browser, link(local, request_))
        assert post(browser, local, request_) == 403
        assert post(browser, local, request_, csrf="wrong") == 403
    assert not granted(local)


def test_a_rebound_host_name_is_refused(local: LocalPiper, request_: GrantRequest) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, and the browser sends its name."""
    with httpx.Client(headers={"Host": "evil.example"}) as browser:
        assert browser.get(link(local, request_)).status_code == 421
    with httpx.Client() as browser:
        opened(browser, link(local, request_))  # the link still works for the user
    assert not granted(local)


def test_the_page_cannot_be_framed_cached_or_leak_its_link(
    local: LocalPiper, request_: GrantRequest
) -> None:
    with httpx.Client() as browser:
        page = browser.get(link(local, request_))
    headers = page.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert headers["referrer-policy"] == "same-origin"
    cookie = headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert f"path=/grant/{request_.request_id}".lower() in cookie


def test_the_page_never_shows_a_value(local: LocalPiper, request_: GrantRequest) -> None:
    with httpx.Client() as browser:
        page = browser.get(link(local, request_))
        assert SECRET in page.text and CANARY not in page.text


def test_a_decided_request_cannot_be_decided_again(
    local: LocalPiper, request_: GrantRequest
) -> None:
    with httpx.Client() as browser:
        csrf = opened(browser, link(local, request_))
        assert post(browser, local, request_, csrf=csrf, action="deny") == 200
        assert post(browser, local, request_, csrf=csrf) == 403
    assert not granted(local)


def test_a_flood_of_requests_is_bounded_and_never_pushes_out_the_users_own(
    local: LocalPiper,
) -> None:
    """A model that calls for an ungranted variable in a loop opens a bounded number of
    requests, and the one the user is deciding keeps working."""
    first = local.grant_requests.open(AGENT, VARIABLE, "Flooding Client")
    for _ in range(MAX_WAITING_REQUESTS - 1):
        latest = local.grant_requests.open(AGENT, VARIABLE, "Flooding Client" * 100)
    with pytest.raises(VaultError, match="grant requests of this server are waiting already"):
        local.grant_requests.open(AGENT, VARIABLE, "Flooding Client")
    vault = Vault.open(local.home)
    try:
        waiting = vault.grant_requests()
        assert len(waiting) == MAX_WAITING_REQUESTS
        assert {len(r.client) for r in waiting} == {len("Flooding Client"), 200}  # cut
        local.grant_requests.withdraw(latest)  # its call ended: room for one more
        assert len(vault.grant_requests()) == MAX_WAITING_REQUESTS - 1
        local.grant_requests.open(AGENT, VARIABLE, "Flooding Client")
    finally:
        vault.close()
    with httpx.Client() as browser:
        assert browser.get(link(local, first)).status_code == 200  # the user's still opens
