"""Grants just in time, attacked by everyone but the user who should make them.

Another local process (which can speak MCP to a loopback HTTP server, and HTTP to
the grant page), another web site in the user's browser, and a client that plays
with the 2026-07-28 request state: each test is one way in and says which
protection it guards. The first (a local process granting itself over unauthenticated
HTTP) was a hole, closed by offering grants only to clients that are the user's (stdio,
or HTTP with a bearer token). Vaults are real, pages are served on real loopback sockets, and
`serve --local` runs as a real process where the transport matters.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.grant_requests import GrantRequest
from piper_mcp.local.vault import Vault
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.just_in_time import GRANT_QUESTION
from piper_mcp.server.local_piper import LocalPiper
from piper_mcp.server.policy import RevealPolicy
from tests.grant_page import open_and_choose
from tests.processes import HTTP_TOKEN, mcp_http_servers, with_token

VARIABLE = "weather_key"  # declared by the agent, not granted
GRANTED = "notes_key"  # declared and granted
WEATHER = ("Weather key", "weather-canary-3b1d07")
NOTES = ("Notes key", "notes-canary-c2e6f1")
CROWN = ("Crown jewels", "crown-jewels-canary-9f8e7d6c")  # never granted to anyone
EVERY_VALUE = (WEATHER[1], NOTES[1], CROWN[1])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vault whose local-agent declares weather_key (ungranted) and notes_key (granted)."""
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    monkeypatch.setenv("PIPER_REVOCATION_WINDOW", "0")  # a revoked grant stops at once
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    for name, value in (WEATHER, NOTES, CROWN):
        vault.put_secret(name, value, owner_user_id=me)
    vault.grant(me, DEFAULT_AGENT, VARIABLE, WEATHER[0])
    vault.revoke(me, DEFAULT_AGENT, VARIABLE)  # declared, no longer granted
    vault.grant(me, DEFAULT_AGENT, GRANTED, NOTES[0])
    vault.close()
    return home


def grants_of_variable(home: Path) -> list[str]:
    """The secrets the agent is granted under `VARIABLE`, read from the vault itself."""
    vault = Vault.open(home)
    try:
        return [
            g.secret_name for g in vault.grants(client_id=DEFAULT_AGENT) if g.variable == VARIABLE
        ]
    finally:
        vault.close()


def csrf_of(page: httpx.Response) -> str:
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def origin_of(url: str) -> str:
    found = re.match(r"https?://[^/]+", url)
    assert found is not None
    return found.group(0)


def call_2026(
    http: httpx.Client | httpx.AsyncClient,
    arguments: dict[str, str],
    *,
    state: str | None = None,
    responses: dict[str, Any] | None = None,
    client: str = "not-the-user",
) -> httpx.Request:
    """A 2026-07-28 `tools/call` of get_secret from a client that supports URL elicitation."""
    params: dict[str, Any] = {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}, "url": {}}},
            "io.modelcontextprotocol/clientInfo": {"name": client, "version": "1"},
        },
        "name": "get_secret",
        "arguments": arguments,
    }
    if state is not None:
        params["requestState"] = state
    if responses is not None:
        params["inputResponses"] = responses
    return http.build_request(
        "POST",
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
        headers={
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "get_secret",
        },
    )


ACCEPT = {GRANT_QUESTION: {"action": "accept"}}


# --- a local process that speaks MCP to a loopback HTTP server ---


def test_a_local_process_speaking_mcp_over_http_cannot_grant_itself_a_secret(
    home: Path,
) -> None:
    """Guards rule 17, "only the user grants": the page trusts whoever holds the link, and
    the link goes to the MCP client; over unauthenticated HTTP that is anyone on the machine
    (another OS user, a container on the host network), who then gets a secret the agent
    was never granted (the crown jewels) under a variable the agent declares."""
    returned: list[str] = []
    env = {**os.environ, "PIPER_HOME": str(home)}
    with mcp_http_servers(env) as start, httpx.Client(timeout=30) as http:
        http.base_url = httpx.URL(start("streamable-http").removesuffix("/mcp"))
        first = http.send(call_2026(http, {"variable": VARIABLE}))
        returned.append(first.text)
        result = first.json()["result"]
        if result.get("resultType") == "input_required":
            link = result["inputRequests"][GRANT_QUESTION]["params"]["url"]
            with httpx.Client() as browser:  # the same process, as a browser would
                csrf = csrf_of(browser.get(link))
                browser.post(
                    link.split("?")[0],
                    data={"csrf": csrf, "action": "grant", "secret": CROWN[0]},
                    headers={"Origin": origin_of(link)},
                )
            retry = call_2026(
                http, {"variable": VARIABLE}, state=result["requestState"], responses=ACCEPT
            )
            returned.append(http.send(retry).text)
    assert grants_of_variable(home) == []
    assert not any("piper-sts-" in text for text in returned)


@pytest.mark.anyio
@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_the_link_reaches_the_client_only_never_the_servers_log_or_audit(
    home: Path, era: str
) -> None:
    """Guards rule 17's "the link never reaches the model" beyond the tool result: at DEBUG,
    the server's stderr (a host's log file) and the audit trail hold neither the link's key
    nor its request id while the link is still unused, nor afterwards. The request id is
    the tell: were a message body logged (sse_starlette logs SSE chunks at DEBUG), the
    redactor's `key=` pattern would hide the key, but not the id beside it."""
    env = {**os.environ, "PIPER_HOME": str(home), "PIPER_MCP_HTTP_TOKEN": HTTP_TOKEN}
    links: list[str] = []
    logged_before_use: list[str] = []
    with mcp_http_servers(env) as start:
        url = start("streamable-http", "--log-level", "DEBUG")
        log: Path = start.logs[url]  # type: ignore[attr-defined]

        async def user(context: object, params: ElicitRequestParams) -> ElicitResult:
            assert isinstance(params, ElicitRequestURLParams)
            links.append(params.url)
            logged_before_use.append(await anyio.Path(log).read_text(errors="replace"))
            done = await open_and_choose(params.url, secret=WEATHER[0])
            assert done.status_code == 200, done.text
            return ElicitResult(action="accept")

        async with Client(with_token(url), mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
            result = await client.call_tool("get_secret", {"variable": VARIABLE})
        assert result.is_error is False, result.content
        logged_after = await anyio.Path(log).read_text(errors="replace")
    [link] = links
    key = link.split("key=", 1)[1]
    request_id = link.split("/grant/", 1)[1].split("?", 1)[0]
    audit = (home / "audit.jsonl").read_text()
    for text in (logged_before_use[0], logged_after, audit):
        assert key not in text
        assert request_id not in text
    assert "DEBUG" in logged_after  # the log did run at DEBUG


# --- another local process, or another site, at the grant page ---


@pytest.fixture
def local(home: Path) -> Iterator[LocalPiper]:
    piper = LocalPiper(DEFAULT_AGENT).open()
    yield piper
    piper.stop()


def link(local: LocalPiper, request: GrantRequest) -> str:
    return f"{local.grants.page_url}/grant/{request.request_id}?key={request.key}"


def open_request(local: LocalPiper, client: str = "Some Client 1.0") -> GrantRequest:
    return local.grant_requests.open(DEFAULT_AGENT, VARIABLE, client)


def decide(
    browser: httpx.Client, local: LocalPiper, request: GrantRequest, **form: str
) -> httpx.Response:
    origin = form.pop("origin", local.grants.page_url)
    headers = {"Origin": origin, **({"Sec-Fetch-Site": s} if (s := form.pop("site", "")) else {})}
    return browser.post(
        f"{local.grants.page_url}/grant/{request.request_id}",
        data={"action": "grant", **form},
        headers=headers,
    )


def test_a_guessed_request_id_is_told_apart_from_a_real_one_by_nothing(local: LocalPiper) -> None:
    """Guards the page against enumeration: an unknown id and a known id with a wrong key
    (or an unopened request posted to) get the same answer, so ids cannot be probed."""
    real = open_request(local)
    page = local.grants.page_url
    with httpx.Client() as other_process:
        guessed = other_process.get(f"{page}/grant/{'A' * 16}?key={'b' * 43}")
        wrong_key = other_process.get(f"{page}/grant/{real.request_id}?key={'b' * 43}")
        posted_unknown = other_process.post(f"{page}/grant/{'A' * 16}", headers={"Origin": page})
        posted_real = other_process.post(
            f"{page}/grant/{real.request_id}", headers={"Origin": page}
        )
    assert guessed.status_code == wrong_key.status_code == 403
    assert guessed.text == wrong_key.text
    assert posted_unknown.status_code == posted_real.status_code == 403
    assert posted_unknown.text == posted_real.text
    assert grants_of_variable(local.home) == []


def test_of_many_who_open_one_link_at_once_exactly_one_gets_the_page(local: LocalPiper) -> None:
    """Guards the one-time link under a race (a process that read the link from a browser's
    command line, against the user): the key is spent under a lock, once."""
    request = open_request(local)
    url = link(local, request)
    statuses: list[int] = []
    go = threading.Barrier(8)

    def racer() -> None:
        with httpx.Client() as browser:
            go.wait()
            statuses.append(browser.get(url).status_code)

    racers = [threading.Thread(target=racer) for _ in range(8)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join()
    assert sorted(statuses) == [200] + [403] * 7


def test_a_session_opened_for_one_request_cannot_decide_another(local: LocalPiper) -> None:
    """Guards the binding of cookie and CSRF token to one request: a process that opened a
    link of its own (its own MCP call) cannot decide the user's pending request with it."""
    mine = open_request(local, "Attacker Client 6.6")
    theirs = open_request(local, "User's Client 1.0")
    with httpx.Client() as attacker:
        csrf = csrf_of(attacker.get(link(local, mine)))
        session = attacker.cookies.get("piper_grant")
        assert session
        attacker.cookies.set("piper_grant", session, path=f"/grant/{theirs.request_id}")
        refused = decide(attacker, local, theirs, csrf=csrf, secret=CROWN[0])
    assert refused.status_code == 403
    assert grants_of_variable(local.home) == []


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{other}",  # another local server the browser visits: same site
        "https://127.0.0.1:{port}",  # another scheme
        "http://127.0.0.1:{port}.evil.example",  # a prefix match would pass it
        "http://[::1]:{port}",
        "http://127.0.0.2:{port}",
    ],
)
def test_a_page_on_another_local_port_or_scheme_is_another_site(
    local: LocalPiper, origin: str
) -> None:
    """Guards the exact Origin check: SameSite cookies ignore ports, so a page another local
    program serves on 127.0.0.1 is same-site, and gets the cookie sent along; only the
    Origin (and Sec-Fetch-Site) tell it apart. Even with the CSRF token it decides nothing."""
    request = open_request(local)
    port = local.grants.page_url.rsplit(":", 1)[1]
    shown_origin = origin.format(port=port, other=int(port) + 1)
    with httpx.Client() as browser:
        csrf = csrf_of(browser.get(link(local, request)))
        refused = decide(
            browser,
            local,
            request,
            csrf=csrf,
            secret=CROWN[0],
            origin=shown_origin,
            site="same-site",
        )
        assert refused.status_code == 403
        # The same form from the page itself goes through: the refusal was the Origin's.
        assert decide(browser, local, request, csrf=csrf, secret=WEATHER[0]).status_code == 200
    assert grants_of_variable(local.home) == [WEATHER[0]]


@pytest.mark.parametrize("clash", ["name", "id"])
def test_the_page_cannot_overwrite_a_stored_secret(local: LocalPiper, clash: str) -> None:
    """Guards `_secret_to_grant`: whoever holds a page session may store a new secret, never
    replace the value of one the user stored (by its name or by its id)."""
    vault = Vault.open(local.home)
    stored = vault.find_secret(CROWN[0])
    vault.close()
    assert stored is not None
    name = CROWN[0] if clash == "name" else stored.secret_id
    request = open_request(local)
    with httpx.Client() as browser:
        csrf = csrf_of(browser.get(link(local, request)))
        refused = decide(
            browser, local, request, csrf=csrf, new_name=name, new_value="attacker-chosen"
        )
    assert refused.status_code == 400
    assert "attacker-chosen" not in refused.text
    vault = Vault.open(local.home)
    try:
        assert vault.secret_value(stored.secret_id) == CROWN[1]
        assert len(vault.secrets()) == 3
    finally:
        vault.close()
    assert grants_of_variable(local.home) == []


def test_a_client_name_with_markup_is_shown_as_text(local: LocalPiper) -> None:
    """Guards the page's escaping: the client's name is the MCP client's to choose."""
    request = open_request(local, '<script>alert("x")</script><img src=x onerror=alert(1)>')
    with httpx.Client() as browser:
        page = browser.get(link(local, request))
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text
    assert "&lt;script&gt;" in page.text


# --- a client that plays with the 2026-07-28 request state ---


@asynccontextmanager
async def served_2026(
    local: LocalPiper, tmp_path: Path, *, grant_wait: float = 30.0
) -> AsyncIterator[httpx.AsyncClient]:
    """`serve --local`'s server in-process behind its streamable HTTP app, asking the user
    before a raw value is revealed."""
    client = AsyncPiperClient.from_settings(local.settings, http_client=local.http_client())
    service = CredentialService(
        client,
        local.declared,
        policy=RevealPolicy("ask"),
        grants=local.grants,
    )
    server = build_server(
        service,
        audit=AuditTrail(tmp_path / "audit.jsonl"),
        transport="streamable-http",
        grant_wait=grant_wait,
    )
    app = server.streamable_http_app()
    async with (
        server.session_manager.run(),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8000", timeout=30
        ) as http,
    ):
        yield http


async def send_2026(http: httpx.AsyncClient, arguments: dict[str, str], **retry: Any) -> Any:
    response = await http.send(call_2026(http, arguments, **retry))
    return response.json()


async def grant_question(http: httpx.AsyncClient, arguments: dict[str, str]) -> tuple[str, str]:
    """The grant page's link and the request state the retry must bring back."""
    result = (await send_2026(http, arguments))["result"]
    assert result["resultType"] == "input_required", result
    return result["inputRequests"][GRANT_QUESTION]["params"]["url"], result["requestState"]


def released(message: Any) -> str | None:
    """The token or value a response handed out, if any."""
    result = message.get("result") or {}
    if result.get("isError") or result.get("resultType") == "input_required":
        return None
    content = result.get("structuredContent") or {}
    return content.get("token") or content.get("value")


def no_secret_in(message: Any) -> bool:
    text = str(message)
    return not any(value in text for value in EVERY_VALUE) and "piper-sts-" not in text


@pytest.mark.anyio
async def test_accepting_the_grant_question_without_granting_skips_no_wait(
    local: LocalPiper, tmp_path: Path
) -> None:
    """Guards `_go_on`: "accept" only says the user went to the page; the call goes on only
    once the vault holds the grant, which a client cannot make by answering."""
    async with served_2026(local, tmp_path, grant_wait=0.3) as http:
        _, state = await grant_question(http, {"variable": VARIABLE})
        answer = await send_2026(http, {"variable": VARIABLE}, state=state, responses=ACCEPT)
    assert released(answer) is None and no_secret_in(answer)
    assert "No grant was made" in str(answer)
    assert grants_of_variable(local.home) == []


@pytest.mark.anyio
async def test_the_grant_answer_cannot_carry_an_answer_to_the_reveal_question(
    local: LocalPiper, tmp_path: Path
) -> None:
    """Guards "one consent, one value" across the two questions: the reveal question is asked
    on its own rounds (`_after_answer` starts the call afresh, and the SDK takes an answer
    only to a question it sealed), so a "yes" slipped into the grant retry is not taken."""
    wanted = {"variable": VARIABLE, "mode": "value"}
    async with served_2026(local, tmp_path) as http:
        # The reveal question's key, learnt on a granted variable.
        asked = (await send_2026(http, {"variable": GRANTED, "mode": "value"}))["result"]
        [reveal_key] = asked["inputRequests"]
        url, state = await grant_question(http, wanted)
        assert (await open_and_choose(url, secret=WEATHER[0])).status_code == 200
        smuggled = {**ACCEPT, reveal_key: {"action": "accept", "content": {}}}
        answer = await send_2026(http, wanted, state=state, responses=smuggled)
    assert released(answer) is None and no_secret_in(answer)
    assert answer["result"]["resultType"] == "input_required"  # the user is asked now


@pytest.mark.anyio
async def test_a_grant_retry_replayed_after_revocation_gets_nothing(
    local: LocalPiper, tmp_path: Path
) -> None:
    """Guards "a request state is not a grant": replaying the retry that once worked runs
    the call again, and the call finds the grant revoked (rule 9)."""
    async with served_2026(local, tmp_path) as http:
        url, state = await grant_question(http, {"variable": VARIABLE})
        assert (await open_and_choose(url, secret=WEATHER[0])).status_code == 200
        first = await send_2026(http, {"variable": VARIABLE}, state=state, responses=ACCEPT)
        assert released(first) is not None  # the user granted it: served once
        vault = Vault.open(local.home)
        vault.revoke(vault.local_user_id, DEFAULT_AGENT, VARIABLE)
        vault.close()
        replayed = await send_2026(http, {"variable": VARIABLE}, state=state, responses=ACCEPT)
    assert released(replayed) is None and no_secret_in(replayed)


@pytest.mark.anyio
async def test_a_grant_state_for_one_call_does_not_answer_another(
    local: LocalPiper, tmp_path: Path
) -> None:
    """Guards the state's binding to its call: the user granted weather_key; the retry's
    state, brought to a call for the value of notes_key, neither skips its reveal question
    nor releases anything."""
    async with served_2026(local, tmp_path) as http:
        url, state = await grant_question(http, {"variable": VARIABLE})
        assert (await open_and_choose(url, secret=WEATHER[0])).status_code == 200
        moved = await send_2026(
            http, {"variable": GRANTED, "mode": "value"}, state=state, responses=ACCEPT
        )
    assert released(moved) is None and no_secret_in(moved)
