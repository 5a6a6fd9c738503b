"""After Piper: the environment, then a local JSON file, in the published SDK's order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import (
    AsyncPiperClient,
    PiperClient,
    PiperGrantNeededError,
    PiperLinkNeededError,
)


@pytest.fixture
def granted_client(client_kwargs: dict[str, object]) -> PiperClient:
    return PiperClient(**client_kwargs, env_variable_prefix="MYAPP_")


def test_a_piper_grant_wins_over_the_environment(
    granted_client: PiperClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYAPP_OPENAI_API_KEY", "from-env")
    with granted_client as client:
        assert client.get_secret("OpenAI API Key")["source"] == "piper_sts"


def test_a_missing_grant_falls_back_to_the_prefixed_variable(
    granted_client: PiperClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYAPP_SLACK_TOKEN", "xoxb-from-env")
    with granted_client as client:
        result = client.get_secret("Slack Token")
    assert result.as_dict() == {
        "source": "environment_variable",
        "value": "xoxb-from-env",
        "env_var_name": "MYAPP_SLACK_TOKEN",
        "token_type": "DirectValue",
        "expires_in": None,
        "variable_name": "Slack Token",
    }


def test_an_exact_map_entry_beats_the_prefix(
    client_kwargs: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYAPP_SLACK_TOKEN", "prefixed")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "mapped")
    kwargs = {**client_kwargs, "env_variable_map": {"Slack Token": "SLACK_BOT_TOKEN"}}
    with PiperClient(**kwargs, env_variable_prefix="MYAPP_") as client:
        result = client.get_secret("Slack Token")
    assert (result["value"], result["env_var_name"]) == ("mapped", "SLACK_BOT_TOKEN")


def test_an_empty_environment_value_is_a_value(
    granted_client: PiperClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYAPP_SLACK_TOKEN", "")
    with granted_client as client:
        assert client.get_secret("Slack Token")["value"] == ""


def test_the_per_call_switch_and_variable_name_override_the_client(
    granted_client: PiperClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MYAPP_SLACK_TOKEN", "prefixed")
    monkeypatch.setenv("CALLER_CHOSEN", "explicit")
    with granted_client as client:
        with pytest.raises(PiperGrantNeededError) as caught:
            client.get_secret("Slack Token", enable_env_fallback_for_this_call=False)
        assert caught.value.attempts == []
        explicit = client.get_secret("Slack Token", fallback_env_var_name="CALLER_CHOSEN")
    assert explicit["value"] == "explicit"


def test_fallback_disabled_in_the_client_can_be_enabled_per_call(
    client_kwargs: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_TOKEN", "from-env")
    with PiperClient(**client_kwargs, enable_env_fallback=False) as client:
        with pytest.raises(PiperGrantNeededError):
            client.get_secret("slack_token")
        result = client.get_secret("slack_token", enable_env_fallback_for_this_call=True)
    assert result["source"] == "environment_variable"


def test_the_local_file_comes_after_the_environment(
    client_kwargs: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"Slack Token": "from-file", "github_pat": "ghp-file"}))
    monkeypatch.setenv("SLACK_TOKEN", "from-env")
    with PiperClient(**client_kwargs, local_config_file_path=secrets_file) as client:
        assert client.get_secret("Slack Token")["value"] == "from-env"
        result = client.get_secret("GitHub PAT")
    assert result.as_dict() == {
        "source": "local_config_file",
        "value": "ghp-file",
        "config_file_path": str(secrets_file),
        "variable_name": "GitHub PAT",
    }


def test_when_every_tier_fails_the_first_cause_names_each_attempt(
    piper: LocalBackend, tmp_path: Path, unused_link_url: str
) -> None:
    settings = {**piper.client_settings(), "piper_link_service_url": unused_link_url}
    missing_file = tmp_path / "missing.json"
    with PiperClient("agent-research", local_config_file_path=missing_file, **settings) as client:
        with pytest.raises(PiperLinkNeededError) as caught:
            client.get_secret("Slack Token")
    error = caught.value
    assert error.attempts == [
        "environment variable SLACK_TOKEN: not set",
        f"local config file {missing_file}: not found",
    ]
    assert "Also tried: environment variable SLACK_TOKEN: not set;" in str(error)


@pytest.mark.parametrize(
    ("content", "says"),
    [("{not json", "not valid JSON"), ('["a"]', "not a JSON object"), ("{}", "no entry")],
)
def test_a_bad_local_file_is_described_not_raised(
    client_kwargs: dict[str, object], tmp_path: Path, content: str, says: str
) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(content)
    with PiperClient(**client_kwargs, local_config_file_path=secrets_file) as client:
        with pytest.raises(PiperGrantNeededError) as caught:
            client.get_secret("Slack Token")
    assert says in caught.value.attempts[-1]


@pytest.mark.anyio
async def test_asking_piper_only_never_answers_from_a_fallback_tier(
    client_kwargs: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"Slack Token": "from-file"}))
    monkeypatch.setenv("SLACK_TOKEN", "from-env")
    async with AsyncPiperClient(**client_kwargs, local_config_file_path=secrets_file) as client:
        assert (await client.get_from_piper("OpenAI API Key")).source == "piper_sts"
        with pytest.raises(PiperGrantNeededError) as caught:
            await client.get_from_piper("Slack Token")
    assert caught.value.attempts == []
