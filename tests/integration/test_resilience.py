"""Retries, backoff, deadlines, single-flight and Link re-discovery, over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import (
    AsyncPiperClient,
    PiperAuthError,
    PiperBackendError,
    PiperGrantNeededError,
)
from tests.conftest import AGENT_ID, AGENT_SECRET, INSTANCE_ID
from tests.scripted import Scripted, ScriptedPiper, json_answer

pytestmark = pytest.mark.anyio

TOKEN = "/piper-token-endpoint"
RESOLVE = "/piper-resolve-variable-mapping"
SCOPED = "/getscopedgcpcredentials"
RESOLVED = json_answer(200, '{"credentialId": "cred-1"}')
SCOPED_OK = json_answer(
    200, '{"access_token": "sts-1", "expires_in": 3600, "granted_credential_ids": ["cred-1"]}'
)


@pytest.fixture
def scripted(serve: Callable[[object], str]) -> tuple[ScriptedPiper, str]:
    backend = ScriptedPiper()
    backend.script(SCOPED, SCOPED_OK)
    return backend, serve(backend.asgi)


def client_for(url: str, **settings: object) -> AsyncPiperClient:
    return AsyncPiperClient(
        AGENT_ID,
        piper_link_instance_id=INSTANCE_ID,
        token_url=url + TOKEN,
        resolve_mapping_url=url + RESOLVE,
        get_scoped_url=url + SCOPED,
        enable_env_fallback=False,
        **settings,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_passing_server_error_is_retried_and_recovers(
    scripted: tuple[ScriptedPiper, str], status: int
) -> None:
    backend, url = scripted
    backend.script(RESOLVE, json_answer(status, '{"error": "busy"}'), RESOLVED)
    async with client_for(url) as client:
        result = await client.get_secret("My Key")
    assert result["source"] == "piper_sts"
    assert len(backend.requests[RESOLVE]) == 2


async def test_429_honours_retry_after(scripted: tuple[ScriptedPiper, str]) -> None:
    backend, url = scripted
    limited = Scripted(429, b'{"error": "slow_down"}', headers={"retry-after": "0.6"})
    backend.script(RESOLVE, limited, RESOLVED)
    async with client_for(url) as client:
        await client.get_secret("My Key")
    first, second = backend.requests[RESOLVE]
    assert second.at - first.at >= 0.55  # waited as asked, not the 0.2 s backoff


async def test_retry_after_longer_than_the_deadline_gives_up_at_once(
    scripted: tuple[ScriptedPiper, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, url = scripted
    down = Scripted(503, b'{"error": "down"}', headers={"retry-after": "30"})
    backend.script(RESOLVE, down)
    monkeypatch.setenv("PIPER_RETRY_DEADLINE", "10")
    async with client_for(url) as client:
        # Not "did not answer within PIPER_RETRY_DEADLINE": it did not wait to find out.
        with pytest.raises(PiperBackendError, match="503"):
            await client.get_secret("My Key")
    assert len(backend.requests[RESOLVE]) == 1


@pytest.mark.parametrize(
    ("path", "answer", "error"),
    [
        (RESOLVE, json_answer(404, '{"error": "mapping_not_found"}'), PiperGrantNeededError),
        (RESOLVE, json_answer(403, '{"error": "permission_denied"}'), PiperAuthError),
        (RESOLVE, json_answer(400, '{"error": "invalid_request"}'), PiperAuthError),
        (RESOLVE, json_answer(500, '{"error": "bug"}'), PiperBackendError),
    ],
)
async def test_an_answer_that_means_no_is_never_retried(
    scripted: tuple[ScriptedPiper, str], path: str, answer: Scripted, error: type[Exception]
) -> None:
    backend, url = scripted
    backend.script(path, answer)
    async with client_for(url) as client:
        with pytest.raises(error):
            await client.get_secret("My Key")
    assert len(backend.requests[path]) == 1


async def test_bad_client_credentials_are_not_retried(scripted: tuple[ScriptedPiper, str]) -> None:
    backend, url = scripted
    backend.script(TOKEN, json_answer(401, '{"error": "invalid_client"}'))
    async with client_for(url, client_secret=AGENT_SECRET) as client:
        with pytest.raises(PiperAuthError, match="invalid_client"):
            await client.get_secret("My Key")
    assert len(backend.requests[TOKEN]) == 1


async def test_an_unreachable_backend_is_tried_a_bounded_number_of_times(
    unused_link_url: str,
) -> None:
    url = unused_link_url.removesuffix("/piper-link-context")
    async with client_for(url) as client:
        with pytest.raises(PiperBackendError, match=r"Could not reach .* \(3 attempts\)"):
            await client.get_secret("My Key")


async def test_concurrent_calls_share_one_round_trip_per_variable(piper: LocalBackend) -> None:
    variables = [
        "OpenAI API Key",
        "database_url",
        "OpenAI API Key",
        "database_url",
        "openai-api-key",
    ]
    async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
        tokens: list[str] = []

        async def ask(name: str) -> None:
            tokens.append(str((await client.get_secret(name))["value"]))

        async with anyio.create_task_group() as group:
            for n in range(100):
                group.start_soon(ask, variables[n % len(variables)])
    assert len(tokens) == 100
    assert len(set(tokens)) == 2  # one STS token per variable
    assert piper.app.calls["piper-resolve-variable-mapping"] == 2
    assert piper.app.calls["getscopedgcpcredentials"] == 2


async def test_a_rejected_user_context_is_rediscovered_from_link(
    serve: Callable[[object], str], piper: LocalBackend
) -> None:
    link = ScriptedPiper()
    link.script(
        "/piper-link-context",
        json_answer(200, '{"instanceId": "instance-signed-out"}'),
        json_answer(200, f'{{"instanceId": "{INSTANCE_ID}"}}'),
    )
    settings = {
        **piper.client_settings(),
        "piper_link_service_url": serve(link.asgi) + "/piper-link-context",
    }
    async with AsyncPiperClient(AGENT_ID, enable_env_fallback=False, **settings) as client:
        result = await client.get_secret("database_url")
    assert result["piper_instance_id"] == INSTANCE_ID
    assert len(link.requests["/piper-link-context"]) == 2


async def test_an_sts_token_is_reused_within_the_window_and_raw_values_never_are(
    piper: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_REVOCATION_WINDOW", "30")
    async with AsyncPiperClient(AGENT_ID, **piper.client_settings()) as client:
        first = await client.get_secret("database_url")
        again = [await client.get_secret("database_url") for _ in range(10)]
        await client.get_secret("database_url", fetch_raw_secret=True)
        await client.get_secret("database_url", fetch_raw_secret=True)
    assert {result["value"] for result in again} == {first["value"]}
    assert all(0 < result["expires_in"] <= first["expires_in"] for result in again)
    assert piper.app.calls["getscopedgcpcredentials"] == 3  # 1 token, then 2 raw exchanges
    assert piper.app.calls["piper-exchange-sts-for-secret"] == 2


async def test_a_connection_reset_mid_body_is_retried_and_recovers(
    serve: Callable[[object], str],
) -> None:
    """The first answer promises 100 bytes and hangs up after 16; the second is whole."""
    answers = [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"credentialId":',
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\n"
        b'Connection: close\r\n\r\n{"credentialId": "cred-1"}',
    ]
    seen: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        seen.append(len(seen))
        writer.write(answers[min(len(seen) - 1, 1)])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    scoped = ScriptedPiper()
    scoped.script(SCOPED, SCOPED_OK)
    async with server:
        url = f"http://127.0.0.1:{port}"
        client = AsyncPiperClient(
            AGENT_ID,
            piper_link_instance_id=INSTANCE_ID,
            resolve_mapping_url=url + RESOLVE,
            get_scoped_url=serve(scoped.asgi) + SCOPED,
            enable_env_fallback=False,
        )
        async with client:
            result = await client.get_secret("My Key")
    assert result["piper_credential_id"] == "cred-1"
    assert len(seen) == 2
