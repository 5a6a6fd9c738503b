"""Issue 9.7: guessing a client secret at the token endpoint, and flooding it to exhaust memory.

Each secret check is an scrypt hash (16 MiB). The attacker sends wrong secrets
over raw HTTP: for one agent until it is backed off, and 80 at once with real
and random client ids. Guessing slows down exponentially, memory stays flat,
and the agent that knows its secret is served again.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from piper_mcp.local.request_body import RequestRejected
from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.throttle import (
    FAILURES_BEFORE_BACKOFF,
    MAX_BACKOFF_SECONDS,
    MAX_TRACKED_CLIENTS,
    SecretCheckGate,
)
from piper_mcp.piper import AsyncPiperClient, PiperAuthError, protocol_names
from tests.conftest import AGENT_SECRET, INSTANCE_ID, OPENAI_VALUE, V1_AGENT_ID, seeded_vault

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
FLOOD = 80
# 80 unbounded scrypt hashes need 80 x 16 MiB = 1.25 GiB; a bounded few need tens of MiB.
ALLOWED_GROWTH = 150 * MiB
SERVE_ON_FREE_PORTS = ("--port", "0", "--link-port", "0", "--json")


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wrong_secret() -> str:
    return "wrong-secret-" + secrets.token_hex(16)


def token_form(base_url: str, client_id: str, client_secret: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
        "audience": f"{base_url}/{protocol_names.RESOLVE_MAPPING_FUNCTION}",
    }


def ask_token(http: httpx.Client, base_url: str, client_id: str, secret: str) -> httpx.Response:
    return http.post(
        f"{base_url}/{protocol_names.TOKEN_FUNCTION}", data=token_form(base_url, client_id, secret)
    )


def assert_backed_off(answer: httpx.Response) -> int:
    """The refusal a throttled attempt gets; the seconds it asks the caller to wait."""
    assert answer.status_code == 429
    retry_after = int(answer.headers["retry-after"])
    assert retry_after >= 1
    body = answer.json()
    assert body["error"] == protocol_names.TOO_MANY_REQUESTS
    assert f"try again in {retry_after} s" in body["error_description"]
    return retry_after


@pytest.fixture
def clock(piper: LocalBackend) -> ManualClock:
    """The backend's gate on a clock the test moves, so backoff is tested without sleeping."""
    manual = ManualClock()
    piper.app.secret_checks = SecretCheckGate(clock=manual)
    return manual


# --- guessing one agent's secret ---


def test_wrong_secrets_back_off_the_client_id_and_the_right_one_waits_too(
    piper: LocalBackend, clock: ManualClock
) -> None:
    url = piper.base_url
    with httpx.Client() as attacker:
        for _ in range(FAILURES_BEFORE_BACKOFF):
            assert ask_token(attacker, url, V1_AGENT_ID, wrong_secret()).status_code == 401
        wait = assert_backed_off(ask_token(attacker, url, V1_AGENT_ID, wrong_secret()))
        # During the backoff nothing is checked, so even the right secret tells nothing.
        assert_backed_off(ask_token(attacker, url, V1_AGENT_ID, AGENT_SECRET))

        clock.advance(wait)
        assert ask_token(attacker, url, V1_AGENT_ID, wrong_secret()).status_code == 401
        # Each further failure doubles the wait.
        assert assert_backed_off(ask_token(attacker, url, V1_AGENT_ID, wrong_secret())) == 2 * wait

        clock.advance(2 * wait)
        accepted = ask_token(attacker, url, V1_AGENT_ID, AGENT_SECRET)
        assert accepted.status_code == 200
        assert accepted.json()["access_token"]
        # A success forgets the failures: the next wrong secret is an ordinary 401.
        assert ask_token(attacker, url, V1_AGENT_ID, wrong_secret()).status_code == 401


def test_unknown_client_ids_are_backed_off_alike_so_answers_do_not_reveal_agents(
    piper: LocalBackend, clock: ManualClock
) -> None:
    url = piper.base_url
    with httpx.Client() as attacker:
        answers = {
            client_id: [
                ask_token(attacker, url, client_id, wrong_secret())
                for _ in range(FAILURES_BEFORE_BACKOFF + 1)
            ]
            for client_id in (V1_AGENT_ID, "no-such-agent")
        }
    seen = {
        client_id: [(a.status_code, a.headers.get("retry-after"), a.text) for a in tries]
        for client_id, tries in answers.items()
    }
    assert seen[V1_AGENT_ID] == seen["no-such-agent"]
    assert_backed_off(answers["no-such-agent"][-1])


async def test_the_backoff_doubles_with_each_failure_up_to_a_cap() -> None:
    clock = ManualClock()
    gate = SecretCheckGate(clock=clock)
    for _ in range(FAILURES_BEFORE_BACKOFF - 1):
        assert await gate.check(V1_AGENT_ID, lambda: None) is None
    waits = []
    for _ in range(30):
        assert await gate.check(V1_AGENT_ID, lambda: None) is None
        with pytest.raises(RequestRejected) as refused:
            await gate.check(V1_AGENT_ID, lambda: V1_AGENT_ID)
        waits.append(int(refused.value.response.headers["retry-after"]))
        clock.advance(waits[-1])
    assert waits[:5] == [1, 2, 4, 8, 16]
    assert max(waits) == waits[-1] == MAX_BACKOFF_SECONDS


async def test_the_tracked_client_ids_stay_bounded_and_keep_the_guessed_one() -> None:
    clock = ManualClock()
    gate = SecretCheckGate(clock=clock)
    for _ in range(FAILURES_BEFORE_BACKOFF):
        await gate.check(V1_AGENT_ID, lambda: None)
    for n in range(10_000):
        await gate.check(f"random-{n}-{secrets.token_hex(4)}", lambda: None)
        assert gate.tracked_clients <= MAX_TRACKED_CLIENTS
    assert gate.tracked_clients == MAX_TRACKED_CLIENTS
    # A flood of fresh ids does not push out the id being guessed (that would reset its wait).
    with pytest.raises(RequestRejected) as refused:
        await gate.check(V1_AGENT_ID, lambda: V1_AGENT_ID)
    assert refused.value.response.status_code == 429


async def test_our_client_honours_retry_after_then_says_when_to_try_again(
    piper: LocalBackend, clock: ManualClock
) -> None:
    with httpx.Client() as attacker:
        for _ in range(FAILURES_BEFORE_BACKOFF):
            ask_token(attacker, piper.base_url, V1_AGENT_ID, wrong_secret())
    async with AsyncPiperClient(
        V1_AGENT_ID, AGENT_SECRET, enable_env_fallback=False, **piper.client_settings()
    ) as agent:
        # The gate's clock stands still, so every retry the client makes is refused too.
        with pytest.raises(PiperAuthError) as refused:
            await agent.get_secret("OpenAI API Key")
        assert "try again in 1 s" in str(refused.value)
        tries = piper.app.calls[protocol_names.TOKEN_FUNCTION] - FAILURES_BEFORE_BACKOFF
        assert tries > 1  # it honoured Retry-After and asked again

        clock.advance(1)
        result = await agent.get_secret("OpenAI API Key", fetch_raw_secret=True)
    assert result["value"] == OPENAI_VALUE


# --- flooding the endpoint ---


async def flood(url: str) -> list[httpx.Response]:
    """80 wrong secrets at once, a quarter for the real agent, the rest for random ids."""
    client_ids = [
        V1_AGENT_ID if n % 4 == 0 else f"agent-{secrets.token_hex(6)}" for n in range(FLOOD)
    ]
    async with httpx.AsyncClient(
        timeout=120, limits=httpx.Limits(max_connections=FLOOD)
    ) as attacker:
        answers = await asyncio.gather(
            *(
                attacker.post(
                    f"{url}/{protocol_names.TOKEN_FUNCTION}",
                    data=token_form(url, client_id, wrong_secret()),
                )
                for client_id in client_ids
            )
        )
    assert {answer.status_code for answer in answers} <= {401, 429}
    for answer in answers:
        if answer.status_code == 429:
            assert_backed_off(answer)
    return answers


async def test_after_a_flood_the_agent_gets_its_token_resolve_and_scoped_credentials(
    piper: LocalBackend, clock: ManualClock
) -> None:
    answers = await flood(piper.base_url)
    assert any(answer.status_code == 429 for answer in answers)  # most were turned away
    clock.advance(MAX_BACKOFF_SECONDS)  # the agent's own backoff, if the flood caused one

    url = piper.base_url
    async with httpx.AsyncClient() as agent:
        token = await agent.post(
            f"{url}/{protocol_names.TOKEN_FUNCTION}",
            data={
                **token_form(url, V1_AGENT_ID, AGENT_SECRET),
                "piper_link_instance_id": INSTANCE_ID,
            },
        )
        assert token.status_code == 200, token.text
        resolved = await agent.post(
            f"{url}/{protocol_names.RESOLVE_MAPPING_FUNCTION}",
            json={"variableName": "openai_api_key"},
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )
        assert resolved.status_code == 200, resolved.text
        credential_id = resolved.json()["credentialId"]
        scoped_token = await agent.post(
            f"{url}/{protocol_names.TOKEN_FUNCTION}",
            data={
                **token_form(url, V1_AGENT_ID, AGENT_SECRET),
                "audience": f"{url}/{protocol_names.GET_SCOPED_FUNCTION}",
                "piper_link_instance_id": INSTANCE_ID,
            },
        )
        scoped = await agent.post(
            f"{url}/{protocol_names.GET_SCOPED_FUNCTION}",
            json={"credentialIds": [credential_id]},
            headers={"Authorization": f"Bearer {scoped_token.json()['access_token']}"},
        )
    assert scoped.status_code == 200, scoped.text
    assert scoped.json()["granted_credential_ids"] == [credential_id]


def peak_memory(pid: int) -> int:
    """The process's peak resident set size (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture
def local_serve(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """`piper-mcp local serve` over Ada's vault in its own process: (pid, protocol URL)."""
    home = tmp_path / "vault"
    seeded_vault(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "piper_mcp", "local", "serve", *SERVE_ON_FREE_PORTS],
        env={**os.environ, "PIPER_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    started = json.loads(process.stdout.readline())
    yield process.pid, started["url"]
    process.terminate()
    process.wait(timeout=20)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
async def test_a_flood_of_wrong_secrets_leaves_memory_flat(local_serve: tuple[int, str]) -> None:
    pid, url = local_serve
    with httpx.Client() as agent:
        # One check done first, so the baseline includes what a single hash costs.
        assert ask_token(agent, url, V1_AGENT_ID, AGENT_SECRET).status_code == 200
    before = peak_memory(pid)
    await flood(url)
    grown = peak_memory(pid) - before
    assert grown < ALLOWED_GROWTH, f"peak memory grew {grown / MiB:.0f} MiB under the flood"
