"""Each route of the dashboard, through Starlette's test client: what it shows, what it does.

Pages are read as the user's browser reads them; actions are posted as its forms post
them (this origin, the session's CSRF token) and followed to the page they lead back
to, whose notice says what was done. An action that cannot be done says why and
leaves the vault as it was.
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from piper_mcp.broker.rules import rule_from_use
from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.dashboard.app import PAGES, Dashboard
from piper_mcp.local.dashboard.sessions import COOKIE, SESSION_LIFETIME, Sessions
from piper_mcp.local.running import RunningProcess, announce, withdraw
from piper_mcp.local.vault import Vault
from piper_mcp.server.audit import AuditTrail
from tests.dashboard import (
    AGENT,
    CLIENT,
    OTHER_AGENT,
    OTHER_VARIABLE,
    SECRET,
    SECRET_VALUE,
    VARIABLE,
    act,
    notice_of,
    value_of,
    vault_state,
    waiting_request,
)
from tests.dashboard.conftest import ORIGIN, Browser

NEW_VALUE = "sk-canary-dashboard-typed-in-9d03a7"
PAGES_SHOWN = ["/", "/grants", "/secrets", "/activity"]
ACTIONS = [
    "/secrets/set",
    "/secrets/remove",
    "/grants/grant",
    "/grants/revoke",
    "/requests/approve",
    "/requests/deny",
]


def holds(vault: Vault, name: str, value: str) -> bool:
    """Whether secret `name` has `value` (a bool, so a failing test prints no value)."""
    return value_of(vault, name) == value


def cells(row: str) -> list[str]:
    return [
        html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
        for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
    ]


def table(page: str, table_id: str) -> list[list[str]]:
    """The body rows of the table `table_id`, as the text of their cells."""
    found = re.search(rf'<table[^>]* id="{table_id}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert found is not None, f"the page has no table {table_id}"
    return [cells(row) for row in re.findall(r"<tr>(.*?)</tr>", found.group(1), re.S)]


def last_audit_row(vault: Vault) -> tuple[str, str, str | None, str | None]:
    row = vault.audit(1)[0]
    return row.action, row.outcome, row.client_id, row.subject


# --- the way in ---


def test_the_login_link_starts_a_session_and_leads_to_the_overview(
    client: TestClient, dashboard: Dashboard
) -> None:
    answer = client.get(dashboard.login_url, follow_redirects=False)
    # A page of this origin moves on (not a redirect): the SameSite=Strict cookie then goes
    # along even when the link came from a file or another site.
    assert answer.status_code == 200
    assert f'<meta http-equiv="refresh" content="0; url={dashboard.base}/">' in answer.text
    assert COOKIE in client.cookies
    page = client.get("/")
    assert page.status_code == 200
    assert "<h1>Overview</h1>" in page.text


@pytest.mark.parametrize(
    "query", ["", "?token=", "?token=guessed-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]
)
def test_a_wrong_or_missing_token_is_refused_and_does_not_spend_the_link(
    client: TestClient, dashboard: Dashboard, query: str
) -> None:
    answer = client.get(f"/login{query}", follow_redirects=False)
    assert answer.status_code == 403
    assert "This login link is not right" in answer.text
    assert COOKIE not in client.cookies
    assert client.get(dashboard.login_url, follow_redirects=False).status_code == 200


def test_the_login_link_works_once(client: TestClient, dashboard: Dashboard) -> None:
    client.get(dashboard.login_url)
    again = client.get(dashboard.login_url, follow_redirects=False)
    assert again.status_code == 403
    assert "This login link was used already: it works once" in again.text


def test_a_session_ends_after_its_lifetime(vault: Vault, audit_path: Path) -> None:
    now = [1000.0]
    dashboard = Dashboard(vault, ORIGIN, audit_path, Sessions(clock=lambda: now[0]))
    with TestClient(dashboard.asgi, base_url=dashboard.pages) as client:
        client.get(dashboard.login_url)
        now[0] += SESSION_LIFETIME - 1
        assert client.get("/").status_code == 200
        now[0] += 2
        answer = client.get("/")
    assert answer.status_code == 401
    assert "Log in first" in answer.text


@pytest.mark.parametrize("path", [*PAGES_SHOWN, "/changes"])
def test_every_page_needs_the_session(client: TestClient, path: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 401
    assert "Open the login link that `piper-mcp local dashboard` printed" in answer.text


@pytest.mark.parametrize("path", ACTIONS)
def test_every_action_needs_the_session(
    client: TestClient, dashboard: Dashboard, vault: Vault, path: str
) -> None:
    waiting_request(vault)
    before = vault_state(vault)
    answer = act(
        client,
        dashboard.pages,
        path,
        "a-guessed-csrf-token",
        name=SECRET,
        value=NEW_VALUE,
        agent=AGENT,
        variable=VARIABLE,
        secret=SECRET,
        request="request-1",
    )
    assert answer.status_code == 401
    assert vault_state(vault) == before


# --- the pages ---


def test_the_overview_shows_agents_secrets_and_who_may_use_what(
    browser: Browser, vault: Vault
) -> None:
    page = browser.get("/").text
    secret = vault.find_secret(SECRET)
    assert secret is not None
    assert table(page, "grant-matrix") == [
        [AGENT, "not granted", SECRET],  # database_url, openai_api_key
        [OTHER_AGENT, "–", "–"],
        [DEFAULT_AGENT, "–", "–"],
    ]
    assert table(page, "agents") == [
        [AGENT, "serve --local only", f"{VARIABLE}, {OTHER_VARIABLE}"],
        [OTHER_AGENT, "serve --local only", ""],
        [DEFAULT_AGENT, "serve --local only", ""],
    ]
    [row] = table(page, "overview-secrets")
    assert row[:2] == [SECRET, secret.secret_id]
    assert "No <code>piper-mcp serve --local</code>" in page
    assert "waiting for you" not in page
    assert SECRET_VALUE not in page


def test_the_overview_says_how_each_agent_proves_itself_as_the_backend_decides(
    browser: Browser, vault: Vault
) -> None:
    me = vault.local_user_id
    vault.add_agent("bot", None, owner_user_id=me, variables=["x"], secretless=True)
    vault.add_agent("with-secret", "s" * 40, owner_user_id=me, variables=["x"])
    with vault._write() as db:  # an older piper-mcp let an agent with a secret be secretless
        db.execute("UPDATE agents SET secretless = 1 WHERE client_id = 'with-secret'")
    proofs = {row[0]: row[1] for row in table(browser.get("/").text, "agents")}
    assert proofs["bot"] == "nothing (protocol v2, secretless)"
    assert proofs["with-secret"] == "its client secret (protocol v1)"  # never served over v2


def test_the_overview_says_what_waits_and_what_runs(browser: Browser, vault: Vault) -> None:
    waiting_request(vault)
    link = "http://127.0.0.1:5999/piper-link-context"
    announced = announce(vault.home, RunningProcess("local serve", addresses={"Piper Link": link}))
    try:
        page = browser.get("/").text
    finally:
        withdraw(announced)
    assert 'href="/dashboard-' in page and '/grants#requests">1 grant request waiting' in page
    assert f"<td>local serve</td><td>{os.getpid()}</td>" in page
    assert f"Piper Link: <code>{link}</code>" in page


def test_the_grants_page_shows_waiting_requests_grants_and_the_forms_to_decide(
    browser: Browser, vault: Vault
) -> None:
    waiting_request(vault)
    slack = rule_from_use("slack").model_dump_json()
    vault.grant(vault.local_user_id, OTHER_AGENT, "slack_token", SECRET, api_rule=slack)
    page = browser.get("/grants").text
    form = re.search(r'<form [^>]*id="request-request-1">(.*?)</form>', page, re.S)
    assert form is not None
    asked = html.unescape(re.sub(r"<[^>]+>", "", form.group(1)))
    assert f"The agent {AGENT} asks for the variable {OTHER_VARIABLE}" in asked
    assert f"calls itself {CLIENT}" in asked  # the client's own words, after the facts
    assert '<input type="hidden" name="request" value="request-1">' in form.group(1)
    assert f'name="csrf" value="{browser.csrf}"' in form.group(1)
    assert re.search(r'formaction="/dashboard-[\w-]+/requests/deny"', form.group(1))
    assert [row[:4] for row in table(page, "grants")] == [
        [AGENT, VARIABLE, SECRET, ""],
        [OTHER_AGENT, "slack_token", SECRET, "slack.com"],
    ]
    assert SECRET_VALUE not in page


def test_the_secrets_page_shows_names_ids_and_grants_but_no_value(
    browser: Browser, vault: Vault
) -> None:
    page = browser.get("/secrets").text
    secret = vault.find_secret(SECRET)
    assert secret is not None
    [row] = table(page, "secrets")
    assert row[:3] == [SECRET, secret.secret_id, f"{AGENT}: {VARIABLE}"]
    assert '<input type="password" id="secret-value" name="value"' in page
    assert SECRET_VALUE not in page


@pytest.mark.parametrize("path", PAGES_SHOWN)
def test_pages_need_nothing_their_content_security_policy_forbids(
    browser: Browser, path: str
) -> None:
    """No inline script, handler or style, and nothing from another origin: the CSP would
    block each, and the page would break quietly."""
    page = browser.get(path).text
    assert re.findall(r"<script(?![^>]*\bsrc=\"/dashboard-[\w-]+/assets/)", page) == []
    assert re.findall(r"\son[a-z]+=", page) == []
    assert "style=" not in page
    assert re.findall(r'(?:src|href|action)="(?:[a-z]+:)?//', page) == []


# --- the activity page ---


def server_entry(at: datetime, **fields: object) -> str:
    return json.dumps({"time": at.isoformat(timespec="milliseconds"), **fields})


@pytest.fixture
def trails(vault: Vault, audit_path: Path) -> None:
    """Both audit trails: three calls on the MCP server's, one grant on the vault's."""
    now = datetime.now(UTC)
    entries = [
        server_entry(
            now - timedelta(minutes=5),
            client=CLIENT,
            agent=AGENT,
            variable=VARIABLE,
            mode="token",
            consent_asked=True,
            consent_given=True,
            outcome="ok",
            reason="",
        ),
        server_entry(
            now - timedelta(minutes=4),
            client=CLIENT,
            agent=AGENT,
            variable=OTHER_VARIABLE,
            mode="value",
            outcome="refused",
            reason="the reveal policy is deny",
        ),
        server_entry(
            now - timedelta(minutes=3),
            client="Cursor",
            agent=OTHER_AGENT,
            variable="slack_token",
            mode="call",
            outcome="error",
            reason="Piper did not answer",
        ),
        server_entry(
            now - timedelta(days=2),
            client=CLIENT,
            agent=AGENT,
            variable=VARIABLE,
            mode="token",
            outcome="ok",
        ),
    ]
    audit_path.write_text("\n".join(entries) + "\n")
    vault.record("dashboard", "granted", client_id=AGENT, subject=f"{VARIABLE} {SECRET}")


def shown_events(browser: Browser, query: str = "") -> list[list[str]]:
    page = browser.get(f"/activity{query}").text
    if "Nothing recorded in this window." in page:
        return []
    return table(page, "events")


@pytest.mark.usefixtures("trails")
def test_the_activity_page_merges_both_trails_newest_first(browser: Browser) -> None:
    rows = shown_events(browser)
    assert [row[1:9] for row in rows] == [
        [
            "backend",
            AGENT,
            VARIABLE,
            "grant changed in the dashboard",
            "",
            "",
            "granted",
            SECRET,
        ],
        [
            "MCP server",
            OTHER_AGENT,
            "slack_token",
            "brokered call",
            "Cursor",
            "not asked",
            "error",
            "Piper did not answer",
        ],
        [
            "MCP server",
            AGENT,
            OTHER_VARIABLE,
            "raw value",
            CLIENT,
            "not asked",
            "refused",
            "the reveal policy is deny",
        ],
        ["MCP server", AGENT, VARIABLE, "STS token", CLIENT, "asked, given", "ok", ""],
    ]


@pytest.mark.usefixtures("trails")
@pytest.mark.parametrize(
    ("query", "kept"),
    [
        (f"?agent={OTHER_AGENT}", ["slack_token"]),
        (f"?variable={VARIABLE}", [VARIABLE, VARIABLE]),
        ("?outcome=ok", [VARIABLE, VARIABLE]),
        ("?outcome=refused", [OTHER_VARIABLE]),
        ("?outcome=failed", ["slack_token"]),
        ("?window=hour", [VARIABLE, "slack_token", OTHER_VARIABLE, VARIABLE]),
        ("?window=week", [VARIABLE, "slack_token", OTHER_VARIABLE, VARIABLE, VARIABLE]),
        (f"?agent={AGENT}&outcome=ok&window=week", [VARIABLE, VARIABLE, VARIABLE]),
        ("?agent=nobody", []),
    ],
)
def test_the_activity_page_keeps_what_its_filters_ask_for(
    browser: Browser, query: str, kept: list[str]
) -> None:
    assert [row[3] for row in shown_events(browser, query)] == kept


@pytest.mark.usefixtures("trails")
def test_unknown_filter_values_fall_back_to_everything_of_the_last_day(browser: Browser) -> None:
    everything = shown_events(browser)
    assert shown_events(browser, "?outcome=bogus&window=year") == everything
    page = browser.get("/activity?outcome=bogus&window=year").text
    assert '<option value="day" selected>' in page
    assert " selected>" not in page.split('id="filter-outcome"', 1)[1].split("</select>", 1)[0]


@pytest.mark.usefixtures("trails")
def test_the_activity_page_shows_its_filters_as_chosen(browser: Browser) -> None:
    page = browser.get(f"/activity?agent={AGENT}&outcome=refused&window=week").text
    assert f'<option value="{AGENT}" selected>' in page
    assert '<option value="refused" selected>' in page
    assert '<option value="week" selected>' in page


def test_an_unreadable_audit_trail_is_said_and_the_vaults_is_still_shown(
    browser: Browser, vault: Vault, audit_path: Path
) -> None:
    audit_path.mkdir()
    vault.record("dashboard", "granted", client_id=AGENT, subject=f"{VARIABLE} {SECRET}")
    page = browser.get("/activity")
    assert page.status_code == 200
    assert "The MCP server's audit trail could not be read: cannot read the audit" in page.text
    assert [row[1] for row in table(page.text, "events")] == ["backend"]


# --- what the pages poll ---


def shown_state(page: str) -> str:
    found = re.search(r'<meta name="piper-state" content="([^"]*)">', page)
    assert found is not None
    return html.unescape(found.group(1))


@pytest.mark.parametrize("page", ["/", "/activity"])
def test_a_page_is_drawn_from_the_state_changes_answers_while_nothing_changes(
    browser: Browser, page: str
) -> None:
    """The page's script reloads it whenever /changes answers another state than it shows."""
    shown = shown_state(browser.get(page).text)
    assert browser.get(f"/changes?page={page}").json() == {"state": shown}
    assert browser.get(f"/changes?page={page}").json() == {"state": shown}


def test_changes_answers_a_new_state_when_another_process_changes_the_vault(
    browser: Browser, vault: Vault
) -> None:
    other = Vault.open(vault.home)  # what another process (the command line) sees and does
    try:
        states = [browser.get("/changes").json()["state"]]
        other.put_secret("Slack token", NEW_VALUE, owner_user_id=other.local_user_id)
        states.append(browser.get("/changes").json()["state"])
        other.grant(other.local_user_id, OTHER_AGENT, "slack_token", "Slack token")
        states.append(browser.get("/changes").json()["state"])
        waiting_request(other)
        states.append(browser.get("/changes").json()["state"])
        other.revoke(other.local_user_id, OTHER_AGENT, "slack_token")
        states.append(browser.get("/changes").json()["state"])
    finally:
        other.close()
    assert len(set(states)) == len(states)


def test_only_the_activity_page_changes_when_the_audit_trails_grow(
    browser: Browser, audit_path: Path, vault: Vault
) -> None:
    """An agent's calls redraw the activity page, not a page the user may be reading."""

    def states() -> tuple[str, str]:
        return (
            browser.get("/changes?page=/activity").json()["state"],
            browser.get("/changes?page=/grants").json()["state"],
        )

    before = states()
    AuditTrail(audit_path).record(agent=AGENT, variable=VARIABLE, mode="token", outcome="ok")
    server_call = states()
    vault.record("piper-resolve-variable-mapping", "ok", client_id=AGENT, subject=VARIABLE)
    backend_call = states()
    assert len({before[0], server_call[0], backend_call[0]}) == 3
    assert before[1] == server_call[1] == backend_call[1]


# --- the files the pages load ---


@pytest.mark.parametrize(
    ("name", "media_type"), [("piper.css", "text/css"), ("dashboard.js", "text/javascript")]
)
def test_the_stylesheet_and_script_come_from_the_package(
    client: TestClient, name: str, media_type: str
) -> None:
    """Without a session too: the refusal pages use the stylesheet."""
    answer = client.get(f"/assets/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].split(";")[0] == media_type
    assert answer.content == (PAGES / name).read_bytes()


@pytest.mark.parametrize("name", ["other", "grant.html", "..%2Fdashboard%2Fapp.py"])
def test_no_other_file_is_served(browser: Browser, name: str) -> None:
    assert browser.get(f"/assets/{name}").status_code == 404


# --- the secrets ---


def test_storing_a_secret_keeps_its_value_and_says_so_without_it(
    browser: Browser, vault: Vault
) -> None:
    notice, page = browser.act_and_see("/secrets/set", name="Stripe key", value=NEW_VALUE)
    secret = vault.find_secret("Stripe key")
    assert secret is not None
    assert holds(vault, "Stripe key", NEW_VALUE)
    assert notice == f"done: Stored 'Stripe key' ({secret.secret_id})."
    assert page.url.path.endswith("/secrets") and page.url.path.startswith("/dashboard-")
    assert NEW_VALUE not in page.text
    assert last_audit_row(vault) == ("dashboard_secret", "stored", None, "Stripe key")


def test_storing_under_a_stored_name_replaces_its_value_and_keeps_its_grants(
    browser: Browser, vault: Vault
) -> None:
    before = vault.find_secret(SECRET)
    grants = vault.grants()
    notice, _ = browser.act_and_see("/secrets/set", name=SECRET, value=NEW_VALUE)
    assert before is not None
    assert notice == f"done: Replaced the value of {SECRET!r} ({before.secret_id})."
    assert holds(vault, SECRET, NEW_VALUE)
    assert vault.grants() == grants
    assert last_audit_row(vault) == ("dashboard_secret", "replaced", None, SECRET)


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"name": SECRET, "value": ""}, "type the secret's value"),
        ({"name": "", "value": NEW_VALUE}, "a secret name must be non-empty"),
        ({"name": "two\nlines", "value": NEW_VALUE}, "contains control characters"),
    ],
    ids=["no value", "no name", "control characters"],
)
def test_a_secret_that_cannot_be_stored_changes_nothing_and_says_why(
    browser: Browser, vault: Vault, fields: dict[str, str], said: str
) -> None:
    before = vault_state(vault)
    notice, _ = browser.act_and_see("/secrets/set", **fields)
    assert notice is not None
    assert notice.startswith("problem: Nothing was changed: ")
    assert said in notice
    assert vault_state(vault) == before


def test_removing_a_secret_removes_its_grants_too(browser: Browser, vault: Vault) -> None:
    notice, page = browser.act_and_see("/secrets/remove", name=SECRET)
    assert notice == f"done: Removed {SECRET!r} and every grant of it."
    assert vault.find_secret(SECRET) is None
    assert vault.grants() == []
    assert "No secrets yet." in page.text
    assert last_audit_row(vault) == ("dashboard_secret", "removed", None, SECRET)


def test_removing_an_unknown_secret_changes_nothing_and_says_why(
    browser: Browser, vault: Vault
) -> None:
    before = vault_state(vault)
    notice, _ = browser.act_and_see("/secrets/remove", name="Ghost key")
    assert notice is not None
    assert notice.startswith("problem: Nothing was changed: there is no secret 'Ghost key'")
    assert vault_state(vault) == before


# --- the grants ---


def test_granting_a_stored_secret(browser: Browser, vault: Vault) -> None:
    notice, page = browser.act_and_see(
        "/grants/grant", agent=OTHER_AGENT, variable="OpenAI API Key", secret=SECRET
    )
    assert notice == f"done: Granted {SECRET!r} to {OTHER_AGENT!r} as 'openai_api_key'."
    grant = vault.grant_for(vault.local_user_id, OTHER_AGENT, "openai_api_key")
    assert grant is not None
    assert (grant.secret_name, grant.api_rule) == (SECRET, None)
    assert [OTHER_AGENT, "openai_api_key", SECRET, ""] in [
        row[:4] for row in table(page.text, "grants")
    ]
    assert last_audit_row(vault) == (
        "dashboard",
        "granted",
        OTHER_AGENT,
        f"openai_api_key {SECRET}",
    )


def test_granting_a_new_secret_typed_in_place_stores_it_first(
    browser: Browser, vault: Vault
) -> None:
    notice, page = browser.act_and_see(
        "/grants/grant",
        agent=OTHER_AGENT,
        variable="stripe_key",
        new_name="Stripe key",
        new_value=NEW_VALUE,
    )
    assert notice == f"done: Granted 'Stripe key' to {OTHER_AGENT!r} as 'stripe_key'."
    assert holds(vault, "Stripe key", NEW_VALUE)
    grant = vault.grant_for(vault.local_user_id, OTHER_AGENT, "stripe_key")
    assert grant is not None
    assert grant.secret_name == "Stripe key"
    assert NEW_VALUE not in page.text


def test_granting_with_a_preset_lets_call_api_send_it_to_the_presets_hosts(
    browser: Browser, vault: Vault
) -> None:
    notice, page = browser.act_and_see(
        "/grants/grant", agent=OTHER_AGENT, variable=VARIABLE, secret=SECRET, use="openai"
    )
    assert notice == (
        f"done: Granted {SECRET!r} to {OTHER_AGENT!r} as {VARIABLE!r}; "
        "call_api may send it to api.openai.com."
    )
    grant = vault.grant_for(vault.local_user_id, OTHER_AGENT, VARIABLE)
    assert grant is not None and grant.api_rule is not None
    assert json.loads(grant.api_rule)["hosts"] == ["api.openai.com"]
    assert [OTHER_AGENT, VARIABLE, SECRET, "api.openai.com"] in [
        row[:4] for row in table(page.text, "grants")
    ]


def test_granting_with_hosts_and_where_the_credential_goes(browser: Browser, vault: Vault) -> None:
    notice, _ = browser.act_and_see(
        "/grants/grant",
        agent=OTHER_AGENT,
        variable=VARIABLE,
        secret=SECRET,
        use="api.example.com, eu.api.example.com",
        inject="X-Api-Key: {value}",
    )
    assert notice is not None and notice.startswith("done: ")
    grant = vault.grant_for(vault.local_user_id, OTHER_AGENT, VARIABLE)
    assert grant is not None and grant.api_rule is not None
    assert json.loads(grant.api_rule)["hosts"] == ["api.example.com", "eu.api.example.com"]


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        (
            {"agent": "agent-ghost", "variable": "x_key", "secret": SECRET},
            "there is no agent 'agent-ghost'",
        ),
        (
            {"agent": OTHER_AGENT, "variable": "x_key", "secret": "Ghost key"},
            "there is no secret 'Ghost key'",
        ),
        (
            {"agent": OTHER_AGENT, "variable": "x_key", "secret": SECRET, "new_value": NEW_VALUE},
            "choose a stored secret or type a new value, not both",
        ),
        (
            {"agent": OTHER_AGENT, "variable": "x_key", "new_name": "Stripe key"},
            "type the new secret's value, or choose a stored secret",
        ),
        (
            {"agent": OTHER_AGENT, "variable": "x_key", "new_name": SECRET, "new_value": NEW_VALUE},
            f"a secret named {SECRET!r} is stored already",
        ),
        (
            {"agent": OTHER_AGENT, "variable": "x_key", "secret": SECRET, "use": "openia"},
            "is neither a preset",
        ),
        (
            {
                "agent": OTHER_AGENT,
                "variable": "x_key",
                "secret": SECRET,
                "inject": "X-Key: {value}",
            },
            "'where the credential goes' needs the hosts it goes to",
        ),
        (
            {"agent": OTHER_AGENT, "variable": "!!!", "secret": SECRET},
            "has no letters or digits",
        ),
        (
            # The new secret must not be stored when the grant it was typed for fails.
            {
                "agent": OTHER_AGENT,
                "variable": "!!!",
                "new_name": "Stripe key",
                "new_value": NEW_VALUE,
            },
            "has no letters or digits",
        ),
    ],
    ids=[
        "unknown agent",
        "unknown secret",
        "both a stored secret and a new value",
        "neither",
        "new name taken",
        "bad use",
        "inject without use",
        "bad variable",
        "bad variable with a new secret",
    ],
)
def test_a_grant_that_cannot_be_made_changes_nothing_and_says_why(
    browser: Browser, vault: Vault, fields: dict[str, str], said: str
) -> None:
    before = vault_state(vault)
    notice, _ = browser.act_and_see("/grants/grant", **fields)
    assert notice is not None
    assert notice.startswith("problem: Nothing was changed: ")
    assert said in notice
    assert NEW_VALUE not in notice
    assert vault_state(vault) == before


def test_revoking_a_grant(browser: Browser, vault: Vault) -> None:
    notice, page = browser.act_and_see("/grants/revoke", agent=AGENT, variable=VARIABLE)
    assert notice == f"done: Revoked {VARIABLE!r} from {AGENT!r}; its next call is refused."
    assert vault.grants() == []
    assert "Nothing is granted yet." in page.text
    assert last_audit_row(vault) == ("dashboard", "revoked", AGENT, VARIABLE)


def test_revoking_what_is_not_granted_changes_nothing_and_says_why(
    browser: Browser, vault: Vault
) -> None:
    before = vault_state(vault)
    notice, _ = browser.act_and_see("/grants/revoke", agent=OTHER_AGENT, variable=VARIABLE)
    assert notice == (
        f"problem: Nothing was changed: agent {OTHER_AGENT!r} has no grant of {VARIABLE!r}."
    )
    assert vault_state(vault) == before


# --- the waiting requests ---


def test_approving_a_request_with_a_stored_secret_grants_it_and_lets_the_call_go_on(
    browser: Browser, vault: Vault
) -> None:
    waiting_request(vault)
    notice, page = browser.act_and_see("/requests/approve", request="request-1", secret=SECRET)
    assert notice == (
        f"done: Granted {SECRET!r} to {AGENT!r} as {OTHER_VARIABLE!r}; "
        f"the call of {CLIENT!r} goes on."
    )
    decided = vault.grant_request("request-1")
    assert decided is not None and decided.outcome == "granted"
    grant = vault.grant_for(vault.local_user_id, AGENT, OTHER_VARIABLE)
    assert grant is not None and grant.secret_name == SECRET
    assert "No grant requests are waiting." in page.text
    assert last_audit_row(vault) == ("dashboard", "granted", AGENT, f"{OTHER_VARIABLE} {SECRET}")


def test_approving_a_request_with_a_new_secret_stores_it_first(
    browser: Browser, vault: Vault
) -> None:
    waiting_request(vault)
    notice, page = browser.act_and_see(
        "/requests/approve", request="request-1", new_name="Ada's database", new_value=NEW_VALUE
    )
    assert notice is not None and notice.startswith('done: Granted "Ada\'s database"')
    assert holds(vault, "Ada's database", NEW_VALUE)
    grant = vault.grant_for(vault.local_user_id, AGENT, OTHER_VARIABLE)
    assert grant is not None and grant.secret_name == "Ada's database"
    decided = vault.grant_request("request-1")
    assert decided is not None and decided.outcome == "granted"
    assert NEW_VALUE not in page.text


def test_denying_a_request(browser: Browser, vault: Vault) -> None:
    waiting_request(vault)
    grants = vault.grants()
    notice, page = browser.act_and_see("/requests/deny", request="request-1")
    assert notice == f"done: Denied {AGENT!r} the variable {OTHER_VARIABLE!r}."
    decided = vault.grant_request("request-1")
    assert decided is not None and decided.outcome == "denied"
    assert vault.grants() == grants
    assert "No grant requests are waiting." in page.text
    assert last_audit_row(vault) == ("dashboard", "denied", AGENT, OTHER_VARIABLE)


def decided_already(vault: Vault) -> None:
    waiting_request(vault)
    vault.decide_grant_request("request-1", "denied")


def expired(vault: Vault) -> None:
    waiting_request(vault, expires_in=-1)


def agent_gone(vault: Vault) -> None:
    waiting_request(vault, agent=OTHER_AGENT)
    vault.remove_agent(OTHER_AGENT)


@pytest.mark.parametrize(
    ("path", "setup", "fields", "said"),
    [
        ("/requests/approve", decided_already, {"secret": SECRET}, "was already denied"),
        ("/requests/deny", decided_already, {}, "was already denied"),
        ("/requests/approve", expired, {"secret": SECRET}, "is not waiting (it expired"),
        ("/requests/deny", expired, {}, "is not waiting (it expired"),
        ("/requests/approve", None, {"secret": SECRET}, "is not waiting (it expired, or there"),
        ("/requests/deny", None, {}, "is not waiting (it expired, or there is none)"),
        (
            "/requests/approve",
            waiting_request,
            {"secret": SECRET, "new_value": NEW_VALUE},
            "choose a stored secret or type a new value, not both",
        ),
        ("/requests/approve", waiting_request, {"secret": "Ghost key"}, "no secret 'Ghost key'"),
        (
            # Removing the agent took its requests back: nothing is stored for them.
            "/requests/approve",
            agent_gone,
            {"new_name": "Slack token", "new_value": NEW_VALUE},
            "was already expired",
        ),
    ],
    ids=[
        "approve decided",
        "deny decided",
        "approve expired",
        "deny expired",
        "approve unknown",
        "deny unknown",
        "approve with both",
        "approve unknown secret",
        "approve for a removed agent with a new secret",
    ],
)
def test_a_request_that_cannot_be_decided_changes_nothing_and_says_why(
    browser: Browser,
    vault: Vault,
    path: str,
    setup: object,
    fields: dict[str, str],
    said: str,
) -> None:
    if callable(setup):
        setup(vault)
    before = vault_state(vault)
    request_before = vault.grant_request("request-1")
    notice, _ = browser.act_and_see(path, request="request-1", **fields)
    assert notice is not None
    assert notice.startswith("problem: Nothing was changed: ")
    assert said in notice
    assert vault_state(vault) == before
    assert vault.grant_request("request-1") == request_before


# --- what an action says ---


def test_an_actions_notice_is_shown_once_on_the_next_page(browser: Browser) -> None:
    browser.act("/grants/revoke", agent=AGENT, variable=VARIABLE)
    assert notice_of(browser.get("/activity").text) == (
        f"done: Revoked {VARIABLE!r} from {AGENT!r}; its next call is refused."
    )
    assert notice_of(browser.get("/activity").text) is None


# --- what an attack review found ---


def test_a_head_request_does_not_spend_the_login_link(
    client: TestClient, dashboard: Dashboard
) -> None:
    """A link previewer HEADs what it sees; the user's click must still work."""
    assert client.head(dashboard.login_url).status_code == 405
    assert COOKIE not in client.cookies
    assert client.get(dashboard.login_url).status_code == 200


def test_a_trailing_slash_is_not_a_redirect_around_the_checks(browser: Browser) -> None:
    answer = browser.get("/grants/", follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers
    assert answer.headers["x-frame-options"] == "DENY"


def test_a_clients_name_is_shown_as_its_own_words_after_the_facts(
    browser: Browser, vault: Vault
) -> None:
    """A model's host names itself; that name must not read as the dashboard speaking."""
    claim = "Piper security team: pre-approved, click Approve \x1b[31m" + "x" * 300
    waiting_request(vault, client=claim)
    page = browser.get("/grants").text
    form = re.search(r'<form method="post" action="[^"]*/requests/approve".*?</form>', page, re.S)
    assert form is not None
    said = html.unescape(re.sub(r"<(?!/?q>)[^>]+>", "", form.group(0)))  # all tags but <q>
    facts = said.index(f"The agent {AGENT} asks for the variable {OTHER_VARIABLE}")
    quoted = re.search(r"calls itself <q>(.*?)</q>", said)
    assert quoted is not None and facts < quoted.start()
    assert quoted.group(1).startswith("Piper security team: pre-approved, click Approve \\x1b")
    assert len(quoted.group(1)) == 100 and quoted.group(1).endswith("…")
    assert "\x1b" not in page
