"""Grants just in time: a call for an ungranted variable sends the user to grant it, then goes on.

When a tool finds the variable declared but not granted (`UngrantedVariable`), and
the client supports URL-mode elicitation, the user is sent to the grant page (the
local vault's, or the Piper cloud's) with a URL-mode elicitation: the protocol's way
to do something sensitive outside the client, since a form must never ask for a
secret. Once the user has granted it, the call is retried once and answered.
- Handshake era (2025-11-25 and older): `elicitation/create` in the middle of the call;
  after the grant, `notifications/elicitation/complete`, then the retry.
- 2026-07-28: the call answers `InputRequiredResult` with the URL request and request
  state (which the SDK seals and binds to this call); the client's retry, carrying the
  user's answer, waits for the grant and runs the tool again.
A client without URL mode, a user who declines, or a grant not made within
PIPER_MCP_GRANT_WAIT_SECONDS gets the tool's error, which says how to grant it.

The one-time link goes to the MCP client, and whoever holds it can grant. So grants
are offered only where the client is the user's: over stdio (the host that started
the server) or over HTTP with a bearer token. Over HTTP without one, any process on
the machine can be a client, and would grant itself whatever the vault holds.
"""

from __future__ import annotations

import json
from typing import Any

import anyio.to_thread
from mcp.server.elicitation import AcceptedUrlElicitation
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolResult,
    ElicitRequest,
    ElicitRequestURLParams,
    ElicitResult,
    InputRequiredResult,
)
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS

from piper_mcp.piper import PiperGrantNeededError
from piper_mcp.server.consent import client_name
from piper_mcp.server.credentials import (
    CredentialService,
    GrantLink,
    GrantRequestRefused,
    Refusal,
)
from piper_mcp.server.tool_arguments import ArgumentCheckedServer

# The key of the grant question among a 2026-07-28 call's input requests, and of its
# part of the request state (a resolver's state, e.g. the reveal question's, is apart).
GRANT_QUESTION = "piper_grant"


class UngrantedVariable(ToolError):
    """A tool's refusal that only a missing grant caused: the user may grant it now."""

    def __init__(self, text: str, variable: str, piper: PiperGrantNeededError) -> None:
        super().__init__(text)
        self.variable = variable
        self.piper = piper


def tool_error(refusal: Refusal, variable: str, text: str) -> ToolError:
    """The tool error for `refusal`; one the user can fix at once by granting is marked so."""
    if refusal.ungranted is not None:
        return UngrantedVariable(text, variable, refusal.ungranted)
    return ToolError(text)


class GrantingServer(ArgumentCheckedServer):
    """An `MCPServer` whose tools ask the user to grant a missing variable, then go on."""

    def __init__(
        self,
        *,
        service: CredentialService,
        grant_wait: float,
        offer_grants: bool,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        self._service = service
        self._grant_wait = grant_wait
        self._offer_grants = offer_grants

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        if context is None:
            return await super().call_tool(name, arguments, context)
        asked = _grant_state(context.request_state) if self._offer_grants else None
        if asked is not None:
            return await self._after_answer(name, arguments, context, asked)
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            ungranted = error.__cause__
            if not (
                isinstance(ungranted, UngrantedVariable)
                and self._offer_grants
                and _url_mode(context)
            ):
                raise
            # The name Piper was asked for (the declared one), not the model's spelling of it.
            variable = ungranted.piper.variable_name_requested or ungranted.variable
            said = str(error)
            try:
                # Off the event loop: a local vault keeps the request, a write that may wait.
                link = await anyio.to_thread.run_sync(
                    self._service.grants.request_grant,
                    variable,
                    client_name(context),
                    ungranted.piper,
                )
            except GrantRequestRefused as refused:
                raise ToolError(f"{said} {refused}") from None
            question = _question(link, variable, context)
            if context.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
                answer = await context.elicit_url(question.message, link.url, link.reference)
                accepted = isinstance(answer, AcceptedUrlElicitation)
                return await self._go_on(name, arguments, context, link, variable, said, accepted)
            state = {"variable": variable, "reference": link.reference, "said": said}
            return InputRequiredResult(
                input_requests={GRANT_QUESTION: ElicitRequest(params=question)},
                request_state=json.dumps({GRANT_QUESTION: state}),
            )

    async def _after_answer(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context[Any, Any],
        asked: dict[str, str],
    ) -> CallToolResult | InputRequiredResult:
        """A 2026-07-28 retry that carries the user's answer to the grant question."""
        responses = dict(context.input_responses or {})
        answer = responses.pop(GRANT_QUESTION, None)
        accepted = isinstance(answer, ElicitResult) and answer.action == "accept"
        link = self._service.grants.link_for(asked["reference"])
        # The call itself starts afresh: a resolver's question (the reveal consent) is
        # asked on its own rounds, never mixed into this one's. No subscription bus: the
        # tools publish no list-changed events.
        fresh = Context(request_context=context.request_context, mcp_server=self)
        if link is None:
            raise ToolError(
                f"{asked['said']} The grant request expired; call the tool again for a new one."
            )
        return await self._go_on(
            name, arguments, fresh, link, asked["variable"], asked["said"], accepted
        )

    async def _go_on(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context[Any, Any],
        link: GrantLink,
        variable: str,
        said: str,
        accepted: bool,
    ) -> CallToolResult | InputRequiredResult:
        """Wait for the grant the user went to make, then run the call again, once."""
        grants = self._service.grants
        if not accepted:
            await anyio.to_thread.run_sync(grants.withdraw, link)
            raise ToolError(f"{said} The user did not open the grant page.")
        decided = await self._service.wait_for_grant(variable, link, self._grant_wait)
        if decided == "denied":
            # Not `said`: its advice on how to grant would invite asking again.
            raise ToolError(f"No credential for {variable!r}: the user denied the grant.")
        if decided == "expired":
            await anyio.to_thread.run_sync(grants.withdraw, link)
            raise ToolError(
                f"{said} No grant was made within {self._grant_wait:g} seconds "
                "(PIPER_MCP_GRANT_WAIT_SECONDS); call the tool again once it is."
            )
        if context.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            await context.request_context.session.send_elicit_complete(link.reference)
        return await super().call_tool(name, arguments, context)


def _url_mode(context: Context[Any, Any]) -> bool:
    capabilities = context.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and elicitation.url is not None


def _question(link: GrantLink, variable: str, context: Context[Any, Any]) -> ElicitRequestURLParams:
    return ElicitRequestURLParams(
        mode="url",
        message=(
            f"{client_name(context)} asks for the variable {variable!r}, which this agent has "
            "not been granted. Open the page to grant it (or deny it); the call goes on "
            "once you have."
        ),
        url=link.url,
        elicitation_id=link.reference,
    )


def _grant_state(state: str | None) -> dict[str, str] | None:
    """This module's part of a 2026-07-28 request state; None for any other state."""
    if not state or not state.startswith("{"):
        return None
    try:
        decoded = json.loads(state)
    except ValueError:
        return None
    asked = decoded.get(GRANT_QUESTION) if isinstance(decoded, dict) else None
    if not isinstance(asked, dict) or not all(
        isinstance(asked.get(key), str) for key in ("variable", "reference", "said")
    ):
        return None
    return asked
