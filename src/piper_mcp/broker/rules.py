"""The operator's rules for brokered calls: which hosts a credential may go to, and where it goes.

A rule comes from configuration (`PIPER_MCP_API_RULES`) or from a local grant
(`--use openai`, `--use api.example.com --inject "X-Api-Key: {value}"`), never
from the model.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from piper_mcp.broker.hosts import host_key, parse_host
from piper_mcp.printable import has_control_characters, quoted

PLACEHOLDER = "{value}"
# RFC 9110 token characters; a query parameter name from the unreserved set, which no
# server decodes differently.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9._~-]+")
# Headers the HTTP layer writes itself, or that would reach a proxy instead of the API.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        # piper-mcp asks for uncompressed answers: it can only scrub what it can read.
        "accept-encoding",
    }
)


def is_reserved_header(name: str) -> bool:
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith("proxy-")


class RuleError(ValueError):
    """A rule the operator wrote that cannot be used; the message says how to write it."""


class Injection(BaseModel):
    """Where the credential goes: a header ("Authorization: Bearer {value}") or query parameter."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    where: Literal["header", "query"]
    name: str
    format: str = PLACEHOLDER

    @model_validator(mode="after")
    def _writable(self) -> Injection:
        if self.format.count(PLACEHOLDER) != 1:
            raise RuleError(
                f"the format {quoted(self.format)} must hold {PLACEHOLDER} exactly once"
            )
        if has_control_characters(self.format) or not self.format.isascii():
            raise RuleError(f"the format {quoted(self.format)} must be plain ASCII text")
        if self.where == "header":
            if not _HEADER_NAME.fullmatch(self.name):
                raise RuleError(f"{quoted(self.name)} is not a header name, e.g. X-Api-Key")
            if is_reserved_header(self.name):
                raise RuleError(f"the credential cannot go in the {self.name} header")
        elif not _PARAMETER_NAME.fullmatch(self.name):
            raise RuleError(
                f"{quoted(self.name)} is not a query parameter name (letters, digits, . _ ~ -)"
            )
        return self

    def __str__(self) -> str:
        if self.where == "query":
            return f"query:{self.name}"
        return f"{self.name}: {self.format}"


BEARER = Injection(where="header", name="Authorization", format="Bearer {value}")


def parse_injection(text: str) -> Injection:
    """The short form: "Authorization: Bearer {value}", "X-Api-Key: {value}" or "query:key"."""
    name, colon, rest = text.partition(":")
    name, rest = name.strip(), rest.strip()
    try:
        if name.lower() == "query" and colon and PLACEHOLDER not in rest:
            return Injection(where="query", name=rest)
        if colon and PLACEHOLDER in rest:
            return Injection(where="header", name=name, format=rest)
    except ValidationError as error:
        raise RuleError(f"In {quoted(text)}: {_first_problem(error)}.") from None
    raise RuleError(
        f"{quoted(text)} does not say where the credential goes; write a header as "
        '"X-Api-Key: {value}" or "Authorization: Bearer {value}", or a query parameter '
        'as "query:key".'
    )


class ApiRule(BaseModel):
    """Where one variable's credential may be sent, and how, as the operator configured it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hosts: tuple[str, ...] = Field(min_length=1)
    inject: Injection = BEARER  # as for `--use HOSTS` without `--inject`
    credential: Literal["value", "token"] = "value"
    allow_private: bool = False
    max_response_bytes: int = Field(default=1_048_576, gt=0, le=64 * 1_048_576)
    timeout: float = Field(default=30.0, gt=0, le=600)

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_or_more(cls, hosts: Any) -> Any:
        return (hosts,) if isinstance(hosts, str) else hosts

    @field_validator("hosts")
    @classmethod
    def _canonical(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        canonical: list[str] = []
        for host in hosts:
            try:
                key = host_key(*parse_host(host.strip()))
            except ValueError:
                raise RuleError(
                    f"{quoted(host)} is not a host; list names like api.example.com, "
                    "with :port for a port other than 443"
                ) from None
            if key not in canonical:
                canonical.append(key)
        return tuple(canonical)

    @field_validator("inject", mode="before")
    @classmethod
    def _short_form(cls, inject: Any) -> Any:
        return parse_injection(inject) if isinstance(inject, str) else inject


def _preset(
    *hosts: str, inject: Injection = BEARER, credential: Literal["value", "token"] = "value"
) -> ApiRule:
    return ApiRule(hosts=hosts, inject=inject, credential=credential)


PRESETS: dict[str, ApiRule] = {
    "openai": _preset("api.openai.com"),
    "anthropic": _preset("api.anthropic.com", inject=Injection(where="header", name="x-api-key")),
    "github": _preset("api.github.com"),
    "slack": _preset("slack.com"),
    "notion": _preset("api.notion.com"),
    "stripe": _preset("api.stripe.com"),
    # Piper's STS token, not a raw value: the Google APIs take it as an OAuth bearer token.
    "google": _preset(
        "secretmanager.googleapis.com",
        "cloudresourcemanager.googleapis.com",
        "storage.googleapis.com",
        "bigquery.googleapis.com",
        "pubsub.googleapis.com",
        "sheets.googleapis.com",
        "drive.googleapis.com",
        "gmail.googleapis.com",
        credential="token",
    ),
}


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    cause = problem.get("ctx", {}).get("error")
    if isinstance(cause, RuleError):
        return str(cause).removesuffix(".")
    field = ".".join(str(part) for part in problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"{field!r} is not a rule field; the fields are {', '.join(ApiRule.model_fields)}"
    if problem["type"] == "missing":
        return f"{field!r} is missing"
    return f"{field!r}: {problem['msg'][0].lower()}{problem['msg'][1:]}"


def _rule(variable: str, given: object) -> ApiRule:
    if isinstance(given, str):
        if given not in PRESETS:
            raise RuleError(
                f"The API rule for {variable!r} names {quoted(given)}, which is no preset; "
                f"use one of {', '.join(PRESETS)} or a rule object with hosts and inject."
            )
        return PRESETS[given]
    if not isinstance(given, dict):
        raise RuleError(
            f'The API rule for {variable!r} must be a preset name (e.g. "openai") or an '
            'object like {"hosts": ["api.example.com"], "inject": "X-Api-Key: {value}"}.'
        )
    try:
        return ApiRule.model_validate(given)
    except ValidationError as error:
        raise RuleError(
            f"The API rule for {variable!r} is wrong: {_first_problem(error)}."
        ) from None


def parse_rules(text: str) -> dict[str, ApiRule]:
    """PIPER_MCP_API_RULES: a JSON object from variable name to a preset name or a rule object."""
    if not text.strip():
        return {}
    try:
        given = json.loads(text)
    except json.JSONDecodeError as error:
        raise RuleError(
            f"PIPER_MCP_API_RULES is not JSON ({error.msg} at character {error.pos}); write an "
            'object like {"OPENAI_API_KEY": "openai"}.'
        ) from None
    if not isinstance(given, dict):
        raise RuleError(
            'PIPER_MCP_API_RULES must be a JSON object like {"OPENAI_API_KEY": "openai"}.'
        )
    return {variable: _rule(variable, rule) for variable, rule in given.items()}


def rule_from_use(use: str, inject: str | None = None) -> ApiRule:
    """`--use openai` (a preset) or `--use api.example.com,other.example.com`, with `--inject`.

    Without `--inject`, hosts get "Authorization: Bearer {value}" and a preset its own.
    """
    injection = parse_injection(inject) if inject is not None else None
    preset = PRESETS.get(use.strip().lower())
    if preset is not None:
        return preset if injection is None else preset.model_copy(update={"inject": injection})
    hosts = [host.strip() for host in use.split(",") if host.strip()]
    for host in hosts:
        if "." not in host and ":" not in host:
            raise RuleError(
                f"--use {quoted(use)}: {quoted(host)} is neither a preset "
                f"({', '.join(PRESETS)}) nor a host name like api.example.com."
            )
    try:
        return ApiRule(hosts=tuple(hosts), inject=injection or BEARER)
    except ValidationError as error:
        raise RuleError(f"--use {quoted(use)}: {_first_problem(error)}.") from None
