"""The published SDK's documented flow, run against a Piper given by environment variables.

Run by test_published_sdk.py in a subprocess whose PYTHONPATH selects the
SDK release. Prints one JSON object; secret values appear only as SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import piper_sdk
from google.cloud import secretmanager
from google.oauth2.credentials import Credentials
from piper_sdk.client import PiperClient

logging.disable(logging.CRITICAL)
env = os.environ
V1 = not piper_sdk.__version__.startswith("0.7")


def digest(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


def client(fallback: bool) -> PiperClient:
    common = {
        "get_scoped_url": env["PIPER_GET_SCOPED_URL"],
        "resolve_mapping_url": env["PIPER_RESOLVE_MAPPING_URL"],
        "exchange_secret_url": env["PIPER_EXCHANGE_SECRET_URL"],
        "piper_link_service_url": env["PIPER_LINK_URL"],
    }
    if V1:
        return PiperClient(
            env["PIPER_CLIENT_ID"],
            env["PIPER_CLIENT_SECRET"],
            token_url=env["PIPER_TOKEN_URL"],
            enable_env_fallback=fallback,
            **common,
        )
    return PiperClient(env["PIPER_CLIENT_ID"], fallback_to_env=fallback, **common)


def grant_needed(error: Exception) -> Exception:
    """0.7 wraps the Piper tier's error in PiperSecretAcquisitionError."""
    summary = getattr(error, "attempted_sources_summary", None)
    return summary["Piper"] if summary else error


strict = client(fallback=False)
sts = strict.get_secret(env["GRANTED"])
raw = strict.get_secret(env["GRANTED"], fetch_raw_secret=True)
manager = secretmanager.SecretManagerServiceClient(
    transport="rest",
    credentials=Credentials(token=sts["value"]),
    client_options={"api_endpoint": env["PIPER_SECRET_MANAGER_ENDPOINT"]},
)
name = f"projects/{env['PIPER_PROJECT_ID']}/secrets/{sts['piper_credential_id']}/versions/latest"
read = manager.access_secret_version(request={"name": name}).payload.data.decode()
try:
    strict.get_secret(env["UNGRANTED"])
    ungranted: dict[str, object] = {"raised": None}
except Exception as error:
    cause = grant_needed(error)
    ungranted = {"raised": type(cause).__name__, "code": getattr(cause, "error_code", None)}
fallback = client(fallback=True).get_secret(env["UNGRANTED"])

print(
    json.dumps(
        {
            "version": piper_sdk.__version__,
            "sts": {"source": sts["source"], "instance": sts["piper_instance_id"]},
            "raw": {"source": raw["source"], "value": digest(raw["value"])},
            "secret_manager_value": digest(read),
            "ungranted": ungranted,
            "fallback": {"source": fallback["source"], "value": digest(fallback["value"])},
        }
    )
)
