"""`piper-mcp local serve`: the protocol from a vault on disk, shared with the CLI."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from piper_mcp.piper import AsyncPiperClient, PiperGrantNeededError
from tests.cli.conftest import Cli, Serving

VALUE = "sk-canary-serve-value-31b9"

pytestmark = pytest.mark.anyio


@pytest.fixture
def filled(cli: Cli) -> str:
    """A vault with the research agent granted one secret; the agent's client secret."""
    cli("local", "init")
    secret: str = cli(
        "local", "agent", "add", "research", "--variable", "openai_api_key", "--json"
    ).json()["client_secret"]
    cli("local", "secret", "set", "My OpenAI", stdin=VALUE)
    cli("local", "grant", "research", "openai_api_key", "My OpenAI")
    return secret


def secretless_scout(cli: Cli) -> str:
    """A second agent, secretless (protocol v2 proves nothing: the operator opts in)."""
    assert cli("local", "agent", "add", "scout", "--variable", "openai_api_key", "--secretless")
    assert cli("local", "grant", "scout", "openai_api_key", "My OpenAI").code == 0
    return "scout"


def client_for(serving: Serving, secret: str | None, agent: str = "research") -> AsyncPiperClient:
    env = serving.info["env"]
    return AsyncPiperClient(
        agent,
        secret,
        token_url=env["PIPER_TOKEN_URL"],
        resolve_mapping_url=env["PIPER_RESOLVE_MAPPING_URL"],
        get_scoped_url=env["PIPER_GET_SCOPED_URL"],
        exchange_secret_url=env["PIPER_EXCHANGE_SECRET_URL"],
        secret_manager_endpoint=env["PIPER_SECRET_MANAGER_ENDPOINT"],
        piper_link_service_url=env["PIPER_LINK_URL"],
        enable_env_fallback=False,
    )


@pytest.mark.parametrize("protocol_secret", [True, False], ids=["v1", "v2"])
async def test_serve_answers_from_the_vault_and_revocation_applies_to_the_next_call(
    cli: Cli, filled: str, serve_local: Callable[..., Serving], protocol_secret: bool
) -> None:
    agent = "research" if protocol_secret else secretless_scout(cli)
    serving = serve_local()
    async with client_for(serving, filled if protocol_secret else None, agent) as client:
        result = await client.get_secret("openai_api_key")
        assert await client.read_secret_value(result) == VALUE
        raw = await client.get_secret("openai_api_key", fetch_raw_secret=True)
        assert raw["value"] == VALUE
        assert cli("local", "revoke", agent, "openai_api_key").code == 0
        with pytest.raises(PiperGrantNeededError):
            await client.get_secret("openai_api_key")
        cli("local", "grant", agent, "openai_api_key", "My OpenAI")
        assert (await client.get_secret("openai_api_key"))["source"] == "piper_sts"
        assert cli("local", "secret", "remove", "My OpenAI").code == 0
        with pytest.raises(PiperGrantNeededError):
            await client.get_secret("openai_api_key")


async def test_the_audit_trail_says_who_asked_for_what_and_never_a_value(
    cli: Cli, filled: str, serve_local: Callable[..., Serving]
) -> None:
    serving = serve_local()
    async with client_for(serving, filled) as client:
        await client.get_secret("openai_api_key", fetch_raw_secret=True)
        with pytest.raises(PiperGrantNeededError):
            await client.get_secret("not granted")
    # Rows are written behind the answers; stopping writes the last of them.
    assert serving.stop() == (0, "Stopped.\n")
    entries = cli("local", "audit", "--json").json()
    assert [(e["agent"], e["action"], e["outcome"]) for e in entries] == [
        (None, "command_line_secret", "stored"),  # the fixture's own changes, then the calls
        ("research", "command_line", "granted"),
        # Protocol v1: an agent token for each function, proven by the client secret.
        ("research", "piper-token-endpoint", "ok"),
        ("research", "piper-resolve-variable-mapping", "ok"),
        ("research", "piper-token-endpoint", "ok"),
        ("research", "getscopedgcpcredentials", "ok"),
        ("research", "piper-token-endpoint", "ok"),
        ("research", "piper-exchange-sts-for-secret", "ok"),
        ("research", "piper-resolve-variable-mapping", "mapping_not_found"),
    ]
    assert [e["subject"] for e in entries[:2]] == ["My OpenAI", "openai_api_key My OpenAI"]
    assert entries[3]["subject"] == "openai_api_key"
    assert len(cli("local", "audit", "--limit", "2", "--json").json()) == 2
    text = cli("local", "audit").out
    assert VALUE not in text and filled not in text
    assert "mapping_not_found" in text


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_a_signal(
    cli: Cli, serve_local: Callable[..., Serving], signum: int
) -> None:
    cli("local", "init")
    code, stderr = serve_local().stop(signum)
    assert code == 0
    assert stderr.strip() == "Stopped."


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--host", "0.0.0.0"), "needs --tls-cert/--tls-key"),
        (("--tls-cert", "missing.pem"), "give both --tls-cert and --tls-key"),
        (("--tls-cert", "a.pem", "--tls-key", "b.pem"), "does not exist"),
    ],
)
def test_serve_refuses_unsafe_or_broken_tls_settings(
    cli: Cli, args: tuple[str, ...], says: str
) -> None:
    cli("local", "init")
    done = cli("local", "serve", "--port", "0", "--link-port", "0", *args)
    assert done.code == 1
    assert says in done.err
