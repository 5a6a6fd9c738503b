"""How `piper-mcp serve` runs: `PIPER_MCP_*` environment variables, overridden by flags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from piper_mcp.local.home import DEFAULT_AGENT

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

    @field_validator("variables", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
