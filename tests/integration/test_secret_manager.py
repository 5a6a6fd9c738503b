"""Secret Manager through the real google-cloud-secret-manager client, against the local backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient, PiperConfigError, PiperError
from tests.conftest import (
    AGENT_ID,
    AGENT_SECRET,
    DB_SECRET,
    OPENAI_SECRET,
    OPENAI_VALUE,
    OWNER_ID,
    USER_ID,
    V1_AGENT_ID,
    credential_id,
)
from tests.scripted import HeaderRecorder

pytestmark = pytest.mark.anyio

SERVICE_ACCOUNT = "research-agent@agent-project.iam.gserviceaccount.com"


@pytest.fixture
def recorded_secret_manager(
    piper: LocalBackend, serve: Callable[[object], str]
) -> tuple[HeaderRecorder, str]:
    recorder = HeaderRecorder(piper.app.asgi)
    return recorder, serve(recorder)


@pytest.fixture
def application_default_credentials(
    piper: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A service-account key file as ADC; the local backend trusts its public key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    key_file = tmp_path / "adc.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "agent-project",
                "private_key_id": "key-1",
                "private_key": private_pem,
                "client_email": SERVICE_ACCOUNT,
                "client_id": "1",
                # Never contacted: the client signs its own JWTs for Google APIs.
                "token_uri": "http://127.0.0.1:9/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    piper.vault.put_secret(f"agent-secret-{V1_AGENT_ID}", AGENT_SECRET, owner_user_id=OWNER_ID)
    piper.vault.add_google_identity(
        SERVICE_ACCOUNT, public_pem, readable_secrets=[f"agent-secret-{V1_AGENT_ID}"]
    )
    return key_file


async def test_the_sts_token_reads_the_granted_secret_and_is_the_bearer_sent(
    piper: LocalBackend, recorded_secret_manager: tuple[HeaderRecorder, str]
) -> None:
    recorder, endpoint = recorded_secret_manager
    settings = {**piper.client_settings(), "secret_manager_endpoint": endpoint}
    async with AsyncPiperClient(AGENT_ID, **settings) as client:
        result = await client.get_secret("OpenAI API Key")
        assert await client.read_secret_value(result) == OPENAI_VALUE
    path, headers = recorder.seen[-1]
    assert path == (
        f"/v1/projects/{piper.project_id}/secrets/{credential_id(piper, OPENAI_SECRET)}"
        "/versions/latest:access"
    )
    assert headers["authorization"] == f"Bearer {result['value']}"


async def test_an_sts_token_reads_nothing_it_was_not_granted(piper: LocalBackend) -> None:
    async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
        result = await client.get_secret("OpenAI API Key")
        other = result.model_copy(update={"piper_credential_id": credential_id(piper, DB_SECRET)})
        with pytest.raises(PiperError, match="permission denied"):
            await client.read_secret_value(other)


async def test_a_revoked_grant_stops_the_sts_token_reading(piper: LocalBackend) -> None:
    async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
        result = await client.get_secret("OpenAI API Key")
        piper.vault.revoke(USER_ID, AGENT_ID, "OpenAI API Key")
        with pytest.raises(PiperError, match="permission denied"):
            await client.read_secret_value(result)


async def test_a_client_secret_given_by_name_is_read_with_adc(
    piper: LocalBackend,
    recorded_secret_manager: tuple[HeaderRecorder, str],
    application_default_credentials: Path,
) -> None:
    recorder, endpoint = recorded_secret_manager
    settings = {**piper.client_settings(), "secret_manager_endpoint": endpoint}
    client = AsyncPiperClient(
        V1_AGENT_ID, client_secret_name=f"agent-secret-{V1_AGENT_ID}", **settings
    )
    async with client:
        assert client.protocol_version == 1
        await client.get_secret("OpenAI API Key")
        await client.get_secret("database_url")
    assert piper.app.calls["piper-token-endpoint"] == 2  # the secret was accepted
    reads = [headers for path, headers in recorder.seen if path.startswith("/v1/")]
    assert len(reads) == 1  # read once, then kept
    bearer = reads[0]["authorization"].removeprefix("Bearer ")
    assert jwt.decode(bearer, verify=False)["iss"] == SERVICE_ACCOUNT


async def test_without_adc_the_secret_name_path_says_how_to_log_in(piper: LocalBackend) -> None:
    client = AsyncPiperClient(
        AGENT_ID,
        client_secret_name=f"agent-secret-{AGENT_ID}",
        enable_env_fallback=False,
        **piper.client_settings(),
    )
    async with client:
        with pytest.raises(PiperConfigError, match="Application Default Credentials") as caught:
            await client.get_secret("OpenAI API Key")
    assert "gcloud auth application-default login" in caught.value.advice


async def test_an_identity_without_access_is_refused(
    piper: LocalBackend, application_default_credentials: Path
) -> None:
    client = AsyncPiperClient(
        AGENT_ID,
        client_secret_name="agent-secret-someone-else",
        enable_env_fallback=False,
        **piper.client_settings(),
    )
    async with client:
        with pytest.raises(PiperError, match="permission denied"):
            await client.get_secret("OpenAI API Key")
