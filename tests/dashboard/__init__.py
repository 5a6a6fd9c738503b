"""Tests of the local dashboard, and what they share with its attack tests.

A vault to show (`seeded_vault`), what a person's browser does (`log_in`, `act`), what
a page says (`csrf_of`, `notice_of`) and what the vault holds (`vault_state`), to
prove that a refused or failed action changed nothing.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from piper_mcp.local.vault import Agent, Grant, SecretInfo, StoredGrantRequest, Vault

AGENT = "agent-research"
OTHER_AGENT = "agent-writer"
VARIABLE = "openai_api_key"
OTHER_VARIABLE = "database_url"
SECRET = "Ada's OpenAI key"
SECRET_VALUE = "sk-canary-dashboard-seeded-4b7e21"
CLIENT = "Claude Desktop 1.2"


def seeded_vault(home: Path) -> Vault:
    """Two agents; the research one declares two variables and is granted the first."""
    vault, _ = Vault.init(home)
    user = vault.local_user_id
    vault.add_agent(AGENT, None, owner_user_id=user, variables=[VARIABLE, OTHER_VARIABLE])
    vault.add_agent(OTHER_AGENT, None, owner_user_id=user, variables=[])
    vault.put_secret(SECRET, SECRET_VALUE, owner_user_id=user)
    vault.grant(user, AGENT, VARIABLE, SECRET)
    return vault


def waiting_request(
    vault: Vault,
    request_id: str = "request-1",
    *,
    agent: str = AGENT,
    variable: str = OTHER_VARIABLE,
    client: str = CLIENT,
    expires_in: float = 300.0,
) -> StoredGrantRequest:
    """A grant request as `serve --local` keeps it while the call that raised it waits."""
    now = time.time()
    request = StoredGrantRequest(
        request_id, agent, variable, client, now - 1, now + expires_in, None, None
    )
    vault.open_grant_request(request)
    return request


@dataclass(frozen=True)
class VaultState:
    """Everything an action could change; values only as hashes, so a failure prints none."""

    agents: list[Agent]
    secrets: list[SecretInfo]
    values: dict[str, str]
    grants: list[Grant]
    requests: list[StoredGrantRequest]


def vault_state(vault: Vault) -> VaultState:
    secrets = vault.secrets()
    return VaultState(
        agents=vault.agents(),
        secrets=secrets,
        values={
            secret.name: hashlib.sha256(
                (vault.secret_value(secret.secret_id) or "").encode()
            ).hexdigest()
            for secret in secrets
        },
        grants=vault.grants(),
        requests=vault.grant_requests(),
    )


def value_of(vault: Vault, name: str) -> str | None:
    secret = vault.find_secret(name)
    return None if secret is None else vault.secret_value(secret.secret_id)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def notice_of(page: str) -> str | None:
    """The notice an action left for this page, unescaped; None if there is none."""
    found = re.search(r'<p class="notice (done|problem)"[^>]*id="notice">([^<]*)</p>', page)
    return None if found is None else f"{found.group(1)}: {html.unescape(found.group(2))}"


def log_in(browser: httpx.Client, login_url: str) -> str:
    """Open the login link as the user's browser does: the session's CSRF token."""
    page = browser.get(login_url, follow_redirects=True)
    assert page.status_code == 200, page.text
    pages = login_url.split("/login", 1)[0]
    return csrf_of(browser.get(f"{pages}/secrets").text)


def act(
    browser: httpx.Client,
    pages: str,
    path: str,
    csrf: str | None,
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    """Post a dashboard form from the dashboard's own page; the answer unfollowed.

    `pages`: where the dashboard's pages are (`Dashboard.pages`: its origin and path).
    """
    form = {"csrf": csrf, **fields} if csrf is not None else fields
    scheme, host, *_ = urlsplit(pages)
    return browser.post(
        f"{pages}{path}",
        data=form,
        headers={
            "Origin": f"{scheme}://{host}",
            "Sec-Fetch-Site": "same-origin",
            **(headers or {}),
        },
        follow_redirects=False,
    )
