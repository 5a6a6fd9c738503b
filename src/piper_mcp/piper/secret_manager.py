"""Reading a secret from Google Secret Manager, with a Piper STS token or with ADC.

Either way the read is one REST `GET .../versions/{v}:access` on the client's
own pooled `httpx` client (its CA bundle, its deadline). For this process's own
Google identity (ADC), google-auth only mints the access token: it is imported
on first use, never at start-up (it costs hundreds of milliseconds), and
blocks, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from collections.abc import Callable

import httpx

from piper_mcp.checksum import crc32c
from piper_mcp.piper.errors import PiperConfigError, PiperError
from piper_mcp.piper.retry import RetryPolicy, time_left
from piper_mcp.piper.wire import send

GOOGLE_ENDPOINT = "https://secretmanager.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

REFUSED_ADVICE = (
    "Ask the user to check the grant in Piper, or check the IAM role "
    "secretmanager.secretAccessor for the agent's Google identity."
)
ADC_LOGIN_ADVICE = (
    "Renew the login (`gcloud auth application-default login`) or check "
    "GOOGLE_APPLICATION_CREDENTIALS."
)


class TokenRejected(Exception):
    """Secret Manager did not accept the token (401): expired, or not valid any more.

    Not a `PiperError`: the client asks for a fresh token and reads once more,
    and raises `error` only if that does not help.
    """

    def __init__(self, error: PiperError) -> None:
        super().__init__(error.message)
        self.error = error


def secret_version_name(project_id: str, secret_id: str, version: str = "latest") -> str:
    return f"projects/{project_id}/secrets/{secret_id}/versions/{version}"


async def read_with_token(
    http: httpx.AsyncClient,
    name: str,
    token: str,
    *,
    endpoint: str | None,
    attempt_timeout: float,
    retry: RetryPolicy,
    who: str = "the STS token",
) -> str:
    """Read `name` with a Google OAuth access token: a Piper-issued STS token, or `who`'s."""
    url = f"{(endpoint or GOOGLE_ENDPOINT).rstrip('/')}/v1/{name}:access"
    response = await send(
        http,
        "GET",
        url,
        who="Secret Manager",
        attempt_timeout=attempt_timeout,
        retry=retry,
        bearer=token,
    )
    status, reason, message = _google_error(response)
    if response.status_code == 401:
        expired = reason == "ACCESS_TOKEN_EXPIRED" or "expired" in message.lower()
        raise TokenRejected(
            PiperError(
                f"Secret Manager did not accept {who} for {name!r} "
                f"({'it has expired' if expired else 'expired or not valid'}).",
                advice="Ask Piper for a fresh token (call get_secret again).",
            )
        )
    if response.status_code == 403:
        raise PiperError(
            f"Secret Manager refused {who} access to {name!r} (permission denied).",
            advice=REFUSED_ADVICE,
        )
    if response.status_code == 404:
        raise PiperError(
            f"Secret Manager has no secret {name!r}.",
            advice="Check PIPER_PROJECT_ID and the secret's name.",
        )
    if response.is_error:
        raise PiperError(
            f"Could not read {name!r} from Secret Manager (HTTP {response.status_code} {status}).",
            advice="Check PIPER_SECRET_MANAGER_ENDPOINT and the network.",
        )
    not_a_payload = PiperError(
        f"Secret Manager answered {name!r} with a body that is not a secret payload.",
        advice="Check PIPER_SECRET_MANAGER_ENDPOINT.",
    )
    try:
        payload = response.json()["payload"]
        data = base64.b64decode(payload["data"], validate=True)
        checksum = payload.get("dataCrc32c")
        damaged = checksum is not None and int(checksum) != crc32c(data)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise not_a_payload from None
    if damaged:  # before decoding: damage may well make the bytes no UTF-8 at all
        raise PiperError(
            f"Secret Manager's answer for {name!r} does not match its checksum (dataCrc32c): "
            "it was damaged on the way.",
            advice="Try again; if it persists, check what sits between here and "
            "PIPER_SECRET_MANAGER_ENDPOINT (a proxy rewriting bodies).",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise not_a_payload from None


def _google_error(response: httpx.Response) -> tuple[str, str, str]:
    """(status, ErrorInfo reason, message) of Google's error body; empty where absent."""
    if not response.is_error:
        return "", "", ""
    try:
        error = response.json()["error"]
        details = error.get("details") or []
        reasons = [d.get("reason", "") for d in details if isinstance(d, dict)]
        return str(error.get("status", "")), str(next(iter(reasons), "")), str(error["message"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", "", ""


async def read_with_adc(
    http: httpx.AsyncClient,
    name: str,
    *,
    endpoint: str | None,
    attempt_timeout: float,
    retry: RetryPolicy,
    on_token: Callable[[str], None],
) -> str:
    """Read `name` as this process's own Google identity (Application Default Credentials);
    `on_token` is given the access token minted for it."""
    # The thread cannot be cancelled at the deadline: give google-auth what is left of it.
    left = time_left()
    timeout = attempt_timeout if left is None else max(min(left, attempt_timeout), 0.1)
    token = await asyncio.to_thread(adc_access_token, name, timeout=timeout)
    on_token(token)
    who = "this agent's Google identity"
    try:
        return await read_with_token(
            http,
            name,
            token,
            endpoint=endpoint,
            attempt_timeout=attempt_timeout,
            retry=retry,
            who=who,
        )
    except TokenRejected:
        raise PiperError(
            f"Secret Manager did not accept {who} for {name!r} (expired or invalid).",
            advice=ADC_LOGIN_ADVICE,
        ) from None


def adc_access_token(name: str, *, timeout: float) -> str:
    """An access token for this process's Google identity, to read `name`; blocks."""
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise PiperConfigError(
            "No Google Application Default Credentials to read the agent's client secret "
            f"{name!r}.",
            advice="Run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS, or give PIPER_CLIENT_SECRET directly.",
        ) from error
    if hasattr(credentials, "with_always_use_jwt_access"):
        # A service account signs its own token (a self-signed JWT, as Google's client
        # libraries do): no round trip to a token endpoint.
        credentials = credentials.with_always_use_jwt_access(True)
    request = functools.partial(google.auth.transport.requests.Request(), timeout=timeout)
    try:
        credentials.refresh(request)
    except (google.auth.exceptions.GoogleAuthError, OSError) as error:
        raise PiperError(
            f"Could not get an access token for this agent's Google identity to read {name!r} "
            f"({type(error).__name__}).",
            advice=ADC_LOGIN_ADVICE,
        ) from error
    return str(credentials.token)
