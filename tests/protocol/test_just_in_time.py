"""Grants just in time: an ungranted variable sends the user to grant it; then the call goes on.

The server is `serve --local`'s composition in-process (`LocalPiper`, its grant page on
loopback), under the SDK's client in both protocol eras. The "browser" is an HTTP
client that follows the URL the elicitation carried, as a person's browser would.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult, ErrorData

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.vault import Vault
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.local_piper import LocalPiper
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import AGENT_ID, OPENAI_SECRET, USER_ID
from tests.grant_page import open_and_choose
from tests.protocol.conftest import make_server, structured, text_of

pytestmark = pytest.mark.anyio

AGENT = "jit-agent"
VARIABLE = "github_token"
SECRET = "GitHub token"
VALUE = "ghp_canary-just-in-time-4f1e9a"
NEW_VALUE = "ghp_canary-typed-into-the-page-77d0"

Browser = Callable[[str], Awaitable[None]]


@pytest.fixture
def vault_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vault whose agent declares `github_token` but has no grant for it."""
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    vault, _ = Vault.init(home)
    vault.add_agent(AGENT, None, owner_user_id=vault.local_user_id, variables=[VARIABLE])
    vault.put_secret(SECRET, VALUE, owner_user_id=vault.local_user_id)
    vault.close()
    return home


@pytest.fixture
def local(vault_home: Path) -> Iterator[LocalPiper]:
    piper = LocalPiper(AGENT).open()
    yield piper
    piper.stop()


def served(local: LocalPiper, tmp_path: Path, *, grant_wait: float = 30.0, reveal: str = "ask"):
    client = AsyncPiperClient.from_settings(local.settings, http_client=local.http_client())
    service = CredentialService(
        client,
        local.declared,
        policy=RevealPolicy(reveal),
        grants=local.grants,  # type: ignore[arg-type]
    )
    audit = AuditTrail(tmp_path / "audit.jsonl")
    return build_server(service, audit=audit, grant_wait=grant_wait), audit


def url_answering(
    browse: Browser | None, seen: list[ElicitRequestURLParams], action: str = "accept"
) -> Any:
    async def answer(context: object, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        assert isinstance(params, ElicitRequestURLParams), params
        seen.append(params)
        if browse is not None:
            await browse(params.url)
        return ElicitResult(action=action)  # type: ignore[arg-type]

    return answer


async def test_an_ungranted_variable_is_granted_on_the_page_and_the_call_answered(
    local: LocalPiper, tmp_path: Path, era: str
) -> None:
    server, audit = served(local, tmp_path)
    seen: list[ElicitRequestURLParams] = []

    async def choose_stored_secret(url: str) -> None:
        done = await open_and_choose(url, secret=SECRET)
        assert done.status_code == 200 and "Granted" in done.text

    answer = url_answering(choose_stored_secret, seen)
    async with Client(server, mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    credential = structured(result)
    assert credential["source"] == "piper_sts" and credential["token"]
    assert len(seen) == 1
    assert seen[0].url.startswith(local.grants.page_url + "/grant/")
    assert VARIABLE in seen[0].message
    outcomes = [(e["outcome"], e["variable"]) for e in audit.recent(10)]
    assert outcomes == [("refused", VARIABLE), ("ok", VARIABLE)]


async def test_a_new_secret_typed_into_the_page_is_stored_and_granted(
    local: LocalPiper, tmp_path: Path, era: str
) -> None:
    server, _ = served(local, tmp_path, reveal="allow")

    async def type_new_value(url: str) -> None:
        done = await open_and_choose(url, new_name="typed token", new_value=NEW_VALUE)
        assert done.status_code == 200
        assert NEW_VALUE not in done.text  # never echoed back

    answer = url_answering(type_new_value, [])
    async with Client(server, mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE, "mode": "value"})
    assert structured(result)["value"] == NEW_VALUE


async def test_a_grant_made_with_the_cli_meanwhile_also_lets_the_call_go_on(
    local: LocalPiper, tmp_path: Path, vault_home: Path, era: str
) -> None:
    server, _ = served(local, tmp_path)

    async def grant_elsewhere(url: str) -> None:
        def grant() -> None:
            vault = Vault.open(vault_home)
            vault.grant(vault.local_user_id, AGENT, VARIABLE, SECRET)
            vault.close()

        threading.Timer(0.5, grant).start()  # after the client said "accept"

    answer = url_answering(grant_elsewhere, [])
    async with Client(server, mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert structured(result)["source"] == "piper_sts"


@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_user_who_does_not_open_the_page_gets_the_grant_advice(
    local: LocalPiper, tmp_path: Path, era: str, action: str
) -> None:
    server, _ = served(local, tmp_path)
    answer = url_answering(None, [], action=action)
    async with Client(server, mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error
    said = text_of(result)
    assert "did not open the grant page" in said
    assert f"local grant {AGENT} {VARIABLE} SECRET" in said


async def test_a_denial_on_the_page_refuses_the_call(
    local: LocalPiper, tmp_path: Path, era: str
) -> None:
    server, _ = served(local, tmp_path)

    async def deny(url: str) -> None:
        done = await open_and_choose(url, action="deny")
        assert "Denied" in done.text

    async with Client(server, mode=era, elicitation_callback=url_answering(deny, [])) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error and "denied the grant" in text_of(result)


async def test_no_grant_in_time_is_said_with_the_setting_to_wait_longer(
    local: LocalPiper, tmp_path: Path, era: str
) -> None:
    server, _ = served(local, tmp_path, grant_wait=0.5)
    answer = url_answering(None, [])
    async with Client(server, mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error and "PIPER_MCP_GRANT_WAIT_SECONDS" in text_of(result)


async def test_a_client_without_elicitation_gets_todays_error_and_no_link(
    local: LocalPiper, tmp_path: Path, era: str
) -> None:
    server, _ = served(local, tmp_path)
    async with Client(server, mode=era) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    said = text_of(result)
    assert result.is_error
    assert f"local grant {AGENT} {VARIABLE} SECRET" in said
    assert "/grant/" not in said  # a one-time link never reaches the model's context


async def test_a_value_granted_just_in_time_is_still_revealed_only_with_consent(
    local: LocalPiper, tmp_path: Path, era: str
) -> None:
    """The grant question, then the reveal question: each on its own rounds in 2026-07-28."""
    server, audit = served(local, tmp_path, reveal="ask")
    asked: list[str] = []

    async def user(context: object, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.mode)
        if isinstance(params, ElicitRequestURLParams):
            await open_and_choose(params.url, secret=SECRET)
        return ElicitResult(action="accept", content={})

    async with Client(server, mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE, "mode": "value"})
    assert structured(result)["value"] == VALUE
    assert asked == ["url", "form"]
    last = audit.recent(5)[-1]
    assert (last["outcome"], last["consent_asked"], last["consent_given"]) == ("ok", True, True)


async def test_with_the_piper_cloud_the_grant_page_is_its_and_piper_is_asked_again(
    piper: LocalBackend, era: str
) -> None:
    """The local backend plays the Piper cloud; the user grants on "its" page meanwhile."""
    seen: list[ElicitRequestURLParams] = []

    async def grant_in_the_cloud(url: str) -> None:
        grant = lambda: piper.vault.grant(USER_ID, AGENT_ID, "slack_token", OPENAI_SECRET)  # noqa: E731
        threading.Timer(0.3, grant).start()

    client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
    answer = url_answering(grant_in_the_cloud, seen)
    async with Client(make_server(client), mode=era, elicitation_callback=answer) as mcp:  # type: ignore[arg-type]
        result = await mcp.call_tool("get_secret", {"variable": "slack_token"})
    await client.aclose()
    assert structured(result)["source"] == "piper_sts"
    assert seen[0].url.startswith("https://agentpiper.com/")
    assert "variable=slack_token" in seen[0].url
