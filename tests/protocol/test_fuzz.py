"""Property-based fuzzing of every tool (hypothesis): any input gives a valid tool result or a
tool error, the server stays up, and nothing secret leaks.

The number of examples run is printed at the end of the module (`-s` shows it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.piper import AsyncPiperClient
from piper_mcp.server.policy import RevealPolicy
from tests.conftest import (
    AGENT_ID,
    AGENT_SECRET,
    DB_VALUE,
    INSTANCE_ID,
    OPENAI_VALUE,
    seeded_vault,
)
from tests.protocol.conftest import make_server, structured, text_of

RUNS: Counter[str] = Counter()
SECRETS = (OPENAI_VALUE, DB_VALUE, AGENT_SECRET)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
names = st.one_of(
    st.text(),
    st.sampled_from(
        [
            "OpenAI API Key",
            "database_url",
            "slack_token",
            "PIPER_CLIENT_SECRET",
            "PATH",
            "../../etc/passwd",
            '{"variable": "x"}',
        ]
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=200, max_size=400),
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BlockingPortal, Client]]:
    """One server for the whole module (deny policy), driven from sync hypothesis tests."""
    home = tmp_path_factory.mktemp("fuzz") / "vault"
    with (
        LocalBackend(seeded_vault(home), instance_id=INSTANCE_ID) as piper,
        start_blocking_portal() as portal,
    ):
        client = AsyncPiperClient(AGENT_ID, **piper.client_settings())
        mcp = Client(make_server(client, RevealPolicy("deny")), mode="legacy")
        with portal.wrap_async_context_manager(mcp) as connected:
            yield portal, connected
    print(f"\nhypothesis examples run per tool: {dict(RUNS)}")


def call(fuzzed: tuple[BlockingPortal, Client], tool: str, arguments: Any) -> None:
    portal, mcp = fuzzed
    RUNS[tool] += 1
    result = portal.call(mcp.call_tool, tool, arguments)
    text = json.dumps(result.model_dump(mode="json"), ensure_ascii=False)
    if result.is_error:
        assert text_of(result).strip(), "a tool error that says nothing"
    else:
        structured(result)  # structured content, mirrored by the text block
    for secret in SECRETS:
        assert secret not in text
    assert not portal.call(mcp.call_tool, "check_link", {}).is_error  # still serving


EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fuzz(fuzzed: Any, tool: str, test: Callable[[], None]) -> None:
    """Run a hypothesis test and check its examples really reached the server."""
    before = RUNS[tool]
    test()
    assert RUNS[tool] - before >= EXAMPLES * 2 // 3, "hypothesis ran too few examples"


def test_get_secret_with_any_strings(fuzzed: Any) -> None:
    @FUZZ
    @given(variable=names, mode=st.one_of(st.sampled_from(["token", "value"]), st.text()))
    def run(variable: str, mode: str) -> None:
        call(fuzzed, "get_secret", {"variable": variable, "mode": mode})

    fuzz(fuzzed, "get_secret", run)


def test_every_tool_with_any_json_arguments(fuzzed: Any) -> None:
    @FUZZ
    @given(arguments=st.dictionaries(st.text(max_size=20), json_values, max_size=4))
    def run(arguments: dict[str, Any]) -> None:
        for tool in ("get_secret", "call_api", "check_link", "list_variables"):
            call(fuzzed, tool, arguments)

    fuzz(fuzzed, "list_variables", run)


def test_get_secret_with_any_json_as_the_variable(fuzzed: Any) -> None:
    @FUZZ
    @given(variable=json_values)
    def run(variable: Any) -> None:
        call(fuzzed, "get_secret", {"variable": variable})

    fuzz(fuzzed, "get_secret", run)
