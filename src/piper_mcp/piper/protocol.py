"""The Piper wire protocol's data shapes, defined once.

The client (`piper_mcp.piper`) sends the request models and parses the
response models; the local backend (`piper_mcp.local`) does the reverse.
Requests are strict (an unknown or missing field is a client bug the backend
must reject); responses are lenient (a newer backend may add fields).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, field_validator

from piper_mcp.printable import has_control_characters

MAX_FIELD_LENGTH = 1024


def _printable(value: str) -> str:
    # A newline or an escape sequence in a name would forge audit lines and drive terminals.
    if has_control_characters(value):
        raise ValueError("must not contain control characters")
    return value


# An identifier or name in a request: non-empty, bounded, printable.
Name = Annotated[str, Field(min_length=1, max_length=MAX_FIELD_LENGTH), AfterValidator(_printable)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- token (v1, form-encoded) ---


class TokenRequest(_Request):
    grant_type: str
    client_id: Name
    client_secret: str = Field(min_length=1, max_length=MAX_FIELD_LENGTH, repr=False)
    audience: Name
    piper_link_instance_id: Name | None = None


class TokenResponse(_Response):
    access_token: str = Field(min_length=1)
    expires_in: int = Field(ge=0)
    token_type: str = "Bearer"


# --- resolve variable mapping ---


class ResolveRequestV1(_Request):
    variableName: Name


class ResolveRequestV2(ResolveRequestV1):
    agentClientId: Name
    instanceId: Name


class ResolveResponse(_Response):
    credentialId: Name


# --- get scoped credentials ---


class ScopedRequestV1(_Request):
    credentialIds: list[Name] = Field(min_length=1, max_length=100)


class ScopedRequestV2(ScopedRequestV1):
    agentClientId: Name
    instanceId: Name


class ScopedResponse(_Response):
    access_token: str = Field(min_length=1)
    expires_in: int | None = None
    granted_credential_ids: list[str]


# --- raw-secret exchange ---


class ExchangeRequestV1(_Request):
    piper_credential_id: Name


class ExchangeRequestV2(_Request):
    agentClientId: Name
    instanceId: Name
    piperCredentialId: Name


class ExchangeResponse(_Response):
    # Any non-null JSON value; an empty string is a valid secret.
    secret_value: JsonValue

    @field_validator("secret_value")
    @classmethod
    def _not_null(cls, value: JsonValue) -> JsonValue:
        if value is None:
            raise ValueError("secret_value is null")
        return value


# --- Piper Link ---


class LinkContext(_Response):
    instanceId: Name


# --- errors ---


class ErrorBody(_Response):
    error: str
    error_description: str | None = None


def error_body(code: str, description: str) -> dict[str, Any]:
    """The protocol's error body, as a backend sends it."""
    return ErrorBody(error=code, error_description=description).model_dump()
