"""Asking the user, through MCP elicitation, before a raw secret value leaves the server.

The question names the variable, where the value comes from and which client
asks; the answer is a yes/no (never a secret typed into a form) and can be
remembered for the rest of the session, per variable. One answer releases one
value: in the 2026-07-28 era, where the answer rides the retried call, the
`ConsentLedger` refuses it a second time. A client that cannot be asked gets a
refusal that says how the operator can opt in.
"""

from __future__ import annotations

import weakref
from typing import Any

from mcp.server.elicitation import (
    AcceptedElicitation,
    CancelledElicitation,
    DeclinedElicitation,
    ElicitationResult,
)
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit
from pydantic import BaseModel, Field

from piper_mcp.server.consent_ledger import ConsentLedger
from piper_mcp.server.credentials import CredentialService, Mode, Refusal
from piper_mcp.server.results import Consent

NO_ELICITATION = (
    "This MCP client cannot ask the user (it does not support elicitation), and the reveal "
    "policy for this variable is 'ask'. Use the STS token (mode='token'), or the operator can "
    "start piper-mcp with --reveal allow (PIPER_MCP_REVEAL=allow) or allow this one variable "
    "with PIPER_MCP_REVEAL_OVERRIDES."
)
CONSENT_SPENT = (
    "This consent was already used: one answer from the user releases one value. Call "
    "get_secret again so the user is asked again."
)


class RevealConsent(BaseModel):
    """What the user is asked: two yes/no answers, nothing to type."""

    reveal: bool = Field(description="Reveal this secret's value to the model")
    remember: bool = Field(
        default=False, description="Don't ask again for this variable in this session"
    )


def client_name(ctx: Context) -> str:
    params = getattr(ctx.session, "client_params", None)
    info = getattr(params, "client_info", None)
    if info is None:
        return "An MCP client"
    return f"{info.name} {info.version}".strip()


class ConsentKeeper:
    """The consent resolver for `get_secret`, and what users said for their session."""

    def __init__(self, service: CredentialService) -> None:
        self.service = service
        self.ledger = ConsentLedger()
        self._remembered: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()

    @staticmethod
    def _connection(ctx: Context) -> Any:
        # A ServerSession is made per request; the connection behind it is what a
        # handshake-era session is. The SDK has no public accessor for it. In the
        # 2026-07-28 era each request is its own connection, so nothing is remembered.
        return getattr(ctx.session, "_connection", None)

    def remember(self, ctx: Context, name: str) -> None:
        connection = self._connection(ctx)
        if connection is not None:
            self._remembered.setdefault(connection, set()).add(name)

    def remembered(self, ctx: Context, name: str) -> bool:
        connection = self._connection(ctx)
        return connection is not None and name in self._remembered.get(connection, set())

    async def ask(
        self, variable: str, mode: Mode, ctx: Context
    ) -> Elicit[RevealConsent] | Consent | str:
        """Run before the tool body: a question for the user, or why none is needed.

        Returns `Elicit` (ask), a `Consent` value (no question needed), or the
        refusal text when the user cannot be asked.
        """
        if mode != "value":
            return "not_needed"
        try:
            name = self.service.declared_name(variable)
        except Refusal:
            return "not_needed"  # the tool body refuses it, with the reason
        if self.service.policy.for_variable(name) != "ask":
            return "not_needed"
        if self.remembered(ctx, name):
            return "remembered"
        source = await self.service.raw_source(name)
        if source is None:
            return "not_needed"  # nothing to reveal; the tool body says why
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.elicitation is None:
            return NO_ELICITATION
        # After the last await: checking and spending a returned state is one step.
        code = self.ledger.question_code(name, ctx.request_state)
        if code is None:
            return CONSENT_SPENT
        return Elicit(
            f"{client_name(ctx)} asks to see the raw value of the secret {name!r}, from "
            f"{source}. Reveal it to the model? (Question {code}.)",
            RevealConsent,
        )

    def decision(
        self, outcome: ElicitationResult[RevealConsent], variable: str, ctx: Context
    ) -> Consent:
        """The `Consent` to reveal with, from the resolver's outcome; a `Refusal` if none."""
        if isinstance(outcome, DeclinedElicitation):
            raise Refusal(
                "The user declined to reveal this secret's value to the model.",
                reason="user_declined",
            )
        if isinstance(outcome, CancelledElicitation):
            raise Refusal(
                "The user dismissed the question; nothing was revealed.", reason="user_cancelled"
            )
        if not isinstance(outcome, AcceptedElicitation):
            raise Refusal("Unexpected consent outcome; nothing was revealed.")
        answer = outcome.data
        if isinstance(answer, RevealConsent):
            if not answer.reveal:
                raise Refusal(
                    "The user chose not to reveal this secret's value to the model.",
                    reason="user_declined",
                )
            if answer.remember:
                self.remember(ctx, self.service.declared_name(variable))
            return "user_allowed"
        if answer in (NO_ELICITATION, CONSENT_SPENT):
            reason = "consent_spent" if answer == CONSENT_SPENT else "no_elicitation"
            raise Refusal(str(answer), reason=reason)
        if answer in ("not_needed", "remembered"):
            return answer
        raise Refusal("Unexpected consent outcome; nothing was revealed.")


def consent_asked(outcome: ElicitationResult[RevealConsent]) -> tuple[bool, bool | None]:
    """(was the user asked, did they allow it) for the audit trail."""
    if isinstance(outcome, DeclinedElicitation | CancelledElicitation):
        return True, False
    if isinstance(outcome, AcceptedElicitation) and isinstance(outcome.data, RevealConsent):
        return True, outcome.data.reveal
    return False, None
