"""Configuration from PIPER_* environment variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from piper_mcp.piper import AsyncPiperClient, PiperConfigError, load_settings
from piper_mcp.piper.settings import DEFAULT_LINK_URL
from piper_mcp.server.settings import ServeSettings


def test_defaults_point_at_the_piper_cloud_and_speak_v2() -> None:
    settings = load_settings()
    assert settings.token_url == "https://piper-token-endpoint-444535882337.us-central1.run.app"
    assert settings.get_scoped_url == (
        "https://getscopedgcpcredentials-444535882337.us-central1.run.app"
    )
    assert settings.link_url == DEFAULT_LINK_URL == "http://localhost:31477/piper-link-context"
    assert settings.env_fallback is True
    assert settings.protocol_version == 2


def test_project_and_region_shape_the_default_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPER_PROJECT_ID", "42")
    monkeypatch.setenv("PIPER_REGION", "europe-west1")
    settings = load_settings()
    assert settings.resolve_mapping_url == (
        "https://piper-resolve-variable-mapping-42.europe-west1.run.app"
    )
    assert settings.exchange_secret_url == (
        "https://piper-exchange-sts-for-secret-42.europe-west1.run.app"
    )


def test_every_documented_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not checked here")
    values = {
        "PIPER_CLIENT_ID": "agent",
        "PIPER_CLIENT_SECRET": "s" * 32,
        "PIPER_TOKEN_URL": "https://token.example",
        "PIPER_RESOLVE_MAPPING_URL": "https://resolve.example",
        "PIPER_GET_SCOPED_URL": "https://scoped.example",
        "PIPER_EXCHANGE_SECRET_URL": "https://exchange.example",
        "PIPER_LINK_URL": "http://127.0.0.1:9999/piper-link-context",
        "PIPER_INSTANCE_ID": "inst",
        "PIPER_SECRET_MANAGER_ENDPOINT": "http://127.0.0.1:8080",
        "PIPER_ENV_FALLBACK": "false",
        "PIPER_ENV_PREFIX": "MYAPP_",
        "PIPER_ENV_MAP": '{"My Key": "EXACT"}',
        "PIPER_LOCAL_CONFIG_FILE": str(tmp_path / "secrets.json"),
        "PIPER_CA_BUNDLE": str(bundle),
        "PIPER_GRANT_PAGE_URL": "https://piper.example/secrets",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.client_id == "agent"
    assert settings.client_secret is not None
    assert settings.client_secret.get_secret_value() == "s" * 32
    assert settings.protocol_version == 1
    assert settings.token_url == "https://token.example"
    assert settings.link_url == "http://127.0.0.1:9999/piper-link-context"
    assert settings.instance_id == "inst"
    assert settings.env_fallback is False
    assert settings.env_prefix == "MYAPP_"
    assert settings.env_map == {"My Key": "EXACT"}
    assert settings.ca_bundle == bundle
    assert settings.grant_page_url == "https://piper.example/secrets"


def test_a_secret_name_alone_selects_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPER_CLIENT_SECRET_NAME", "agent-secret-agent")
    assert load_settings().protocol_version == 1


def test_the_client_secret_never_shows_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPER_CLIENT_SECRET", "do-not-print-me-0123456789abcdef")
    assert "do-not-print-me" not in repr(load_settings())


@pytest.mark.parametrize(
    "url",
    [
        "http://piper.example/token",
        "http://10.0.0.5/token",
        "ftp://127.0.0.1/token",
        "not a url",
    ],
)
def test_plain_http_is_refused_except_on_loopback(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("PIPER_TOKEN_URL", url)
    with pytest.raises(PiperConfigError, match=r"PIPER_TOKEN_URL: .*must be an https:// URL"):
        load_settings()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:9/x", "https://a.b/x"]
)
def test_loopback_http_and_any_https_are_accepted(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("PIPER_TOKEN_URL", url)
    assert load_settings().token_url == url


def test_secret_and_secret_name_together_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPER_CLIENT_SECRET", "s" * 32)
    monkeypatch.setenv("PIPER_CLIENT_SECRET_NAME", "agent-secret-x")
    with pytest.raises(PiperConfigError, match="PIPER_CLIENT_SECRET or PIPER_CLIENT_SECRET_NAME"):
        load_settings()


def test_malformed_env_map_says_which_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPER_ENV_MAP", "{not json")
    with pytest.raises(PiperConfigError, match="PIPER_ENV_MAP could not be parsed"):
        load_settings()


def test_missing_ca_bundle_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PIPER_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(PiperConfigError, match="is not a file"):
        load_settings()


@pytest.mark.parametrize("weak", ["", "   ", "s" * 31], ids=["empty", "blank", "short"])
def test_a_weak_client_secret_is_an_error_never_a_switch_to_v2(
    monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    monkeypatch.setenv("PIPER_CLIENT_SECRET", weak)
    with pytest.raises(PiperConfigError, match="PIPER_CLIENT_SECRET: the agent's client secret"):
        load_settings()
    with pytest.raises(PiperConfigError, match="PIPER_CLIENT_SECRET"):
        AsyncPiperClient("agent", client_secret=weak)


GOOD_TOKEN = "a-good-http-token-3c9e1f7a0b5d2e8f4a6c"
NAMES_THE_SETTING = "the HTTP bearer token (PIPER_MCP_HTTP_TOKEN / --auth-token)"


@pytest.mark.parametrize(
    "weak",
    ["", "   ", "t" * 31, " " + GOOD_TOKEN, GOOD_TOKEN + "\n"],
    ids=["empty", "blank", "short", "leading space", "newline"],
)
def test_a_weak_http_token_is_refused_from_the_environment_and_from_a_flag(
    monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(NAMES_THE_SETTING)):
        ServeSettings(http_token=weak)  # as --auth-token gives it
    monkeypatch.setenv("PIPER_MCP_HTTP_TOKEN", weak)
    with pytest.raises(ValidationError, match=re.escape(NAMES_THE_SETTING)):
        ServeSettings()


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"], ids=["none", "LF", "CRLF"])
def test_the_token_file_gives_the_token_without_its_line_ending(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ending: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_bytes((GOOD_TOKEN + ending).encode())
    token_file.chmod(0o600)
    monkeypatch.setenv("PIPER_MCP_HTTP_TOKEN_FILE", str(token_file))
    settings = ServeSettings()
    assert settings.http_token is not None
    assert settings.http_token.get_secret_value() == GOOD_TOKEN
    assert GOOD_TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("content", "mode", "said"),
    [
        (GOOD_TOKEN, 0o640, "is open to other users (mode 640); run `chmod 600"),
        (GOOD_TOKEN + "\n" + GOOD_TOKEN, 0o600, "a second line?"),
        ("t" * 5000, 0o600, "is over 4096 bytes"),
        ("\n", 0o600, "is empty"),
    ],
    ids=["group can read", "two lines", "huge", "empty"],
)
def test_a_token_file_that_is_not_one_private_strong_token_is_refused(
    tmp_path: Path, content: str, mode: int, said: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    token_file.chmod(mode)
    with pytest.raises(ValidationError, match=re.escape(said)) as refused:
        ServeSettings(http_token_file=token_file)
    assert GOOD_TOKEN not in str(refused.value)


def test_a_token_and_a_token_file_together_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN)
    token_file.chmod(0o600)
    with pytest.raises(ValidationError, match="not both"):
        ServeSettings(http_token=GOOD_TOKEN, http_token_file=token_file)


def test_a_stdio_server_never_reads_its_token_from_standard_input() -> None:
    # Standard input is the host's MCP stream: reading a token there would swallow it.
    with pytest.raises(ValidationError, match="over stdio, standard input carries MCP"):
        ServeSettings(transport="stdio", http_token_file="/dev/stdin")


def test_the_session_cap_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeSettings().max_sessions == 100
    monkeypatch.setenv("PIPER_MCP_MAX_SESSIONS", "3")
    assert ServeSettings().max_sessions == 3
    monkeypatch.setenv("PIPER_MCP_MAX_SESSIONS", "0")
    with pytest.raises(ValidationError, match="max_sessions"):
        ServeSettings()


@pytest.mark.parametrize("stray", ["VARIABLES", "variables", "PIPER_MCP_VARIABLES"])
def test_only_piper_variables_declares_what_is_served(
    monkeypatch: pytest.MonkeyPatch, stray: str
) -> None:
    """An unrelated `VARIABLES` in a host's environment must not choose what a model may ask."""
    monkeypatch.delenv("PIPER_VARIABLES", raising=False)
    monkeypatch.setenv(stray, "leak_me")
    assert ServeSettings().variables == []
    monkeypatch.setenv("PIPER_VARIABLES", "openai_api_key,github_token")
    assert ServeSettings().variables == ["openai_api_key", "github_token"]
