"""Every way a Piper call can fail, as the published SDK names them.

Each error says what happened and, in `advice`, what a person can do next.
`str(error)` gives both. `status_code` / `error_code` / `error_details` keep
what the backend answered, from every endpoint (the token endpoint included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from piper_mcp.piper import protocol_names

if TYPE_CHECKING:
    from piper_mcp.piper.wire import BackendAnswerError

GRANT_PAGE_URL = "https://agentpiper.com/secrets"


class PiperError(Exception):
    """Base class of every error this client raises."""

    advice: str = ""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        error_details: Any = None,
        advice: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if advice is not None:
            self.advice = advice
        # What the backend answered, when the error is its answer.
        self.status_code = status_code
        self.error_code = error_code
        self.error_details = error_details
        # What the fallback tiers tried after Piper failed, e.g.
        # "environment variable MYAPP_KEY: not set". Filled by the client.
        self.attempts: list[str] = []

    def __str__(self) -> str:
        return self.with_advice(self.advice)

    def with_advice(self, advice: str) -> str:
        """What happened and what was tried, then `advice` in place of the error's own.

        For a caller that knows the better fix: a local vault's grant command, say,
        rather than the Piper cloud's grant page.
        """
        parts = [self.message]
        if self.attempts:
            parts.append("Also tried: " + "; ".join(self.attempts) + ".")
        if advice:
            parts.append(advice)
        return " ".join(parts)


# --- configuration and context ---


class PiperConfigError(PiperError):
    """The client is configured wrongly, or a setting it needs is missing."""


class PiperVariableNameError(PiperConfigError, ValueError):
    """A variable name is empty, not a string, too long, or normalizes to nothing."""

    advice = "Use a name made of letters, digits, spaces, '-' or '_', e.g. 'openai_api_key'."


class PiperLinkNeededError(PiperConfigError):
    """No user context: Piper Link did not answer and no instance id is configured."""

    advice = (
        "Start the Piper Link app and sign in, or set PIPER_INSTANCE_ID to the user's "
        "instance id (PIPER_LINK_URL if Link listens somewhere other than the default)."
    )

    def __init__(
        self,
        message: str = "Piper Link did not answer and no instance id is configured.",
        *,
        advice: str | None = None,
    ) -> None:
        super().__init__(message, advice=advice)


# --- answers from the backend ---


class PiperAuthError(PiperError):
    """The backend refused the agent or the request (a 4xx answer)."""

    advice = (
        "Check PIPER_CLIENT_ID and PIPER_CLIENT_SECRET (or PIPER_CLIENT_SECRET_NAME) against "
        "the agent registered in Piper."
    )


class PiperGrantNeededError(PiperAuthError):
    """The user has not granted this agent the variable (`mapping_not_found`)."""

    def __init__(
        self,
        message: str,
        *,
        client_id: str,
        variable_name: str,
        grant_page_url: str = GRANT_PAGE_URL,
        status_code: int | None = 404,
        error_code: str | None = protocol_names.MAPPING_NOT_FOUND,
        error_details: Any = None,
    ) -> None:
        self.agent_id_for_grant = client_id
        self.variable_name_requested = variable_name
        self.constructed_grant_url = grant_url(grant_page_url, client_id, variable_name)
        super().__init__(
            message,
            status_code=status_code,
            error_code=error_code,
            error_details=error_details,
            advice=f"Ask the user to grant it at {self.constructed_grant_url}",
        )

    @property
    def grant_url(self) -> str:
        return self.constructed_grant_url


class PiperForbiddenError(PiperAuthError):
    """A grant exists but does not allow this (`permission_denied`), e.g. it is not active."""

    advice = "Ask the user to check that the grant is active in the Piper dashboard."


class PiperRawSecretExchangeError(PiperError):
    """The STS token could not be exchanged for the raw secret value."""

    advice = "Use the STS token instead, or ask the user to check the grant in Piper."


class PiperBackendError(PiperError):
    """The backend could not be reached, failed (5xx), or answered something malformed."""

    advice = (
        "Check that the Piper backend URLs (PIPER_*_URL) are right and that the backend is "
        "running and reachable from this machine."
    )


def grant_url(page_url: str, client_id: str, variable_name: str) -> str:
    """The Piper dashboard page where a user grants `variable_name` to an agent."""
    query = urlencode(
        {
            "response_type": "code",
            "scope": "manage_grants",
            "client": client_id,
            "variable": variable_name,
        }
    )
    return f"{page_url.rstrip('/')}?{query}"


def error_for(
    answer: BackendAnswerError, variable: str | None, *, client_id: str, grant_page_url: str
) -> PiperError:
    """The Piper error a backend's 4xx/5xx answer means (`variable`: the one asked about)."""
    fields: dict[str, Any] = {
        "status_code": answer.status_code,
        "error_code": answer.code,
        "error_details": answer.details,
    }
    message = (
        f"Piper's {answer.function} answered {answer.status_code} {answer.code}: "
        f"{answer.description}"
    )
    if answer.status_code >= 500:
        # Storage: the backend is reachable, its own storage failed, and its description
        # (in the message) names the cause and the fix better than any advice here.
        advice = "" if answer.code == protocol_names.STORAGE_UNAVAILABLE else None
        return PiperBackendError(message, advice=advice, **fields)
    if answer.function == protocol_names.EXCHANGE_SECRET_FUNCTION:
        return PiperRawSecretExchangeError(message, **fields)
    if answer.code == protocol_names.MAPPING_NOT_FOUND and variable is not None:
        return PiperGrantNeededError(
            f"The user has not granted this agent the variable {variable!r}.",
            client_id=client_id,
            variable_name=variable,
            grant_page_url=grant_page_url,
            **fields,
        )
    if answer.status_code == 403 or answer.code == protocol_names.PERMISSION_DENIED:
        return PiperForbiddenError(message, **fields)
    if (
        answer.code == protocol_names.INVALID_REQUEST
        and answer.function == protocol_names.TOKEN_FUNCTION
    ):
        return PiperAuthError(
            message,
            advice="Piper did not accept the user context: sign in to Piper Link again, "
            "or check PIPER_INSTANCE_ID.",
            **fields,
        )
    return PiperAuthError(message, **fields)
