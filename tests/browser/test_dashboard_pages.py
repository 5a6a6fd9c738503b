"""Each dashboard page in Chromium over a vault in daily use: what it shows, as pictures.

A vault with three agents, their secrets and grants, a grant request waiting and a day
of activity in both audit trails (written as the MCP server and the backend write
them). Each page is checked for what a person looks for there, and photographed:
docs/images/dashboard-*.png are these screenshots.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from piper_mcp.local.dashboard.command import RunningDashboard
from piper_mcp.local.vault import AuditEntry, StoredGrantRequest, Vault
from tests.browser import Screenshot

AGENTS = {
    "local-agent": {"openai_api_key": "OpenAI (work)", "github_token": "GitHub (bot)"},
    "research": {"openai_api_key": "OpenAI (research)", "serpapi_key": "SerpAPI"},
    "ci-bot": {"github_token": "GitHub (bot)", "npm_token": None},  # npm_token: not granted
}
WAITING = StoredGrantRequest(
    "req-7Qm2", "ci-bot", "npm_token", "Claude Code 2.1", 0.0, 0.0, None, None
)


def day_of_activity(vault: Vault, trail: Path, now: float) -> None:
    """Calls over the last day: mostly tokens, some raw values asked for, a few refusals."""
    calls = [
        ("local-agent", "openai_api_key", "token", None, "ok"),
        ("local-agent", "github_token", "call", None, "ok"),
        ("research", "openai_api_key", "value", True, "ok"),
        ("research", "serpapi_key", "token", None, "ok"),
        ("ci-bot", "github_token", "token", None, "ok"),
        ("ci-bot", "npm_token", "token", None, "refused"),
        ("research", "openai_api_key", "value", False, "refused"),
    ]
    with trail.open("w") as lines:
        for n in range(180):
            agent, variable, mode, given, outcome = calls[(n * 5 + n // 7) % len(calls)]
            at = now - 86_000 + n * 470 + (n % 3) * 60
            entry = {
                "time": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
                "client": "Claude Desktop 1.2" if agent != "ci-bot" else "Claude Code 2.1",
                "agent": agent,
                "transport": "stdio",
                "variable": variable,
                "mode": mode,
                "source": "piper_sts" if mode == "token" else "piper",
                "consent_asked": given is not None,
                "consent_given": given,
                "outcome": outcome,
                "reason": "not_granted" if outcome == "refused" else "not_needed",
            }
            lines.write(json.dumps(entry) + "\n")
    vault.append_audit(
        [
            AuditEntry(
                now - 86_000 + n * 900,
                agent,
                vault.local_user_id,
                "piper-resolve-variable-mapping",
                variable,
                "ok",
                None,
            )
            for n, (agent, variable, *_) in enumerate(calls * 14)
        ]
    )


@pytest.fixture
def vault(vault: Vault) -> Vault:
    """conftest's new vault, in daily use: the dashboard (`running`) then serves it."""
    me = vault.local_user_id
    for agent, variables in AGENTS.items():
        if agent != "local-agent":
            vault.add_agent(agent, None, owner_user_id=me, variables=list(variables))
        for variable, secret in variables.items():
            if secret is not None:
                if vault.find_secret(secret) is None:
                    vault.put_secret(secret, f"value of {secret}", owner_user_id=me)
                vault.grant(me, agent, variable, secret)
    now = time.time()
    vault.open_grant_request(WAITING._replace(opened_at=now, expires_at=now + 600))
    day_of_activity(vault, vault.home / "audit.jsonl", now)
    return vault


def test_each_page_shows_what_a_person_looks_for(
    running: RunningDashboard, page: Page, screenshot: Screenshot
) -> None:
    page.set_viewport_size({"width": 1100, "height": 760})
    page.goto(running.dashboard.login_url)
    expect(page.locator("h1")).to_have_text("Overview")
    matrix = page.locator("#grant-matrix")
    expect(matrix.locator("tbody tr")).to_have_count(3)
    expect(matrix.locator("td.granted")).to_have_count(5)
    expect(matrix.locator("td.ungranted")).to_have_text(["not granted"])
    expect(page.get_by_role("link", name="1 grant request waiting for you")).to_be_visible()
    screenshot(page, "overview", full_page=False)  # docs/images/dashboard-overview.png

    page.get_by_role("link", name="Grants").click()
    request = page.locator("form.request")
    expect(request).to_contain_text("Claude Code 2.1")
    expect(request).to_contain_text("npm_token")
    expect(page.locator("#grants tbody tr")).to_have_count(5)
    screenshot(page, "grants", full_page=False)  # docs/images/dashboard-grants.png

    page.get_by_role("link", name="Secrets").click()
    expect(page.locator("#secrets tbody tr")).to_have_count(4)
    expect(page.locator("#secrets")).to_contain_text("research: openai_api_key")
    screenshot(page, "secrets", full_page=False)  # docs/images/dashboard-secrets.png

    page.get_by_role("link", name="Activity").click()
    expect(page.locator("#calls-chart rect.ok").first).to_be_visible()
    expect(page.locator("#calls-chart rect.refused").first).to_be_visible()
    expect(page.locator("#lanes-chart text")).to_have_count(6)  # agent · variable pairs
    expect(page.locator("#events tbody tr")).to_have_count(50)
    expect(page.locator("#events")).to_contain_text("asked, given")
    screenshot(page, "activity", full_page=False)  # docs/images/dashboard-activity.png
