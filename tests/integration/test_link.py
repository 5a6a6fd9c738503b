"""Piper Link discovery: 1 s at most, found ids kept, failures retried, configured id wins."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient, PiperClient, PiperLinkNeededError
from tests.conftest import INSTANCE_ID
from tests.scripted import Scripted, ScriptedPiper, json_answer

pytestmark = pytest.mark.anyio

LINK = "/piper-link-context"


def client_for(piper: LocalBackend, link_url: str, **extra: object) -> AsyncPiperClient:
    settings = {**piper.client_settings(), "piper_link_service_url": link_url}
    return AsyncPiperClient("agent-research", enable_env_fallback=False, **settings, **extra)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Scripted(200, b"not json", "text/plain"), "answered without a valid instanceId"),
        (json_answer(200, "{}"), "answered without a valid instanceId"),
        (json_answer(200, '{"instanceId": ""}'), "answered without a valid instanceId"),
        (json_answer(200, '{"instanceId": 42}'), "answered without a valid instanceId"),
        (json_answer(500, '{"instanceId": "x"}'), "answered HTTP 500"),
        (Scripted(200, b'{"instanceId": "late"}', delay=3), "no answer within 1 s"),
    ],
)
async def test_a_broken_link_means_no_user_context(
    serve: Callable[[object], str], piper: LocalBackend, answer: Scripted, problem: str
) -> None:
    link = ScriptedPiper()
    link.script(LINK, answer)
    url = serve(link.asgi) + LINK
    async with client_for(piper, url) as client:
        probe = await client.link.probe()
        assert (probe.answered, probe.problem) == (False, problem)
        with pytest.raises(PiperLinkNeededError):
            await client.get_secret("OpenAI API Key")
    # Nothing reached Piper: a client that waited for the late answer (3 s) would have
    # found an instance id and asked Piper with it.
    assert sum(piper.app.calls.values()) == 0


async def test_link_down_is_reported_not_raised(piper: LocalBackend, unused_link_url: str) -> None:
    async with client_for(piper, unused_link_url) as client:
        probe = await client.link.probe()
    assert probe.instance_id is None
    assert probe.problem == "not reachable (ConnectError)"


async def test_a_found_id_is_kept_for_the_clients_life(
    serve: Callable[[object], str], piper: LocalBackend
) -> None:
    link = ScriptedPiper()
    link.script(LINK, json_answer(200, f'{{"instanceId": "{INSTANCE_ID}"}}'))
    url = serve(link.asgi) + LINK
    async with client_for(piper, url) as client:
        await client.get_secret("OpenAI API Key")
        link.script(LINK, json_answer(500, "{}"))  # Link goes away
        result = await client.get_secret("OpenAI API Key")
    assert result["piper_instance_id"] == INSTANCE_ID
    assert len(link.requests[LINK]) == 1


async def test_a_failure_is_not_kept_and_link_is_asked_again(
    serve: Callable[[object], str], piper: LocalBackend
) -> None:
    link = ScriptedPiper()
    link.script(
        LINK, json_answer(503, "{}"), json_answer(200, f'{{"instanceId": "{INSTANCE_ID}"}}')
    )
    url = serve(link.asgi) + LINK
    async with client_for(piper, url) as client:
        with pytest.raises(PiperLinkNeededError):
            await client.get_secret("OpenAI API Key")
        result = await client.get_secret("OpenAI API Key")
    assert result["source"] == "piper_sts"
    assert len(link.requests[LINK]) == 2


async def test_a_configured_instance_id_wins_and_link_is_never_asked(
    serve: Callable[[object], str], piper: LocalBackend
) -> None:
    link = ScriptedPiper()
    link.script(LINK, json_answer(200, '{"instanceId": "someone-else"}'))
    url = serve(link.asgi) + LINK
    async with client_for(piper, url, piper_link_instance_id=INSTANCE_ID) as client:
        result = await client.get_secret("OpenAI API Key")
    assert result["piper_instance_id"] == INSTANCE_ID
    assert link.requests[LINK] == []


def test_constructing_a_client_asks_nothing(serve: Callable[[object], str]) -> None:
    """The published SDK stalls up to 1 s in its constructor; ours waits for the first call."""
    link = ScriptedPiper()
    link.script(LINK, json_answer(200, '{"instanceId": "x"}'))
    url = serve(link.asgi) + LINK
    with PiperClient("agent", piper_link_service_url=url):
        pass
    assert link.requests[LINK] == []


def test_the_local_link_answers_with_the_users_instance(piper: LocalBackend) -> None:
    assert piper.link_url is not None
    with PiperClient("agent", piper_link_service_url=piper.link_url) as client:
        assert client.discover_local_instance_id() == INSTANCE_ID
