"""The operations behind the MCP tools, over the Piper client; no MCP in here.

`CredentialDesk` decides what a model may have: a short-lived STS token for a
declared variable, metadata about variables and Piper Link, and refusals that
say what went wrong and what the user can do. It never returns a raw secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from piper_mcp.piper import AsyncPiperClient, PiperError, PiperGrantNeededError
from piper_mcp.piper.names import MAX_VARIABLE_NAME_LENGTH, normalize_variable_name
from piper_mcp.piper.secret_manager import secret_version_name
from piper_mcp.server.results import (
    LinkStatus,
    SecretCredential,
    VariablesReport,
    VariableStatus,
)

Mode = Literal["token", "value"]

RAW_VALUES_REFUSED = (
    "piper-mcp gives models short-lived Piper STS tokens only; raw secret values are "
    "refused until the operator's reveal policy (a later release) allows them."
)


class Refusal(Exception):
    """A request the desk will not or cannot serve; the text is for the model and the user."""


def shown(text: str, limit: int = 64) -> str:
    """A name quoted for an error message: escaped, and cut if long."""
    return repr(text[:limit]) + ("…" if len(text) > limit else "")


class CredentialDesk:
    """Serves the declared variables of one agent."""

    def __init__(
        self,
        client: AsyncPiperClient,
        declared: Callable[[], list[str]],
        *,
        how_to_declare: str,
    ) -> None:
        self.client = client
        self._declared = declared
        self.how_to_declare = how_to_declare

    @property
    def declared(self) -> list[str]:
        """The agent's declared variables, read afresh (a local grant can add one)."""
        return self._declared()

    def declared_name(self, requested: object) -> str:
        """The declared variable `requested` names (exactly or normalized), or a `Refusal`."""
        if not isinstance(requested, str):
            raise Refusal("The variable name must be a string.")
        declared = self.declared
        if len(requested) <= MAX_VARIABLE_NAME_LENGTH:
            wanted = normalize_variable_name(requested)
            for name in declared:
                if requested == name or (wanted and normalize_variable_name(name) == wanted):
                    return name
        if not declared:
            raise Refusal(f"This agent declares no variables yet. {self.how_to_declare}")
        raise Refusal(
            f"{shown(requested)} is not a variable this agent declares "
            f"({', '.join(declared)}). Ask for one of those, or ask the user to declare "
            f"it: {self.how_to_declare}"
        )

    async def get_secret(self, variable: str, mode: Mode = "token") -> SecretCredential:
        name = self.declared_name(variable)
        if mode != "token":
            raise Refusal(f"A raw value of {name!r} was asked for. {RAW_VALUES_REFUSED}")
        try:
            result = await self.client.get_secret(name, enable_env_fallback_for_this_call=False)
        except PiperError as error:
            raise Refusal(await self._explain(name, error)) from None
        if result.source != "piper_sts":  # a local-file fallback answered
            raise Refusal(f"Piper did not grant {name!r}. {RAW_VALUES_REFUSED}")
        credential_id = result.piper_credential_id
        expires_at = (
            datetime.now(UTC) + timedelta(seconds=result.expires_in)
            if result.expires_in is not None
            else None
        )
        return SecretCredential(
            variable=name,
            source="piper_sts",
            token=str(result.value),
            token_type=result.token_type or "Bearer",
            expires_in=result.expires_in,
            expires_at=expires_at,
            credential_id=credential_id,
            secret_version=(
                secret_version_name(self.client.settings.project_id, credential_id)
                if credential_id
                else None
            ),
            secret_manager_endpoint=self.client.settings.secret_manager_endpoint,
        )

    async def _explain(self, name: str, error: PiperError) -> str:
        """Piper's error, plus whether a raw fallback value exists (which is refused)."""
        text = f"No credential for {name!r}: {error}"
        located = await self.client.locate(name)
        if located.source == "environment":
            text += (
                f" A raw value exists in the environment variable {located.env_var_name}, "
                f"but {RAW_VALUES_REFUSED}"
            )
        elif located.source == "local_file":
            text += f" A raw value exists in the local config file, but {RAW_VALUES_REFUSED}"
        return text

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
                "`piper-mcp serve --local`."
            )
        return LinkStatus(
            answered=probe.answered,
            context=context,
            instance_id_suffix=f"…{instance_id[-4:]}" if instance_id else None,
            link_url=link.url,
            latency_ms=probe.latency_ms,
            problem=probe.problem,
            advice=advice,
        )

    async def variable_status(self, variable: str) -> VariableStatus:
        name = self.declared_name(variable)
        located = await self.client.locate(name)
        problem = located.piper_problem
        advice = None
        if located.source != "piper":
            advice = problem.advice if problem else None
            if isinstance(problem, PiperGrantNeededError):
                advice = f"Ask the user to grant {name!r} to this agent: {problem.grant_url}"
            if located.source != "missing":
                advice = f"{RAW_VALUES_REFUSED} {advice or ''}".strip()
        return VariableStatus(
            variable=name,
            source=located.source,
            credential_id=located.credential_id,
            env_var_name=located.env_var_name,
            piper_problem=problem.message if problem else None,
            advice=advice,
        )

    async def list_variables(self) -> VariablesReport:
        statuses = await asyncio.gather(*(self.variable_status(n) for n in self.declared))
        return VariablesReport(variables=list(statuses))

    def complete(self, partial: str) -> list[str]:
        """Declared names that start with `partial` (case-insensitive), for completion."""
        return [n for n in self.declared if n.lower().startswith(partial.lower())][:100]
