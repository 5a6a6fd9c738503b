"""How `piper-mcp serve` runs: `PIPER_MCP_*` environment variables, overridden by flags."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from piper_mcp.home import DEFAULT_AGENT, default_home
from piper_mcp.secret_strength import WeakSecretError, checked_secret
from piper_mcp.server import audit
from piper_mcp.server.policy import Reveal

Transport = Literal["stdio", "sse", "streamable-http"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

TOKEN_SETTING = "PIPER_MCP_HTTP_TOKEN / --auth-token"
FILE_SETTING = "PIPER_MCP_HTTP_TOKEN_FILE / --auth-token-file"
MAX_TOKEN_FILE_BYTES = 4096
STANDARD_INPUT = {"/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"}


class ServeSettings(BaseSettings):
    """See the configuration table in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="PIPER_MCP_", extra="ignore", frozen=True)

    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: LogLevel = "INFO"
    local: bool = False
    agent: str = DEFAULT_AGENT
    variables: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="PIPER_VARIABLES"
    )
    reveal: Reveal = "ask"
    reveal_overrides: dict[str, Reveal] = Field(default_factory=dict)
    audit_file: Path | None = None
    audit_max_bytes: int = Field(default=audit.DEFAULT_MAX_BYTES, ge=audit.MIN_MAX_BYTES)
    http_token: SecretStr | None = None
    http_token_file: Path | None = None
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_bytes: int = Field(default=65_536, ge=1024)
    session_idle_seconds: float = Field(default=1800.0, gt=0)
    max_sessions: int = Field(default=100, ge=1)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    grant_wait_seconds: float = Field(default=120.0, gt=0)
    # Variable -> `ApiRule`; parsed here so that a bad rule stops the start with one line.
    api_rules: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)

    @field_validator("variables", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("api_rules", mode="before")
    @classmethod
    def _rules(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        from piper_mcp.broker.rules import parse_rules  # only when set: `piper-mcp` starts lean

        return parse_rules(value)

    @field_validator("reveal", "log_level", mode="before")
    @classmethod
    def _case(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()

    @field_validator("http_token_file", mode="before")
    @classmethod
    def _a_path(cls, value: object) -> object:
        # An empty PIPER_MCP_HTTP_TOKEN_FILE= would otherwise mean ".", the current folder.
        if isinstance(value, str) and not value.strip():
            raise ValueError("an empty path; give the file that holds the token, or leave it unset")
        return value

    @model_validator(mode="after")
    def _strong_http_token(self) -> ServeSettings:
        """Read the token file, if any; then one check of the token, wherever it came from."""
        if self.http_token_file is None:
            if self.http_token is not None:
                _checked_token(
                    self.http_token.get_secret_value(), f"the HTTP bearer token ({TOKEN_SETTING})"
                )
            return self
        if self.http_token is not None:
            raise ValueError(
                f"give the HTTP bearer token by {TOKEN_SETTING} or by {FILE_SETTING}, not both"
            )
        if self.transport == "stdio" and str(self.http_token_file) in STANDARD_INPUT:
            # Reading it would swallow the host's first messages, and stdio needs no token.
            raise ValueError(
                "over stdio, standard input carries MCP: give the HTTP token in a file, "
                "or serve HTTP (--transport streamable-http)"
            )
        where = f"the HTTP bearer token in {self.http_token_file} ({FILE_SETTING})"
        token = _checked_token(read_token_file(self.http_token_file), where)
        object.__setattr__(self, "http_token", SecretStr(token))
        return self

    def audit_path(self) -> Path:
        return self.audit_file or default_home() / audit.FILE_NAME


def _checked_token(value: str, what: str) -> str:
    """`value` if it is a strong secret that an HTTP `Authorization` header can carry."""
    checked_secret(value, what)
    # A header value loses whitespace at its ends and cannot hold control characters: such a
    # token would lock every client out with a 401 that does not say why.
    if value != value.strip() or any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise WeakSecretError(
            f"{what} has spaces or control characters (a second line?), which an HTTP header "
            "cannot carry; keep the token on one line"
        )
    return value


def read_token_file(path: Path) -> str:
    """The token in `path` (one line ending dropped), if only its owner can read it.

    `/dev/stdin` works too (a pipe is owner-only), for a token piped from a secret manager.
    """
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ValueError(
                    f"the HTTP token file {path} is open to other users (mode "
                    f"{stat.S_IMODE(mode):o}); run `chmod 600 {path}` and start again"
                )
            # Bounded: a path such as /dev/zero must not fill the memory.
            data = file.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as error:
        raise ValueError(
            f"cannot read the HTTP token file {path}: {error.strerror}; check {FILE_SETTING}"
        ) from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ValueError(
            f"the HTTP token file {path} is over {MAX_TOKEN_FILE_BYTES} bytes; it should hold "
            "the token alone, on one line"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"the HTTP token file {path} is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")
