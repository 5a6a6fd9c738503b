"""The tools over the wire: every success and every failure class, against a real local Piper."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mcp import Client

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from tests.conftest import (
    AGENT_ID,
    DB_SECRET,
    DB_VALUE,
    INSTANCE_ID,
    OPENAI_VALUE,
    credential_id,
)
from tests.protocol.conftest import make_server, structured, text_of, wire

pytestmark = pytest.mark.anyio


async def test_get_secret_returns_an_sts_token_that_reads_the_secret(
    mcp: Client, piper: LocalBackend, piper_client: AsyncPiperClient
) -> None:
    result = await mcp.call_tool("get_secret", {"variable": "database_url"})
    data = structured(result)
    cred = credential_id(piper, DB_SECRET)
    assert data | {"token": "…", "expires_at": "…"} == {
        "variable": "database_url",
        "source": "piper_sts",
        "token": "…",
        "token_type": "Bearer",
        "expires_in": 3600,
        "expires_at": "…",
        "credential_id": cred,
        "secret_version": f"projects/{piper.project_id}/secrets/{cred}/versions/latest",
        "secret_manager_endpoint": piper.base_url,
        "value": None,
        "env_var_name": None,
        "consent": "not_needed",
    }
    expires = datetime.fromisoformat(data["expires_at"])
    assert 3500 < (expires - datetime.now(UTC)).total_seconds() <= 3600
    sts = await piper_client.get_secret("database_url")  # a second token for the same grant
    assert (
        await piper_client.read_secret_value(sts.model_copy(update={"value": data["token"]}))
        == DB_VALUE
    )


async def test_get_secret_matches_a_declared_name_by_its_normalized_form(mcp: Client) -> None:
    data = structured(await mcp.call_tool("get_secret", {"variable": "openai-api-key"}))
    assert data["variable"] == "OpenAI API Key"


async def test_a_missing_grant_is_a_tool_error_with_the_grant_page(mcp: Client) -> None:
    result = await mcp.call_tool("get_secret", {"variable": "slack_token"})
    assert result.is_error is True
    text = text_of(result)
    assert "has not granted this agent the variable 'slack_token'" in text
    assert (
        f"https://agentpiper.com/secrets?response_type=code&scope=manage_grants&client={AGENT_ID}"
        "&variable=slack_token" in text
    )


async def test_a_raw_value_needs_consent_a_client_without_elicitation_cannot_give(
    mcp: Client,
) -> None:
    result = await mcp.call_tool("get_secret", {"variable": "OpenAI API Key", "mode": "value"})
    assert result.is_error is True
    assert "cannot ask the user" in text_of(result)
    assert "--reveal allow" in text_of(result)
    assert OPENAI_VALUE not in str(wire(result))


async def test_an_environment_fallback_value_is_named_but_never_returned(
    mcp: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-canary-env-value")
    result = await mcp.call_tool("get_secret", {"variable": "slack_token"})
    assert result.is_error is True
    text = text_of(result)
    assert "A raw value exists in the environment variable SLACK_TOKEN" in text
    assert "mode='value' for the raw value (the user will be asked)" in text
    assert "xoxb-canary-env-value" not in str(wire(result))


async def test_a_local_file_value_is_named_with_pipers_reason_but_never_returned(
    piper: LocalBackend, tmp_path: Path, era: str
) -> None:
    config = tmp_path / "secrets.json"
    config.write_text(json.dumps({"slack_token": "xoxb-canary-file-value"}))
    client = AsyncPiperClient(AGENT_ID, **piper.client_settings(), local_config_file_path=config)
    async with Client(make_server(client), mode=era) as mcp:  # type: ignore[arg-type]
        result = await mcp.call_tool("get_secret", {"variable": "slack_token"})
    assert result.is_error is True
    text = text_of(result)
    assert "has not granted this agent the variable 'slack_token'" in text
    assert "A raw value exists in the local config file" in text
    assert "xoxb-canary-file-value" not in str(wire(result))


async def test_link_not_running_names_the_cause_and_the_fix(
    piper: LocalBackend, unused_link_url: str, era: str
) -> None:
    client = AsyncPiperClient(
        AGENT_ID, **{**piper.client_settings(), "piper_link_service_url": unused_link_url}
    )
    async with Client(make_server(client), mode=era) as mcp:  # type: ignore[arg-type]
        result = await mcp.call_tool("get_secret", {"variable": "database_url"})
        link = structured(await mcp.call_tool("check_link", {}))
    assert result.is_error is True
    assert "Piper Link did not answer" in text_of(result)
    assert "Start the Piper Link app" in text_of(result)
    assert link | {"latency_ms": 0} == {
        "answered": False,
        "context": "none",
        "instance_id_suffix": None,
        "link_url": unused_link_url,
        "latency_ms": 0,
        "problem": "not reachable (ConnectError)",
        "advice": link["advice"],
        "vault": None,  # the Piper cloud: no local vault
    }
    assert "start the Piper Link app" in link["advice"]


async def test_wrong_agent_credentials_name_the_settings_to_check(
    piper: LocalBackend, era: str
) -> None:
    client = AsyncPiperClient(
        AGENT_ID, "a-wrong-client-secret-0123456789abcdef", **piper.client_settings()
    )
    async with Client(make_server(client), mode=era) as mcp:  # type: ignore[arg-type]
        result = await mcp.call_tool("get_secret", {"variable": "database_url"})
    assert result.is_error is True
    assert "401 invalid_client" in text_of(result)
    assert "Check PIPER_CLIENT_ID and PIPER_CLIENT_SECRET" in text_of(result)
    assert "a-wrong-client-secret-0123456789abcdef" not in text_of(result)


async def test_an_unreachable_backend_is_a_tool_error_and_the_server_keeps_serving(
    piper: LocalBackend, era: str
) -> None:
    client = AsyncPiperClient(
        AGENT_ID, piper_link_instance_id=INSTANCE_ID, **piper.client_settings()
    )
    async with Client(make_server(client), mode=era) as mcp:  # type: ignore[arg-type]
        piper.stop()
        result = await mcp.call_tool("get_secret", {"variable": "database_url"})
        link = structured(await mcp.call_tool("check_link", {}))
    assert result.is_error is True
    assert "Could not reach Piper's piper-resolve-variable-mapping" in text_of(result)
    assert "backend is running" in text_of(result)
    assert link["context"] == "configured"


async def test_check_link_reports_the_context_by_suffix_only(mcp: Client) -> None:
    data = structured(await mcp.call_tool("check_link", {}))
    assert data["answered"] is True
    assert data["context"] == "piper_link"
    assert data["instance_id_suffix"] == "…" + INSTANCE_ID[-4:]
    assert INSTANCE_ID not in str(data)
    assert data["advice"] is None


async def test_list_variables_says_where_each_would_come_from(
    mcp: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_TOKEN", "xoxb-canary-listed")
    result = await mcp.call_tool("list_variables", {})
    data = structured(result)
    by_name = {v["variable"]: v for v in data["variables"]}
    assert [v["source"] for v in data["variables"]] == ["piper", "piper", "environment"]
    slack = by_name["slack_token"]
    assert slack["env_var_name"] == "SLACK_TOKEN"
    assert "grant 'slack_token'" in slack["advice"]
    assert "xoxb-canary-listed" not in str(wire(result))
    assert "piper-sts-" not in str(wire(result))


async def test_list_variables_advises_for_missing_ones(mcp: Client) -> None:
    data = structured(await mcp.call_tool("list_variables", {}))
    slack = data["variables"][2]
    assert slack["source"] == "missing"
    assert (
        slack["piper_problem"] == "The user has not granted this agent the variable 'slack_token'."
    )
    assert slack["advice"].startswith("Ask the user to grant 'slack_token' to this agent: https://")
