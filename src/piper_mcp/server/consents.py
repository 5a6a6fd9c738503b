"""What the reveal policy and the user decided about a raw value, as codes.

Plain strings, apart from the result shapes (pydantic) that carry them: `exec` audits
with them and must start fast.
"""

from __future__ import annotations

from enum import StrEnum


class Consent(StrEnum):
    """What the reveal policy and the user decided about one raw value.

    The values are what `SecretCredential.consent` says on the wire and the
    audit trail's reason codes.
    """

    # The value may leave:
    NOT_NEEDED = "not_needed"  # no question applies (a token, or a call refused anyway)
    OPERATOR_ALLOWED = "operator_allowed"
    USER_ALLOWED = "user_allowed"
    REMEMBERED = "remembered"  # the user allowed it earlier in this session
    # Nothing leaves:
    USER_DECLINED = "user_declined"
    USER_CANCELLED = "user_cancelled"
    NO_ELICITATION = "no_elicitation"  # the client cannot ask the user
    CONSENT_SPENT = "consent_spent"  # a 2026-07-28 answer brought back a second time

    @property
    def given_by_user(self) -> bool:
        """The user said yes: to this question, or earlier in the session."""
        return self in (Consent.USER_ALLOWED, Consent.REMEMBERED)
