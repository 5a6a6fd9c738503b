"""`call_api` under a real MCP client: consent, audit, refusals, a grant made just in time.

`serve --local`'s composition in-process (`LocalPiper`), in both protocol eras, calling
the HTTPS servers of conftest.py with the trustme CA and the test resolver injected.
The credential never appears in a result, an error or the audit trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult

from piper_mcp.broker.rules import ApiRule
from piper_mcp.local.vault import Vault
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.app import build_server
from piper_mcp.server.audit import AuditTrail
from piper_mcp.server.brokered_calls import BrokeredCalls
from piper_mcp.server.credentials import CredentialService
from piper_mcp.server.local_piper import LocalPiper
from piper_mcp.server.policy import RevealPolicy
from tests.broker.conftest import CREDENTIAL, Servers, masked, resolve
from tests.grant_page import open_and_choose

pytestmark = pytest.mark.anyio

AGENT = "broker-agent"
VARIABLE = "example_key"
UNGRANTED = "later_key"
SECRET = "Example API key"


@pytest.fixture(params=["legacy", "auto"])
def era(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalPiper]:
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    vault, _ = Vault.init(home)
    me = vault.local_user_id
    vault.add_agent(AGENT, None, owner_user_id=me, variables=[VARIABLE, UNGRANTED])
    vault.put_secret(SECRET, CREDENTIAL, owner_user_id=me)
    vault.grant(me, AGENT, VARIABLE, SECRET)
    vault.close()
    piper = LocalPiper(AGENT).open()
    yield piper
    piper.stop()


class Served:
    def __init__(
        self,
        local: LocalPiper,
        servers: Servers,
        tmp_path: Path,
        *,
        reveal: str = "allow",
        rules: dict[str, ApiRule] | None = None,
    ) -> None:
        client = AsyncPiperClient.from_settings(local.settings, http_client=local.http_client())
        service = CredentialService(
            client,
            local.declared,
            policy=RevealPolicy(reveal),  # type: ignore[arg-type]
            grants=local.grants,
        )
        if rules is None:
            rules = {VARIABLE: servers.rule(), UNGRANTED: servers.rule()}
        calls = BrokeredCalls(
            service,
            rules,
            stored_rule=local.stored_rule,
            ssl_context=servers.ssl_context,
            resolve=resolve,
        )
        self.audit_file = tmp_path / "audit.jsonl"
        self.audit = AuditTrail(self.audit_file)
        self.server = build_server(service, calls=calls, audit=self.audit, grant_wait=30)


class User:
    def __init__(self, action: str = "accept", content: dict[str, Any] | None = None) -> None:
        self.action, self.content = action, content or {}
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, context: object, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        if isinstance(params, ElicitRequestURLParams):
            done = await open_and_choose(params.url, secret=SECRET)
            assert done.status_code == 200, done.text
            return ElicitResult(action="accept")
        if self.action != "accept":
            return ElicitResult(action=self.action)  # type: ignore[arg-type]
        return ElicitResult(action="accept", content=self.content)


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def leaked(*texts: str) -> bool:
    return any(CREDENTIAL in t or masked(t) != t for t in texts)


async def test_the_api_gets_the_key_and_the_model_only_the_answer(
    local: LocalPiper, servers: Servers, tmp_path: Path, era: str
) -> None:
    served = Served(local, servers, tmp_path)
    async with Client(served.server, mode=era) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/needs-key")}
        )
    assert result.is_error is False, text(result)
    data = result.structured_content
    assert (data["status"], json.loads(data["body"])) == (200, {"ok": True})
    assert data["host"] == servers.api and data["variable"] == VARIABLE
    assert servers.api_requests[0]["authorization"] == "Bearer <credential>"
    [entry] = served.audit.recent(5)
    assert {k: entry[k] for k in ("variable", "mode", "host", "method", "status", "outcome")} == {
        "variable": VARIABLE,
        "mode": "call",
        "host": servers.api,
        "method": "GET",
        "status": 200,
        "outcome": "ok",
    }
    assert entry["bytes"] == len(data["body"])
    assert not leaked(str(result), served.audit_file.read_text())


async def test_an_api_that_echoes_the_key_hands_back_none_of_it(
    local: LocalPiper, servers: Servers, tmp_path: Path, era: str
) -> None:
    served = Served(local, servers, tmp_path)
    async with Client(served.server, mode=era) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/echo-key")}
        )
    assert result.is_error is False
    assert "[redacted]" in result.structured_content["body"]
    assert not leaked(str(result))


async def test_ask_asks_once_per_variable_and_host_and_remembers_in_a_session(
    local: LocalPiper, servers: Servers, tmp_path: Path, era: str
) -> None:
    served = Served(local, servers, tmp_path, reveal="ask")
    user = User(content={"remember": True} if era == "legacy" else {})
    call = {"variable": VARIABLE, "url": servers.url("/needs-key")}
    async with Client(served.server, mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
        first = await client.call_tool("call_api", call)
        second = await client.call_tool("call_api", call)
    assert first.is_error is False and second.is_error is False
    assert servers.api in user.asked[0].message
    assert "the model never sees it" in user.asked[0].message
    assert len(user.asked) == (1 if era == "legacy" else 2)  # no session to remember in
    consents = [(e["consent_asked"], e["consent_given"]) for e in served.audit.recent(5)]
    assert consents[0] == (True, True)


@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_user_who_says_no_stops_the_call_before_anything_is_sent(
    local: LocalPiper, servers: Servers, tmp_path: Path, era: str, action: str
) -> None:
    served = Served(local, servers, tmp_path, reveal="ask")
    async with Client(served.server, mode=era, elicitation_callback=User(action)) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/needs-key")}
        )
    assert result.is_error is True
    assert servers.api_requests == []
    assert served.audit.recent(5)[0]["outcome"] == "refused"


async def test_a_client_that_cannot_ask_gets_no_call(
    local: LocalPiper, servers: Servers, tmp_path: Path, era: str
) -> None:
    served = Served(local, servers, tmp_path, reveal="ask")
    async with Client(served.server, mode=era) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/needs-key")}
        )
    assert result.is_error is True and "cannot ask the user" in text(result)
    assert servers.api_requests == []


async def test_deny_refuses_and_says_what_to_use(
    local: LocalPiper, servers: Servers, tmp_path: Path
) -> None:
    served = Served(local, servers, tmp_path, reveal="deny")
    async with Client(served.server, mode="legacy") as client:
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/needs-key")}
        )
    assert result.is_error is True and "reveal policy denies" in text(result)
    assert servers.api_requests == []


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        ({"headers": {"Authorization": "Bearer mine"}}, "Authorization"),
        ({"url": "https://other.example.test/steal"}, "other.example.test"),
        ({"url": "http://api.example.test/needs-key"}, "https"),
        ({"variable": "PATH"}, "not a variable this agent declares"),
    ],
)
async def test_what_the_rule_does_not_allow_is_refused_before_anything_is_sent(
    local: LocalPiper,
    servers: Servers,
    tmp_path: Path,
    arguments: dict[str, Any],
    said: str,
) -> None:
    served = Served(local, servers, tmp_path)
    call = {"variable": VARIABLE, "url": servers.url("/needs-key"), **arguments}
    async with Client(served.server, mode="auto") as client:  # type: ignore[arg-type]
        result = await client.call_tool("call_api", call)
    assert result.is_error is True and said in text(result)
    assert servers.api_requests == [] and servers.other_requests == []
    assert not leaked(str(result), served.audit_file.read_text())


async def test_without_a_rule_the_error_says_how_to_grant_with_one(
    local: LocalPiper, servers: Servers, tmp_path: Path
) -> None:
    served = Served(local, servers, tmp_path, rules={})
    async with Client(served.server, mode="legacy") as client:
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/needs-key")}
        )
    assert result.is_error is True
    assert f"local grant AGENT {VARIABLE} SECRET --use openai" in text(result)


async def test_a_rule_stored_with_the_grant_is_used(
    local: LocalPiper, servers: Servers, tmp_path: Path
) -> None:
    vault = Vault.open(local.home)
    vault.grant(
        vault.local_user_id, AGENT, VARIABLE, SECRET, api_rule=servers.rule().model_dump_json()
    )
    vault.close()
    served = Served(local, servers, tmp_path, rules={})
    async with Client(served.server, mode="legacy") as client:
        result = await client.call_tool(
            "call_api", {"variable": VARIABLE, "url": servers.url("/needs-key")}
        )
    assert result.is_error is False and result.structured_content["status"] == 200


async def test_an_ungranted_variable_is_granted_just_in_time_and_the_call_made(
    local: LocalPiper, servers: Servers, tmp_path: Path, era: str
) -> None:
    served = Served(local, servers, tmp_path)
    user = User()
    async with Client(served.server, mode=era, elicitation_callback=user) as client:  # type: ignore[arg-type]
        result = await client.call_tool(
            "call_api", {"variable": UNGRANTED, "url": servers.url("/needs-key")}
        )
    assert result.is_error is False, text(result)
    assert result.structured_content["status"] == 200
    assert [question.mode for question in user.asked] == ["url"]
    outcomes = [e["outcome"] for e in served.audit.recent(5)]
    assert outcomes == ["refused", "ok"]
