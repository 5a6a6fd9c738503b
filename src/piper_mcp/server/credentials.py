"""The operations behind the MCP tools, over the Piper client; no MCP in here.

`CredentialService` decides what a model may have: a short-lived STS token for a
declared variable; a raw value only as the reveal policy (and, for `ask`, the
user) allows; metadata about variables and Piper Link; and refusals that say
what went wrong and what the user can do.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from piper_mcp.invocation import command
from piper_mcp.piper import (
    AsyncPiperClient,
    PiperError,
    PiperGrantNeededError,
    VariableSource,
    protocol_names,
)
from piper_mcp.piper.names import declared_match, env_var_name, is_own_setting
from piper_mcp.piper.secret_manager import secret_version_name
from piper_mcp.printable import quoted
from piper_mcp.server.consents import Consent
from piper_mcp.server.policy import RevealPolicy
from piper_mcp.server.results import (
    LinkStatus,
    SecretCredential,
    VariablesReport,
    VariableStatus,
)

Mode = Literal["token", "value"]


class Refusal(Exception):
    """A request the service will not or cannot serve; the text is for the model and the user.

    `reason` is a short code for the audit trail, which never stores free text: a
    backend's words could echo a client secret or a token. `ungranted`: Piper's answer
    when the refusal is only a missing grant, which the user may make at once.
    """

    def __init__(
        self,
        text: str,
        *,
        reason: str = "refused",
        ungranted: PiperGrantNeededError | None = None,
    ) -> None:
        super().__init__(text)
        self.reason = reason
        self.ungranted = ungranted


def refusal(text: str, error: PiperError) -> Refusal:
    """A `Refusal` for Piper's `error`, carrying it when a grant is all that is missing."""
    ungranted = error if isinstance(error, PiperGrantNeededError) else None
    return Refusal(text, reason=reason_code(error), ungranted=ungranted)


# Only codes the protocol defines: a backend chooses its `error` field, and could echo
# a client secret there as readily as in its description.
PIPER_ERROR_CODES = frozenset(
    {
        protocol_names.INVALID_CLIENT,
        protocol_names.INVALID_REQUEST,
        protocol_names.INVALID_TOKEN,
        protocol_names.UNSUPPORTED_GRANT_TYPE,
        protocol_names.MAPPING_NOT_FOUND,
        protocol_names.PERMISSION_DENIED,
        protocol_names.PERMISSION_DENIED_FOR_ALL_IDS,
        protocol_names.STORAGE_UNAVAILABLE,
        protocol_names.NOT_FOUND,
        protocol_names.TOO_MANY_REQUESTS,
    }
)


def reason_code(error: PiperError) -> str:
    """A Piper error as a code: the protocol's error code, else the error's kind."""
    code = getattr(error, "error_code", None)
    if code in PIPER_ERROR_CODES:
        return str(code)
    kind = type(error).__name__.removeprefix("Piper").removesuffix("Error") or "Piper"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()


# Values copied from an example and never filled in: `your-agent-client-id`, `<id>`, ...,
# or a variable the host did not expand (`${input:piper-client-id}` outside VS Code).
PLACEHOLDER = re.compile(
    r"(your[-_ ].*|<.*>|\$?\{.*\}|\$\w+|x{3,}|changeme|change[-_]me|replace[-_]?me|todo"
    r"|placeholder)",
    re.IGNORECASE,
)


def looks_like_placeholder(value: str) -> bool:
    return PLACEHOLDER.fullmatch(value.strip()) is not None


# A requested name plain enough to put into a command the user may paste; else a placeholder.
HINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _hint_name(requested: str) -> str | None:
    return requested if HINT_NAME.fullmatch(requested) else None


Decided = Literal["granted", "denied", "expired"]


@dataclass(frozen=True)
class GrantLink:
    """Where to send the user to grant a variable now, and how to learn they did.

    `reference` finds the same request again on a retried call (`Grants.link_for`);
    `decided()` is what the user chose on the page, when the page can say (None:
    not yet, or a page that cannot tell, like the Piper cloud's, which is polled).
    """

    url: str
    reference: str
    decided: Callable[[], Decided | None]
    poll_seconds: float


class Grants(Protocol):
    """Where the user grants this agent its variables: the Piper cloud, or a local vault."""

    @property
    def vault(self) -> Path | None:
        """The local vault served; None for the Piper cloud."""

    def how_to_grant(self, variable: str, error: PiperGrantNeededError) -> str:
        """What the user does to grant `variable` to this agent."""

    def how_to_declare(self, variable: str | None) -> str:
        """What the user does to make `variable` (None: any) one this agent declares."""

    def request_grant(self, variable: str, client: str, error: PiperGrantNeededError) -> GrantLink:
        """A page where the user grants `variable` to this agent now, for `client`'s call."""

    def link_for(self, reference: str) -> GrantLink | None:
        """The link `request_grant` gave under `reference`, while it lasts."""

    def withdraw(self, link: GrantLink) -> None:
        """The call that asked no longer waits: take its request back from the user."""


class GrantRequestRefused(Exception):
    """No grant request can be opened now (too many wait); the text says why."""


def _undecided() -> Decided | None:
    return None


class PiperCloudGrants:
    """Grants made on the Piper cloud's grant page (PIPER_GRANT_PAGE_URL)."""

    vault = None
    POLL_SECONDS = 2.0  # the cloud's page cannot say when it is done: Piper is asked again

    def request_grant(self, variable: str, client: str, error: PiperGrantNeededError) -> GrantLink:
        reference = secrets.token_urlsafe(12)  # the elicitation's id: unique per question
        return GrantLink(error.grant_url, reference, _undecided, self.POLL_SECONDS)

    def link_for(self, reference: str) -> GrantLink | None:
        return GrantLink("", reference, _undecided, self.POLL_SECONDS)  # Piper is asked

    def withdraw(self, link: GrantLink) -> None:
        pass  # the cloud's grant page keeps no request

    def how_to_grant(self, variable: str, error: PiperGrantNeededError) -> str:
        return f"Ask the user to grant {variable!r} to this agent: {error.grant_url}"

    def how_to_declare(self, variable: str | None) -> str:
        return (
            "Ask the user to add it to PIPER_VARIABLES (comma-separated) in the server's "
            "configuration and restart it."
        )


# What `raw_source` found to be nowhere, for the `reveal` of the same tool call to explain
# without asking Piper a second time (and past its deadline). The consent step and the
# tool body run in one task, so this is that call's own, never another call's.
_FOUND_NOWHERE: ContextVar[VariableSource | None] = ContextVar("found_nowhere", default=None)


class CredentialService:
    """Serves the declared variables of one agent."""

    def __init__(
        self,
        client: AsyncPiperClient,
        declared: Callable[[], list[str]],
        *,
        policy: RevealPolicy | None = None,
        grants: Grants | None = None,
    ) -> None:
        self.client = client
        self._declared = declared
        self.policy = policy or RevealPolicy()
        self.grants: Grants = grants or PiperCloudGrants()

    @property
    def vault(self) -> str | None:
        """The path of the local vault served, as results show it; None for the Piper cloud."""
        vault = self.grants.vault
        return str(vault) if vault else None

    def configuration_problem(self) -> str | None:
        """What keeps this configuration from serving anything, with the fix; None if fine."""
        if self.vault:
            if self.declared:
                return None
            return f"This agent declares no variables yet. {self.grants.how_to_declare(None)}"
        client_id = self.client.settings.client_id
        local = f"`{command('serve', '--local')}` serves a local vault instead"
        if not client_id:
            return (
                "PIPER_CLIENT_ID is not set, so every get_secret fails: set it (and "
                f"PIPER_VARIABLES) to the agent's values from the Piper dashboard, or {local}."
            )
        placeholders = [
            f"{name}={value!r}"
            for name, value in [
                ("PIPER_CLIENT_ID", client_id),
                *(("PIPER_VARIABLES", variable) for variable in self.declared),
            ]
            if looks_like_placeholder(value)
        ]
        if placeholders:
            return (
                f"{', '.join(placeholders)} looks like an example value, not a real one: put in "
                f"the agent's values from the Piper dashboard, or {local}."
            )
        if not self.declared:
            return f"PIPER_VARIABLES is empty, so nothing can be served. {local}."
        return None

    @property
    def declared(self) -> list[str]:
        """The agent's declared variables, read afresh (a local grant can add one)."""
        return self._declared()

    def declared_name(self, requested: object) -> str:
        """The declared variable `requested` names (exactly or normalized), or a `Refusal`."""
        if not isinstance(requested, str):
            raise Refusal("The variable name must be a string.", reason="bad_name")
        declared = self.declared
        found = declared_match(requested, declared)
        if found is not None:
            return found
        if not declared:
            raise Refusal(
                f"This agent declares no variables yet. {self.grants.how_to_declare(None)}",
                reason="undeclared",
            )
        raise Refusal(
            f"{quoted(requested)} is not a variable this agent declares "
            f"({', '.join(declared)}). Ask for one of those. "
            f"{self.grants.how_to_declare(_hint_name(requested))}",
            reason="undeclared",
        )

    # --- STS tokens ---

    async def get_secret(self, variable: str) -> SecretCredential:
        """An STS token for a declared variable (reused within the revocation window)."""
        name = self.declared_name(variable)
        try:
            result = await self.client.get_from_piper(name)
        except PiperError as error:
            raise refusal(self._explain(name, error), error) from None
        expires_in, credential_id = result.expires_in, result.piper_credential_id
        return SecretCredential(
            variable=name,
            source="piper_sts",
            token=str(result.value),
            token_type=result.token_type or "Bearer",
            expires_in=expires_in,
            expires_at=(
                datetime.now(UTC) + timedelta(seconds=expires_in)
                if expires_in is not None
                else None
            ),
            credential_id=credential_id,
            secret_version=(
                secret_version_name(self.client.settings.project_id, credential_id)
                if credential_id
                else None
            ),
            secret_manager_endpoint=self.client.settings.secret_manager_endpoint,
        )

    # --- raw values ---

    async def reveal(self, variable: str, consent: Consent) -> SecretCredential:
        """The raw value of a declared variable, when the policy (and consent) allow it."""
        name = self.declared_name(variable)
        rule = self.policy.for_variable(name)
        if rule == "deny":
            raise Refusal(
                f"The raw value of {name!r} is denied by the operator's reveal policy; ask "
                "for the STS token instead (get_secret without mode='value').",
                reason="reveal_denied",
            )
        if rule == "ask" and not consent.given_by_user:
            located = _FOUND_NOWHERE.get()
            if located is None or located.variable_name != name:
                located = await self.client.locate(name)
            if located.source == "missing" and located.piper_problem is not None:
                problem = located.piper_problem
                raise refusal(f"No value for {name!r}: {self.said(name, problem)}", problem)
            raise Refusal(
                f"The user did not allow revealing the raw value of {name!r}.",
                reason="no_consent",
            )
        try:
            result = await self.client.get_secret(
                name,
                fetch_raw_secret=True,
                enable_env_fallback_for_this_call=self._env_fallback_allowed(name),
            )
        except PiperError as error:
            raise refusal(f"No value for {name!r}: {self.said(name, error)}", error) from None
        value = result.value if isinstance(result.value, str) else json.dumps(result.value)
        return SecretCredential(
            variable=name,
            source=result.source,
            value=value,
            credential_id=result.piper_credential_id,
            env_var_name=result.env_var_name,
            consent=Consent.OPERATOR_ALLOWED if rule == "allow" else consent,
        )

    def _env_fallback_allowed(self, name: str) -> bool:
        settings = self.client.settings
        return settings.env_fallback and not is_own_setting(
            env_var_name(name, settings.env_prefix, settings.env_map)
        )

    async def raw_source(self, variable: str) -> str | None:
        """Where a raw value of `variable` would come from, said for a person; None: nowhere.

        Nowhere is kept for the `reveal` that follows in the same tool call: the
        whole call, explanation included, asks Piper once, within one deadline.
        """
        _FOUND_NOWHERE.set(None)
        located = await self.client.locate(variable)
        if located.source == "piper":
            return "Piper (raw secret exchange)"
        if located.source == "environment" and self._env_fallback_allowed(variable):
            return f"the environment variable {located.env_var_name}"
        if located.source == "local_file":
            return "the local config file"
        _FOUND_NOWHERE.set(located)
        return None

    def _raw_hint(self, name: str) -> str:
        rule = self.policy.for_variable(name)
        if rule == "deny":
            return "Its raw value is denied by the operator's reveal policy."
        asks = " (the user will be asked)" if rule == "ask" else ""
        return f"Call get_secret with mode='value' for the raw value{asks}."

    def _explain(self, name: str, error: PiperError) -> str:
        """Piper's error, plus whether a raw fallback value exists and how to get it.

        Piper is not asked again: its answer is `error`, and asking again would
        take each failing call past its deadline and double its requests.
        """
        text = f"No credential for {name!r}: {self.said(name, error)}"
        located = self.client.locate_fallback(name, error)
        if located.source == "environment" and self._env_fallback_allowed(name):
            text += (
                f" A raw value exists in the environment variable {located.env_var_name}. "
                f"{self._raw_hint(name)}"
            )
        elif located.source == "local_file":
            text += f" A raw value exists in the local config file. {self._raw_hint(name)}"
        return text

    def said(self, name: str, error: PiperError) -> str:
        """`error` in words; a missing grant with the fix where this agent's grants are made."""
        if isinstance(error, PiperGrantNeededError):
            return error.with_advice(self.grants.how_to_grant(name, error))
        return str(error)

    # --- grants made while a call waits ---

    async def wait_for_grant(self, variable: str, link: GrantLink, within: float) -> Decided:
        """What the user did about `link` within `within` seconds.

        Granted on the page, or anywhere else (`piper-mcp local grant`, the Piper
        dashboard), which Piper is asked about every `link.poll_seconds`.
        """
        name = self.declared_name(variable)
        deadline = asyncio.get_running_loop().time() + within
        while True:
            decided = link.decided()
            if decided is not None:
                return decided
            if (await self.client.locate(name)).source == "piper":
                return "granted"
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return "expired"
            await asyncio.sleep(min(link.poll_seconds, left))

    # --- metadata ---

    async def check_link(self) -> LinkStatus:
        link = self.client.link
        probe = await link.probe()
        configured = self.client.settings.instance_id
        instance_id = configured or probe.instance_id
        context: Literal["piper_link", "configured", "none"] = (
            "configured" if configured else "piper_link" if probe.answered else "none"
        )
        advice = None
        if context == "none":
            advice = (
                f"Piper Link did not answer at {link.url}. Ask the user to start the Piper Link "
                "app and sign in, or to set PIPER_INSTANCE_ID; with a local Piper, run "
                f"`{command('serve', '--local')}`."
            )
        return LinkStatus(
            answered=probe.answered,
            context=context,
            instance_id_suffix=f"…{instance_id[-4:]}" if instance_id else None,
            link_url=link.url,
            latency_ms=probe.latency_ms,
            problem=probe.problem,
            advice=advice,
            vault=self.vault,
        )

    async def variable_status(self, variable: str) -> VariableStatus:
        name = self.declared_name(variable)
        located = await self.client.locate(name)
        problem = located.piper_problem
        source = located.source
        if source == "environment" and not self._env_fallback_allowed(name):
            source = "missing"
        advice = None
        if source != "piper":
            advice = problem.advice if problem else None
            if isinstance(problem, PiperGrantNeededError):
                advice = self.grants.how_to_grant(name, problem)
            if source != "missing":
                advice = f"{self._raw_hint(name)} {advice or ''}".strip()
        return VariableStatus(
            variable=name,
            source=source,
            reveal=self.policy.for_variable(name),
            credential_id=located.credential_id,
            env_var_name=located.env_var_name if source == "environment" else None,
            piper_problem=problem.message if problem else None,
            advice=advice,
        )

    async def list_variables(self) -> VariablesReport:
        statuses = await asyncio.gather(*(self.variable_status(n) for n in self.declared))
        return VariablesReport(variables=list(statuses), vault=self.vault)

    def complete(self, partial: str) -> list[str]:
        """Declared names that start with `partial` (case-insensitive), for completion."""
        return [n for n in self.declared if n.lower().startswith(partial.lower())][:100]
