"""Configuration from PIPER_* environment variables."""

from __future__ import annotations

import pytest

from piper_mcp.piper import PiperConfigError, load_settings
from piper_mcp.piper.settings import DEFAULT_LINK_URL


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
