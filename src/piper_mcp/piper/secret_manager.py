"""Reading a secret from Google Secret Manager, with ADC or with a Piper STS token.

The google libraries are imported here, on first use, never at start-up: they
cost hundreds of milliseconds and only this path needs them. Calls are
blocking; the async client runs them in a worker thread.
"""

from __future__ import annotations

from typing import Any

from piper_mcp.piper.errors import PiperConfigError, PiperError


def secret_version_name(project_id: str, secret_id: str, version: str = "latest") -> str:
    return f"projects/{project_id}/secrets/{secret_id}/versions/{version}"


def read_with_adc(name: str, *, endpoint: str | None = None, ca_bundle: str | None = None) -> str:
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
    return _access(name, credentials, endpoint, ca_bundle, who="this agent's Google identity")


def read_with_token(
    name: str, token: str, *, endpoint: str | None = None, ca_bundle: str | None = None
) -> str:
    """Read `name` with a Piper-issued STS token (a Google OAuth access token)."""
    from google.oauth2.credentials import Credentials

    return _access(name, Credentials(token=token), endpoint, ca_bundle, who="the STS token")


def _access(
    name: str, credentials: Any, endpoint: str | None, ca_bundle: str | None, *, who: str
) -> str:
    from google.api_core import exceptions as google_errors
    from google.cloud import secretmanager

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
        response = client.access_secret_version(request={"name": name})
    except google_errors.Forbidden as error:
        raise PiperError(
            f"Secret Manager refused {who} access to {name!r} (permission denied).",
            advice="Ask the user to check the grant in Piper, or check the IAM role "
            "secretmanager.secretAccessor for the agent's Google identity.",
        ) from error
    except google_errors.NotFound as error:
        raise PiperError(
            f"Secret Manager has no secret {name!r}.",
            advice="Check PIPER_PROJECT_ID and the secret's name.",
        ) from error
    except google_errors.Unauthorized as error:
        raise PiperError(
            f"Secret Manager did not accept {who} for {name!r} (expired or invalid).",
            advice="Ask Piper for a fresh token (call get_secret again).",
        ) from error
    except (google_errors.GoogleAPIError, OSError) as error:
        raise PiperError(
            f"Could not read {name!r} from Secret Manager ({type(error).__name__}).",
            advice="Check PIPER_SECRET_MANAGER_ENDPOINT and the network.",
        ) from error
    finally:
        client.transport.close()
    return bytes(response.payload.data).decode("utf-8")
