"""One table names each setting three ways: settings field, client keyword, environment variable."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import trustme
from piper_sdk.client import PiperClient as SdkClient

from piper_mcp.piper import AsyncPiperClient, load_settings
from piper_mcp.piper.settings import SETTINGS, PiperSettings, Setting

# Keywords of the published SDK's PiperClient this client does not take, and what to
# use instead. A keyword the SDK adds fails the test below until it is placed.
SDK_KEYWORDS_NOT_TAKEN = {
    "_piper_system_project_id": "project_id",
    "_piper_system_region": "region",
    "requests_session": "http_client (an httpx.AsyncClient)",
    "use_piper": "set client_id; without one Piper is not asked",
    "attempt_local_discovery": "piper_link_instance_id (a given instance id skips Link)",
    "fallback_to_env": "enable_env_fallback",
    "fallback_to_local_config": "local_config_file_path (giving the file turns the tier on)",
}


def keywords(function: object) -> set[str]:
    return set(inspect.signature(function).parameters) - {"self"}  # type: ignore[arg-type]


def test_the_table_names_every_settings_field_once() -> None:
    fields = [setting.field for setting in SETTINGS]
    assert sorted(fields) == sorted(PiperSettings.model_fields)


def test_the_table_names_every_client_keyword() -> None:
    taken = {setting.keyword for setting in SETTINGS if setting.keyword}
    assert taken == keywords(AsyncPiperClient.__init__) - {"http_client"}


def test_every_keyword_of_the_published_sdk_is_taken_or_has_a_replacement() -> None:
    taken = keywords(AsyncPiperClient.__init__)
    sdk = keywords(SdkClient.__init__)
    assert sdk - taken == set(SDK_KEYWORDS_NOT_TAKEN)
    assert set(SDK_KEYWORDS_NOT_TAKEN).isdisjoint(taken)


SAMPLES: dict[str, object] = {
    "client_id": "agent-x",
    "client_secret": "s" * 32,
    "client_secret_name": "agent-secret-x",
    "project_id": "42",
    "region": "europe-west1",
    "token_url": "https://token.example",
    "resolve_mapping_url": "https://resolve.example",
    "get_scoped_url": "https://scoped.example",
    "exchange_secret_url": "https://exchange.example",
    "link_url": "http://127.0.0.1:9/piper-link-context",
    "instance_id": "inst",
    "secret_manager_endpoint": "https://sm.example",
    "env_fallback": False,
    "env_prefix": "MYAPP_",
    "env_map": {"My Key": "EXACT"},
    "local_config_file": "secrets.json",
    "ca_bundle": "ca.pem",
    "grant_page_url": "https://piper.example/secrets",
    "token_timeout": 1.5,
    "resolve_timeout": 1.5,
    "scoped_timeout": 1.5,
    "exchange_timeout": 1.5,
    "link_timeout": 1.5,
    "revocation_window": 5.0,
    "retry_attempts": 5,
    "retry_deadline": 5.0,
}


@pytest.fixture(autouse=True)
def in_a_folder_with_a_ca_bundle(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))


def as_env(value: object) -> str:
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def sample_of(setting: Setting) -> object:
    """The sample value as the settings model holds it."""
    return getattr(
        PiperSettings.model_validate({setting.field: SAMPLES[setting.field]}), setting.field
    )


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.env_var)
def test_each_environment_name_is_the_one_pydantic_settings_reads(
    setting: Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert getattr(load_settings(), setting.field) != sample_of(setting)
    monkeypatch.setenv(setting.env_var, as_env(SAMPLES[setting.field]))
    assert getattr(load_settings(), setting.field) == sample_of(setting)


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if s.keyword], ids=lambda setting: setting.keyword
)
def test_each_client_keyword_sets_its_field(setting: Setting) -> None:
    assert setting.keyword
    client = AsyncPiperClient(**{setting.keyword: SAMPLES[setting.field]})
    assert getattr(client.settings, setting.field) == sample_of(setting)
