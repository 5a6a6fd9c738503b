"""What a backend's refusal becomes: the error class, its codes, and advice that fits."""

from __future__ import annotations

import pytest

from piper_mcp.piper import protocol_names
from piper_mcp.piper.errors import (
    PiperAuthError,
    PiperBackendError,
    PiperError,
    PiperForbiddenError,
    PiperGrantNeededError,
    PiperRawSecretExchangeError,
    error_for,
)
from piper_mcp.piper.wire import BackendAnswerError


def answer(function: str, status: int, code: str) -> PiperError:
    said = BackendAnswerError(function, status, code, "the backend's words", {"error": code})
    return error_for(said, "slack_token", client_id="agent-x", grant_page_url="https://p.example")


@pytest.mark.parametrize(
    ("function", "status", "code", "kind"),
    [
        (protocol_names.RESOLVE_MAPPING_FUNCTION, 503, "http_503", PiperBackendError),
        (
            protocol_names.EXCHANGE_SECRET_FUNCTION,
            400,
            protocol_names.INVALID_REQUEST,
            PiperRawSecretExchangeError,
        ),
        (
            protocol_names.GET_SCOPED_FUNCTION,
            403,
            protocol_names.PERMISSION_DENIED,
            PiperForbiddenError,
        ),
        (protocol_names.TOKEN_FUNCTION, 401, protocol_names.INVALID_CLIENT, PiperAuthError),
    ],
)
def test_each_answer_keeps_what_the_backend_said(
    function: str, status: int, code: str, kind: type[PiperError]
) -> None:
    error = answer(function, status, code)
    assert type(error) is kind
    assert (error.status_code, error.error_code, error.error_details) == (
        status,
        code,
        {"error": code},
    )
    assert error.message == f"Piper's {function} answered {status} {code}: the backend's words"


def test_an_unmapped_variable_says_where_to_grant_it() -> None:
    error = answer(protocol_names.RESOLVE_MAPPING_FUNCTION, 404, protocol_names.MAPPING_NOT_FOUND)
    assert isinstance(error, PiperGrantNeededError)
    assert error.grant_url == (
        "https://p.example?response_type=code&scope=manage_grants&client=agent-x"
        "&variable=slack_token"
    )
    assert error.status_code == 404


def test_failed_storage_keeps_the_backends_own_advice_only() -> None:
    error = answer(protocol_names.GET_SCOPED_FUNCTION, 503, protocol_names.STORAGE_UNAVAILABLE)
    assert isinstance(error, PiperBackendError)
    assert str(error) == error.message
    assert "PIPER_*_URL" in str(answer(protocol_names.GET_SCOPED_FUNCTION, 500, "http_500"))


def test_a_rejected_user_context_says_to_sign_in_again() -> None:
    error = answer(protocol_names.TOKEN_FUNCTION, 400, protocol_names.INVALID_REQUEST)
    assert "sign in to Piper Link again" in error.advice
