"""Asking the user, through MCP elicitation, before a raw secret value leaves the server.

The question names the variable, where the value comes from (or, for a brokered
call, the host it is sent to) and which client asks. Accepting it is the yes,
declining or dismissing it the no: the form has nothing to confirm a second time
and never a field to type a secret into; its one field, where there is a
session, says whether to remember the answer. One
answer releases one value: in the 2026-07-28 era, where the answer rides the
retried call, the `ConsentLedger` refuses it a second time. A client that
cannot be asked gets a refusal that says how the operator can opt in. Every
outcome is a `Consent`; nothing is decided by comparing texts.

"Remember" lasts for one handshake-era session (protocol 2025-11-25 and
older), and exists only there. The SDK gives a tool no public handle on its
connection: `ctx.session` is built anew for every request, and the connection
behind it is a private attribute. What it does give is the session's
`client_params`, the `initialize` request that opened the session: one object,
which the connection holds for its whole life, on every transport (stdio, SSE,
streamable HTTP, in-memory). Answers are remembered against that
object's identity and forgotten with it, so another connection, or another
HTTP session of the same client, is asked again.

The 2026-07-28 era has no session: each request stands alone, and the SDK
builds the client params anew from each request's envelope. Over stdio that
changes nothing: the server has one client for its whole life, the host that
started it, so there "remember" lasts as long as the server, as a handshake-era
stdio session does. Over HTTP nothing the protocol gives can carry it: the
sealed request state lives for the round trips of one call, and the HTTP
bearer token is the operator's one token, not a user (an answer tied to it
would hold for every client of the server). So over HTTP in that era the
question does not offer "remember", and each call that wants a raw value asks.
"""

from __future__ import annotations

import weakref

from mcp.server.elicitation import (
    AcceptedElicitation,
    CancelledElicitation,
    DeclinedElicitation,
    ElicitationResult,
)
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit
from mcp.types import InitializeRequestParams
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ConfigDict, Field

from piper_mcp.server.brokered_calls import BrokeredCalls
from piper_mcp.server.consent_ledger import ConsentLedger
from piper_mcp.server.consents import Consent
from piper_mcp.server.credentials import CredentialService, Mode, Refusal

# Why a value was refused without asking, by the consent the resolver settled on.
UNASKED_REFUSALS = {
    Consent.NO_ELICITATION: (
        "This MCP client cannot ask the user (it does not support elicitation), and the reveal "
        "policy for this variable is 'ask'. Use the STS token (mode='token'), or the operator "
        "can start piper-mcp with --reveal allow (PIPER_MCP_REVEAL=allow) or allow this one "
        "variable with PIPER_MCP_REVEAL_OVERRIDES."
    ),
    Consent.CONSENT_SPENT: (
        "This consent was already used: one answer from the user releases one value. Call "
        "get_secret again so the user is asked again."
    ),
}


# The forms the user answers. Accepting one is the yes, so there is nothing to
# confirm: the one field, in a handshake-era session, is whether to remember the
# answer, and the 2026-07-28 era's form is empty (`"properties": {}` is a valid
# requested schema: the spec's `properties` is a map with no minimum size). No
# docstrings: pydantic would put them in the schema, where a host shows them.


class RevealConsent(BaseModel):
    model_config = ConfigDict(title="Reveal this secret to the model")


class UseConsent(RevealConsent):
    model_config = ConfigDict(title="Let the model use this secret")


class UseConsentForSession(UseConsent):
    remember: bool = Field(
        default=False,
        title="Remember for this session",
        description="Don't ask again for this variable and host in this session",
    )


class RevealConsentForSession(RevealConsent):
    remember: bool = Field(
        default=False,
        title="Remember for this session",
        description="Don't ask again for this variable in this session",
    )


def client_name(ctx: Context) -> str:
    params = ctx.request_context.session.client_params
    if params is None:
        return "An MCP client"
    return f"{params.client_info.name} {params.client_info.version}".strip()


def handshake(ctx: Context) -> InitializeRequestParams | None:
    """The `initialize` request that opened this call's session; None without a session."""
    if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    return ctx.request_context.session.client_params


class _OneClient:
    """The one client of a stdio server, to remember its answers against."""


class ConsentKeeper:
    """The consent resolvers for `get_secret` and `call_api`, and what users said for their
    session: per variable for a value revealed, per variable and host for a brokered call."""

    def __init__(
        self, service: CredentialService, calls: BrokeredCalls, *, one_client: bool = False
    ) -> None:
        """`one_client`: the server has one client for its life (stdio: the host that
        started it), so answers can be remembered for it in the 2026-07-28 era too."""
        self.service = service
        self.calls = calls
        self.ledger = ConsentLedger()
        # id(what answers are remembered against) -> variables; an entry goes with it.
        self._remembered: dict[int, set[str]] = {}
        self._the_client = _OneClient() if one_client else None

    def _memory(self, ctx: Context) -> object | None:
        """What this call's answers are remembered against: its session's `initialize`
        request, or over stdio the one client; None where nothing can carry them."""
        session = handshake(ctx)
        return session if session is not None else self._the_client

    def remember(self, ctx: Context, key: str) -> None:
        memory = self._memory(ctx)
        if memory is None:
            return
        if id(memory) not in self._remembered:
            self._remembered[id(memory)] = set()
            weakref.finalize(memory, self._remembered.pop, id(memory), None)
        self._remembered[id(memory)].add(key)

    def remembered(self, ctx: Context, key: str) -> bool:
        memory = self._memory(ctx)
        return memory is not None and key in self._remembered.get(id(memory), ())

    async def ask(self, variable: str, mode: Mode, ctx: Context) -> Elicit[RevealConsent] | Consent:
        """Run before the tool body: a question for the user, or the consent already settled.

        Returns `Elicit` (ask), or a `Consent`: one that lets the tool body go on
        (`NOT_NEEDED`, `REMEMBERED`), or one of `UNASKED_REFUSALS`.
        """
        if mode != "value":
            return Consent.NOT_NEEDED
        try:
            name = self.service.declared_name(variable)
        except Refusal:
            return Consent.NOT_NEEDED  # the tool body refuses it, with the reason
        if self.service.policy.for_variable(name) != "ask":
            return Consent.NOT_NEEDED
        if self.remembered(ctx, name):
            return Consent.REMEMBERED
        source = await self.service.raw_source(name)
        if source is None:
            return Consent.NOT_NEEDED  # nothing to reveal; the tool body says why
        return self._question(
            name,
            ctx,
            RevealConsentForSession if self._memory(ctx) is not None else RevealConsent,
            f"{client_name(ctx)} asks to see the raw value of the secret {name!r}, from "
            f"{source}. Accept to reveal it to the model, or decline to keep it hidden.",
        )

    async def ask_to_use(
        self, variable: str, method: str, url: str, ctx: Context
    ) -> Elicit[RevealConsent] | Consent:
        """`ask` for `call_api`: may the credential of `variable` go to the call's host?"""
        try:
            name, host = self.calls.target(variable, method, url)
        except Refusal:
            return Consent.NOT_NEEDED  # the tool body refuses it, with the reason
        if self.service.policy.for_variable(name) != "ask":
            return Consent.NOT_NEEDED
        key = use_key(name, host)
        if self.remembered(ctx, key):
            return Consent.REMEMBERED
        return self._question(
            key,
            ctx,
            UseConsentForSession if self._memory(ctx) is not None else UseConsent,
            f"{client_name(ctx)} asks to call {host} ({method.upper()}) with the secret "
            f"{name!r}. piper-mcp attaches it; the model never sees it. Accept to allow "
            "this call, or decline.",
        )

    def _question(
        self, key: str, ctx: Context, form: type[RevealConsent], text: str
    ) -> Elicit[RevealConsent] | Consent:
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return Consent.NO_ELICITATION
        # After the last await: checking and spending a returned state is one step.
        code = self.ledger.question_code(key, ctx.request_state)
        if code is None:
            return Consent.CONSENT_SPENT
        return Elicit(f"{text} (Question {code}.)", form)

    def decision(
        self, outcome: ElicitationResult[RevealConsent], key: str, ctx: Context
    ) -> Consent:
        """The `Consent` to go on with, from the resolver's outcome; a `Refusal` if none.

        `key`: what "remember" applies to (`reveal_key`, `use_key`).
        """
        if isinstance(outcome, DeclinedElicitation):
            raise Refusal(
                "The user declined to reveal this secret's value to the model.",
                reason=Consent.USER_DECLINED,
            )
        if isinstance(outcome, CancelledElicitation):
            raise Refusal(
                "The user dismissed the question; nothing was revealed.",
                reason=Consent.USER_CANCELLED,
            )
        answer = outcome.data if isinstance(outcome, AcceptedElicitation) else None
        if isinstance(answer, Consent):
            if answer in UNASKED_REFUSALS:
                raise Refusal(UNASKED_REFUSALS[answer], reason=answer)
            return answer
        if not isinstance(answer, RevealConsent):
            raise Refusal("Unexpected consent outcome; nothing was revealed.")
        if isinstance(answer, RevealConsentForSession | UseConsentForSession) and answer.remember:
            self.remember(ctx, key)
        return Consent.USER_ALLOWED


def use_key(name: str, host: str) -> str:
    """What a brokered call's consent is remembered under: the variable and the host."""
    return f"{name} @ {host}"


def consent_asked(outcome: ElicitationResult[RevealConsent]) -> tuple[bool, bool | None]:
    """(was the user asked, did they allow it) for the audit trail."""
    if isinstance(outcome, DeclinedElicitation | CancelledElicitation):
        return True, False
    if isinstance(outcome, AcceptedElicitation) and isinstance(outcome.data, RevealConsent):
        return True, True
    return False, None
