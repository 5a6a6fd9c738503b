"""`PiperClient`, the blocking twin, works wherever a script may call it."""

from __future__ import annotations

import threading

import anyio
import pytest

from piper_mcp.piper import PiperClient, PiperConfigError
from piper_mcp.piper.settings import env_var_for_keyword


def test_it_works_inside_a_running_event_loop(client_kwargs: dict[str, object]) -> None:
    async def notebook_cell() -> str:
        with PiperClient(**client_kwargs) as client:
            return str(client.get_secret("database_url")["source"])

    assert anyio.run(notebook_cell) == "piper_sts"


def test_it_can_be_shared_by_threads(client_kwargs: dict[str, object]) -> None:
    sources: list[str] = []
    with PiperClient(**client_kwargs) as client:
        threads = [
            threading.Thread(
                target=lambda: sources.append(client.get_secret("database_url")["source"])
            )
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sources == ["piper_sts"] * 8


def test_closing_stops_its_thread(client_kwargs: dict[str, object]) -> None:
    # Compared as sets: other tests' threads may end meanwhile; none may be added.
    before = set(threading.enumerate())
    client = PiperClient(**client_kwargs)
    assert set(threading.enumerate()) - before  # it has a thread of its own
    client.close()
    assert not set(threading.enumerate()) - before


def test_a_bad_configuration_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    with pytest.raises(PiperConfigError, match="PIPER_TOKEN_URL"):
        PiperClient("agent", token_url="http://piper.example/token")
    assert not set(threading.enumerate()) - before


def test_from_settings_reads_the_environment(
    client_kwargs: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in client_kwargs.items():
        monkeypatch.setenv(env_var_for_keyword(key), str(value))
    with PiperClient.from_settings() as client:
        assert client.settings.client_id == client_kwargs["client_id"]
        assert client.settings.resolve_mapping_url == client_kwargs["resolve_mapping_url"]
        secret = client.settings.client_secret
        assert (secret and secret.get_secret_value()) == client_kwargs.get("client_secret")
        assert client.get_secret("database_url")["source"] == "piper_sts"


def test_unset_arguments_come_from_the_environment(
    client_kwargs: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPER_ENV_PREFIX", "FROM_ENV_")
    with PiperClient(**client_kwargs) as client:
        assert client.env_variable_prefix == "FROM_ENV_"
    with PiperClient(**client_kwargs, env_variable_prefix="GIVEN_") as client:
        assert client.env_variable_prefix == "GIVEN_"
