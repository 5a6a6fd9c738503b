"""What the tools and resources return: typed, metadata-only shapes with output schemas.

Only `SecretCredential` ever carries a credential: an STS token, or a raw
value the reveal policy let through.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from piper_mcp.server.consents import Consent

# The consents a credential can carry: the output schema lists these values only.
Released = Literal[
    Consent.NOT_NEEDED, Consent.OPERATOR_ALLOWED, Consent.USER_ALLOWED, Consent.REMEMBERED
]


class SecretCredential(BaseModel):
    """A credential for one declared variable."""

    variable: str = Field(description="The declared variable this credential is for.")
    source: Literal["piper_sts", "piper_raw_secret", "environment_variable", "local_config_file"]
    token: str | None = Field(
        default=None,
        description="For piper_sts: a Google OAuth access token (Piper STS) that can read the "
        "granted secret from Google Secret Manager. Treat it as a secret; it expires.",
    )
    value: str | None = Field(
        default=None,
        description="For the other sources: the raw secret value, only when the reveal "
        "policy allowed it. Treat it as a secret.",
    )
    token_type: str | None = Field(default=None, description="How to present the token.")
    expires_in: int | None = Field(default=None, description="Seconds until the token expires.")
    expires_at: datetime | None = Field(default=None, description="When it expires (UTC).")
    credential_id: str | None = Field(
        default=None, description="Piper's id of the granted secret: its Secret Manager name."
    )
    secret_version: str | None = Field(
        default=None, description="The Secret Manager resource to read with the token."
    )
    secret_manager_endpoint: str | None = Field(
        default=None,
        description="The Secret Manager API endpoint to read it from; null means Google's "
        "own (secretmanager.googleapis.com). A local Piper serves its own.",
    )
    env_var_name: str | None = Field(
        default=None, description="For environment_variable: the variable it was read from."
    )
    consent: Released = Field(
        default=Consent.NOT_NEEDED,
        description="Why a raw value was released: the operator allowed it, the user "
        "allowed it when asked, or earlier in this session.",
    )


class LinkStatus(BaseModel):
    """Whether Piper knows which user this agent serves."""

    answered: bool = Field(description="Piper Link answered with an instance id.")
    context: Literal["piper_link", "configured", "none"] = Field(
        description="Where the user context comes from: Piper Link, PIPER_INSTANCE_ID, or none."
    )
    instance_id_suffix: str | None = Field(
        description="The last characters of the user's instance id, to tell contexts apart."
    )
    link_url: str = Field(description="Where piper-mcp asks Piper Link.")
    latency_ms: float = Field(description="How long Piper Link took to answer or fail.")
    problem: str | None = Field(description="Why Piper Link did not answer, if it did not.")
    advice: str | None = Field(description="What the user should do, if anything.")
    vault: str | None = Field(
        default=None,
        description="With a local Piper (serve --local): the path of the vault served, "
        "which `piper-mcp local ...` must use too (PIPER_HOME). Null with the Piper cloud.",
    )


class VariableStatus(BaseModel):
    """Where one declared variable would come from now. Never a value."""

    variable: str
    source: Literal["piper", "environment", "local_file", "missing"] = Field(
        description="'piper': granted in Piper; 'environment' / 'local_file': only a raw "
        "fallback value exists; 'missing': nothing would answer."
    )
    reveal: Literal["ask", "allow", "deny"] = Field(
        description="The reveal policy for this variable's raw value."
    )
    credential_id: str | None = None
    env_var_name: str | None = None
    piper_problem: str | None = Field(
        default=None, description="Why Piper did not grant it, when it did not."
    )
    advice: str | None = Field(default=None, description="How the user can fix it.")


class VariablesReport(BaseModel):
    """The agent's declared variables and where each would come from."""

    variables: list[VariableStatus]
    vault: str | None = Field(
        default=None,
        description="With a local Piper (serve --local): the path of the vault served, "
        "which `piper-mcp local ...` must use too (PIPER_HOME). Null with the Piper cloud.",
    )


class ApiCallResult(BaseModel):
    """An API's answer to a brokered call. The credential sent is not in it, in any form."""

    variable: str = Field(description="The declared variable whose credential was attached.")
    host: str = Field(description="The host called.")
    method: str
    status: int = Field(description="The API's HTTP status code.")
    headers: dict[str, str] = Field(
        description="Selected response headers (content type, rate limits, location, ...)."
    )
    body: str | None = Field(
        description="The response body as text, with any echo of the credential replaced by "
        "[redacted]; null for a binary body."
    )
    body_bytes: int = Field(description="How many bytes of body were received.")
    truncated: bool = Field(description="The body was cut at the rule's size limit.")
    note: str | None = Field(
        default=None, description="What piper-mcp did not do, e.g. follow a redirect elsewhere."
    )
