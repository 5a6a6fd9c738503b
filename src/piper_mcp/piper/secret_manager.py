"""Reading a secret from Google Secret Manager, with a Piper STS token or with ADC.

An STS token is read with one REST `GET .../versions/{v}:access` on the
client's own pooled `httpx` client, so the read ends at the deadline like every
Piper call. Reading as this process's own Google identity (ADC) needs the
google libraries, which know how to sign and refresh those credentials: they
are imported on first use, never at start-up (they cost hundreds of
milliseconds), and block, so the async client runs them in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import httpx

from piper_mcp.piper.errors import PiperConfigError, PiperError
from piper_mcp.piper.retry import RetryPolicy
from piper_mcp.piper.wire import send

GOOGLE_ENDPOINT = "https://secretmanager.googleapis.com"

REFUSED_ADVICE = (
    "Ask the user to check the grant in Piper, or check the IAM role "
    "secretmanager.secretAccessor for the agent's Google identity."
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
) -> str:
    """Read `name` with a Piper-issued STS token (a Google OAuth access token)."""
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
                f"Secret Manager did not accept the STS token for {name!r} "
                f"({'it has expired' if expired else 'expired or not valid'}).",
                advice="Ask Piper for a fresh token (call get_secret again).",
            )
        )
    if response.status_code == 403:
        raise PiperError(
            f"Secret Manager refused the STS token access to {name!r} (permission denied).",
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
    try:
        data = base64.b64decode(response.json()["payload"]["data"], validate=True)
        return data.decode("utf-8")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise PiperError(
            f"Secret Manager answered {name!r} with a body that is not a secret payload.",
            advice="Check PIPER_SECRET_MANAGER_ENDPOINT.",
        ) from None


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


def read_with_adc(
    name: str,
    *,
    endpoint: str | None = None,
    ca_bundle: str | None = None,
    timeout: float,
) -> str:
    """Read `name` as this process's own Google identity (Application Default Credentials)."""
    import google.auth
    import google.auth.exceptions

    try:
        credentials, _ = google.auth.default(
            scopes=["https://www.googleapis.com/auth/cloud-platform"]
        )
    except google.auth.exceptions.DefaultCredentialsError as error:
        raise PiperConfigError(
            "No Google Application Default Credentials to read the agent's client secret "
            f"{name!r}.",
            advice="Run `gcloud auth application-default login`, set "
            "GOOGLE_APPLICATION_CREDENTIALS, or give PIPER_CLIENT_SECRET directly.",
        ) from error
    return _access(name, credentials, endpoint, ca_bundle, timeout)


def _access(
    name: str, credentials: Any, endpoint: str | None, ca_bundle: str | None, timeout: float
) -> str:
    from google.api_core import exceptions as google_errors
    from google.cloud import secretmanager

    who = "this agent's Google identity"
    client = secretmanager.SecretManagerServiceClient(
        transport="rest",
        credentials=credentials,
        client_options={"api_endpoint": endpoint} if endpoint else None,
    )
    if ca_bundle:
        # The library has no public CA option: set it on the REST transport's requests
        # session, and stop requests preferring REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE over it.
        transport: Any = client.transport
        transport._session.verify = ca_bundle
        transport._session.trust_env = False
    try:
        response = client.access_secret_version(request={"name": name}, timeout=timeout)
    except google_errors.Forbidden as error:
        raise PiperError(
            f"Secret Manager refused {who} access to {name!r} (permission denied).",
            advice=REFUSED_ADVICE,
        ) from error
    except google_errors.NotFound as error:
        raise PiperError(
            f"Secret Manager has no secret {name!r}.",
            advice="Check PIPER_PROJECT_ID and the secret's name.",
        ) from error
    except google_errors.Unauthorized as error:
        raise PiperError(
            f"Secret Manager did not accept {who} for {name!r} (expired or invalid).",
            advice="Renew the login (`gcloud auth application-default login`) or check "
            "GOOGLE_APPLICATION_CREDENTIALS.",
        ) from error
    except (google_errors.GoogleAPIError, OSError) as error:
        raise PiperError(
            f"Could not read {name!r} from Secret Manager ({type(error).__name__}).",
            advice="Check PIPER_SECRET_MANAGER_ENDPOINT and the network.",
        ) from error
    finally:
        client.transport.close()
    return bytes(response.payload.data).decode("utf-8")
