"""Configuration of the Piper client, read from `PIPER_*` environment variables.

One model, validated once: URLs must be HTTPS unless they point at this
machine (the local backend and Piper Link serve plain HTTP on loopback).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from piper_mcp.network import is_loopback_host
from piper_mcp.piper import protocol_names
from piper_mcp.secret_strength import checked_secret
from piper_mcp.validation import env_var_name

DEFAULT_PROJECT_ID = "444535882337"
DEFAULT_REGION = "us-central1"
DEFAULT_LINK_URL = (
    f"http://localhost:{protocol_names.DEFAULT_LINK_PORT}{protocol_names.LINK_CONTEXT_PATH}"
)


def checked_url(url: str) -> str:
    """`url` if it is HTTPS, or HTTP to a loopback address; a clear error otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return url
    raise ValueError(
        f"{url!r} must be an https:// URL (plain http:// is allowed only for "
        "127.0.0.1, ::1 or localhost)"
    )


BackendUrl = Annotated[str, AfterValidator(checked_url)]


def _strong_client_secret(secret: SecretStr) -> SecretStr:
    # An empty PIPER_CLIENT_SECRET= (an unset variable in a unit file) is a mistake to
    # report, never a quiet switch of the agent to protocol v2.
    checked_secret(
        secret.get_secret_value(),
        "the agent's client secret",
        fix="set the one Piper issued for this agent (or PIPER_CLIENT_SECRET_NAME instead)",
    )
    return secret


ClientSecret = Annotated[SecretStr, AfterValidator(_strong_client_secret)]


def function_url(function: str, project_id: str, region: str) -> str:
    """The Cloud Run URL of one Piper function."""
    return f"https://{function}-{project_id}.{region}.run.app"


class PiperSettings(BaseSettings):
    """Everything the Piper client needs; see the configuration table in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="PIPER_", extra="ignore", frozen=True)

    client_id: str | None = None
    client_secret: ClientSecret | None = None
    client_secret_name: str | None = None
    project_id: str = DEFAULT_PROJECT_ID
    region: str = DEFAULT_REGION
    token_url: BackendUrl | None = None
    resolve_mapping_url: BackendUrl | None = None
    get_scoped_url: BackendUrl | None = None
    exchange_secret_url: BackendUrl | None = None
    link_url: BackendUrl = DEFAULT_LINK_URL
    instance_id: str | None = None
    secret_manager_endpoint: BackendUrl | None = None
    env_fallback: bool = True
    env_prefix: str = ""
    env_map: dict[str, str] = Field(default_factory=dict)
    local_config_file: Path | None = None
    ca_bundle: Path | None = None
    grant_page_url: str = "https://agentpiper.com/secrets"
    # Per-function timeouts (seconds), the published SDK's by default.
    token_timeout: float = Field(default=15.0, gt=0)
    resolve_timeout: float = Field(default=12.0, gt=0)
    scoped_timeout: float = Field(default=15.0, gt=0)
    exchange_timeout: float = Field(default=10.0, gt=0)
    link_timeout: float = Field(default=1.0, gt=0)
    # How long an STS token may be reused for a variable: this bounds how long a revoked
    # grant can still be served from the cache. 0 turns the cache off.
    revocation_window: float = Field(default=30.0, ge=0, le=3600)
    retry_attempts: int = Field(default=3, ge=1, le=10)
    retry_deadline: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _defaults_from_project(self) -> PiperSettings:
        for field, function in (
            ("token_url", protocol_names.TOKEN_FUNCTION),
            ("resolve_mapping_url", protocol_names.RESOLVE_MAPPING_FUNCTION),
            ("get_scoped_url", protocol_names.GET_SCOPED_FUNCTION),
            ("exchange_secret_url", protocol_names.EXCHANGE_SECRET_FUNCTION),
        ):
            if getattr(self, field) is None:
                object.__setattr__(
                    self, field, function_url(function, self.project_id, self.region)
                )
        if self.client_secret is not None and self.client_secret_name:
            raise ValueError("set PIPER_CLIENT_SECRET or PIPER_CLIENT_SECRET_NAME, not both")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ValueError(f"PIPER_CA_BUNDLE {str(self.ca_bundle)!r} is not a file")
        return self

    @property
    def protocol_version(self) -> Literal[1, 2]:
        """v1 (client credentials) when the agent has a secret, v2 (secretless) otherwise."""
        return 1 if self.client_secret is not None or self.client_secret_name else 2

    def timeout_for(self, function: str) -> float:
        timeouts = {
            protocol_names.TOKEN_FUNCTION: self.token_timeout,
            protocol_names.RESOLVE_MAPPING_FUNCTION: self.resolve_timeout,
            protocol_names.GET_SCOPED_FUNCTION: self.scoped_timeout,
            protocol_names.EXCHANGE_SECRET_FUNCTION: self.exchange_timeout,
        }
        return timeouts[function]

    def url_for(self, function: str) -> str:
        urls = {
            protocol_names.TOKEN_FUNCTION: self.token_url,
            protocol_names.RESOLVE_MAPPING_FUNCTION: self.resolve_mapping_url,
            protocol_names.GET_SCOPED_FUNCTION: self.get_scoped_url,
            protocol_names.EXCHANGE_SECRET_FUNCTION: self.exchange_secret_url,
        }
        url = urls[function]
        assert url is not None  # filled by _defaults_from_project
        return url


@dataclass(frozen=True)
class Setting:
    """One setting's names: its `PiperSettings` field, the `AsyncPiperClient` keyword that
    gives it (the published SDK's name; None: environment only), and its environment variable."""

    field: str
    keyword: str | None = None

    @property
    def env_var(self) -> str:
        return env_var_name(PiperSettings, self.field)


SETTINGS = (
    Setting("client_id", "client_id"),
    Setting("client_secret", "client_secret"),
    Setting("client_secret_name", "client_secret_name"),
    Setting("project_id", "project_id"),
    Setting("region", "region"),
    Setting("token_url", "token_url"),
    Setting("resolve_mapping_url", "resolve_mapping_url"),
    Setting("get_scoped_url", "get_scoped_url"),
    Setting("exchange_secret_url", "exchange_secret_url"),
    Setting("link_url", "piper_link_service_url"),
    Setting("instance_id", "piper_link_instance_id"),
    Setting("secret_manager_endpoint", "secret_manager_endpoint"),
    Setting("env_fallback", "enable_env_fallback"),
    Setting("env_prefix", "env_variable_prefix"),
    Setting("env_map", "env_variable_map"),
    Setting("local_config_file", "local_config_file_path"),
    Setting("ca_bundle", "ca_bundle"),
    Setting("grant_page_url", "piper_ui_grant_page_url"),
    Setting("token_timeout"),
    Setting("resolve_timeout"),
    Setting("scoped_timeout"),
    Setting("exchange_timeout"),
    Setting("link_timeout"),
    Setting("revocation_window"),
    Setting("retry_attempts"),
    Setting("retry_deadline"),
)

_BY_KEYWORD = {setting.keyword: setting for setting in SETTINGS if setting.keyword}


def fields_from_keywords(given: dict[str, Any]) -> dict[str, Any]:
    """`AsyncPiperClient` keywords (those not None) as `PiperSettings` fields."""
    return {_BY_KEYWORD[key].field: value for key, value in given.items() if value is not None}


def env_var_for_keyword(keyword: str) -> str:
    """The environment variable that sets what the client keyword `keyword` sets."""
    return _BY_KEYWORD[keyword].env_var
