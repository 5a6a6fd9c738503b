"""One POST to one Piper function, and what its answer means.

This module turns HTTP into the protocol's response models or into a
`BackendAnswerError` that keeps status, code and body; the client decides
which Piper error that answer becomes. `send`, the retried request beneath,
also carries the Secret Manager read.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from piper_mcp import __version__
from piper_mcp.piper import protocol_names
from piper_mcp.piper.errors import PiperBackendError
from piper_mcp.piper.retry import RETRYABLE_STATUS, RetryPolicy, deadline_passed, time_left
from piper_mcp.validation import first_problem

USER_AGENT = f"piper-mcp/{__version__}"

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=BaseModel)


@dataclass
class BackendAnswerError(Exception):
    """A 4xx/5xx answer: `code` is the body's `error`, else `http_<status>`."""

    function: str
    status_code: int
    code: str
    description: str
    details: Any

    @property
    def is_invalid_token(self) -> bool:
        return self.status_code == 401 or self.code == protocol_names.INVALID_TOKEN

    @classmethod
    def from_response(cls, function: str, response: httpx.Response) -> BackendAnswerError:
        code = f"http_{response.status_code}"
        description = f"HTTP {response.status_code}"
        details: Any
        try:
            details = response.json()
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            details = response.text[:500]
            description = details or description
        else:
            if isinstance(details, dict):
                code = str(details.get("error") or code)
                description = str(
                    details.get("error_description") or details.get("message") or description
                )
        return cls(function, response.status_code, code, description, details)


async def call(
    http: httpx.AsyncClient,
    function: str,
    url: str,
    answer_model: type[Answer],
    *,
    attempt_timeout: float,
    retry: RetryPolicy,
    json_body: BaseModel | None = None,
    form_body: BaseModel | None = None,
    bearer: str | None = None,
) -> Answer:
    """POST to one function, retrying what is worth retrying.

    Returns the parsed answer; raises `BackendAnswerError` (a 4xx/5xx answer) or
    `PiperBackendError` (unreachable, too slow, malformed).
    """
    response = await send(
        http,
        "POST",
        url,
        who=f"Piper's {function}",
        attempt_timeout=attempt_timeout,
        retry=retry,
        bearer=bearer,
        json=json_body.model_dump(exclude_none=True) if json_body else None,
        data=form_body.model_dump(exclude_none=True) if form_body else None,
    )
    if response.is_error:
        raise BackendAnswerError.from_response(function, response)
    try:
        return answer_model.model_validate_json(response.content)
    except ValidationError as error:
        raise PiperBackendError(
            f"Piper's {function} answered HTTP {response.status_code} with a body that is not "
            f"a valid {answer_model.__name__} ({first_problem(error)}).",
            status_code=response.status_code,
            error_code="malformed_response",
        ) from None


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    who: str,
    attempt_timeout: float,
    retry: RetryPolicy,
    bearer: str | None = None,
    **request: Any,
) -> httpx.Response:
    """One request, tried again while the failure is worth retrying; the last answer.

    Each attempt, its whole body included, takes at most `attempt_timeout` of wall
    time: httpx's own timeouts bound each read, which a body trickling in never
    trips. Raises `PiperBackendError` when `who` could not be reached or did not
    answer in time; any HTTP answer, an error too, is returned.
    """
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    attempt = 0
    while True:
        attempt += 1
        left = time_left()
        if left is not None and left <= 0:
            raise deadline_passed()
        failure: PiperBackendError | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(attempt_timeout):
                response = await http.request(
                    method, url, headers=headers, timeout=attempt_timeout, **request
                )
        except (httpx.TimeoutException, TimeoutError) as error:
            failure = PiperBackendError(
                f"{who} at {url} did not answer within {attempt_timeout:g} s{_tries(attempt)}."
            )
            failure.__cause__ = error
        except httpx.HTTPError as error:
            failure = PiperBackendError(
                f"Could not reach {who} at {url} ({type(error).__name__}){_tries(attempt)}."
            )
            failure.__cause__ = error
        else:
            if response.status_code not in RETRYABLE_STATUS or attempt >= retry.attempts:
                return response
            retry_after = response.headers.get("retry-after")
        if failure is not None and attempt >= retry.attempts:
            raise failure
        pause = retry.delay(attempt, retry_after)
        left = time_left()
        if left is not None and pause >= left:
            if failure is None:
                return response  # the retryable answer stands: no time to ask again
            raise failure
        why = f"answered {response.status_code}" if failure is None else _why(failure)
        logger.info("%s: %s; retrying in %.2f s.", who, why, pause)
        await asyncio.sleep(pause)


def _tries(attempt: int) -> str:
    return f" ({attempt} attempts)" if attempt > 1 else ""


def _why(failure: Exception) -> str:
    return type(failure.__cause__).__name__


def new_http_client(
    ca_bundle: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The pooled client every Piper call goes through (`transport`: an in-process app)."""
    return httpx.AsyncClient(
        transport=transport,
        headers={"User-Agent": USER_AGENT},
        verify=ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    )
