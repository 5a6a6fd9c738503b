"""How `piper-mcp serve` runs: `PIPER_MCP_*` environment variables, overridden by flags."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from piper_mcp.local.home import DEFAULT_AGENT, default_home
from piper_mcp.secret_strength import checked_secret
from piper_mcp.server.policy import Reveal

Transport = Literal["stdio", "sse", "streamable-http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class ServeSettings(BaseSettings):
    """See README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="PIPER_MCP_", extra="ignore", frozen=True)

    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: LogLevel = "INFO"
    local: bool = False
    agent: str = DEFAULT_AGENT
    variables: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("variables", "PIPER_VARIABLES")
    )
    reveal: Reveal = "ask"
    reveal_overrides: dict[str, Reveal] = Field(default_factory=dict)
    audit_file: Path | None = None
    audit_max_bytes: int = Field(default=1_048_576, ge=4096)
    http_token: SecretStr | None = None
    http_token_file: Path | None = None
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_bytes: int = Field(default=65_536, ge=1024)
    session_idle_seconds: float = Field(default=1800.0, gt=0)
    max_sessions: int = Field(default=100, ge=1)

    @field_validator("variables", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("reveal", "log_level", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @model_validator(mode="after")
    def _strong_http_token(self) -> ServeSettings:
        """Read the token file, if any; then one check of the token, wherever it came from."""
        if self.http_token_file is not None:
            if self.http_token is not None:
                raise ValueError(
                    "give the HTTP token once: PIPER_MCP_HTTP_TOKEN (--auth-token) or "
                    "PIPER_MCP_HTTP_TOKEN_FILE (--auth-token-file), not both"
                )
            object.__setattr__(self, "http_token", SecretStr(read_token_file(self.http_token_file)))
        if self.http_token is not None:
            checked_secret(self.http_token.get_secret_value(), "the HTTP bearer token")
        return self

    def audit_path(self) -> Path:
        return self.audit_file or default_home() / "audit.jsonl"


def read_token_file(path: Path) -> str:
    """The token in `path` (one trailing newline dropped), if only its owner can read it."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"cannot read the HTTP token file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the HTTP token file {path} is not UTF-8 text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"the HTTP token file {path} is readable by other users; run `chmod 600 {path}`"
        )
    return text[:-1] if text.endswith("\n") else text
