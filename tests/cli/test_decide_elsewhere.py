"""A grant request decided outside the page it links to: `piper-mcp local approve`/`deny`.

`serve --local` keeps each waiting request in the vault, so another process (the
command line here, the dashboard in tests/browser) can decide it, and the original
tool call is answered as soon as the server sees the decision: over stdio, in both
protocol eras, with the SDK's client declaring URL-mode elicitation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client, StdioServerParameters
from mcp.types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult

from piper_mcp.local.vault import StoredGrantRequest, Vault
from tests.cli.conftest import STORED, UNGRANTED

pytestmark = pytest.mark.anyio

VARIABLE, SECRET = UNGRANTED, STORED


async def piper_mcp(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    done = await anyio.run_process([sys.executable, "-m", "piper_mcp", *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def user_at_the_command_line(env: dict[str, str], decide: list[str], seen: list[Any]) -> Any:
    """A user who sees the link in the host, and decides with `piper-mcp local DECIDE...`."""

    async def answer(context: object, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        code, listed, _ = await piper_mcp(env, "local", "requests", "--json")
        assert code == 0
        [waiting] = json.loads(listed)
        seen.append(waiting)
        code, _, stderr = await piper_mcp(env, "local", *decide[:1], waiting["id"], *decide[1:])
        assert code == 0, stderr
        return ElicitResult(action="accept")

    return answer


def server(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "piper_mcp", "serve", "--local"], env=env
    )


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_approved_on_the_command_line_the_call_is_answered(
    ungranted_home: Path, cli_env: dict[str, str], era: str
) -> None:
    seen: list[Any] = []
    answer = user_at_the_command_line(cli_env, ["approve", SECRET], seen)
    async with Client(server(cli_env), mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error is False, result.content
    assert [(w["agent"], w["variable"]) for w in seen] == [("local-agent", VARIABLE)]
    assert seen[0]["client"].startswith("mcp")
    vault = Vault.open(ungranted_home)
    [grant] = vault.grants(client_id="local-agent")
    assert (grant.variable, grant.secret_name) == (VARIABLE, SECRET)
    assert vault.grant_requests() == []  # decided: no longer waiting
    assert vault.grant_request(seen[0]["id"]).outcome == "granted"  # type: ignore[union-attr]
    assert [(e.action, e.outcome) for e in vault.audit(200) if e.action == "command_line"] == [
        ("command_line", "granted")
    ]


@pytest.mark.parametrize("era", ["legacy", "auto"])
async def test_denied_on_the_command_line_the_call_says_so(
    ungranted_home: Path, cli_env: dict[str, str], era: str
) -> None:
    seen: list[Any] = []
    answer = user_at_the_command_line(cli_env, ["deny"], seen)
    async with Client(server(cli_env), mode=era, elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
    assert result.is_error is True
    said = result.content[0].text  # type: ignore[union-attr]
    assert said.endswith(f"No credential for {VARIABLE!r}: the user denied the grant.")
    assert "local grant" not in said  # no advice to ask again
    assert Vault.open(ungranted_home).grants(client_id="local-agent") == []


@pytest.fixture
def with_another_agent(ungranted_home: Path) -> Path:
    """Also `other-agent`, which declares `x`: the agent of the requests made up below."""
    vault = Vault.open(ungranted_home)
    vault.add_agent("other-agent", None, owner_user_id=vault.local_user_id, variables=["x"])
    vault.close()
    return ungranted_home


def waiting(vault: Vault, request_id: str, *, expires_in: float = 600.0) -> None:
    import time

    now = time.time()
    vault.open_grant_request(
        StoredGrantRequest(
            request_id, "other-agent", "x", "Some Host 1.0", now, now + expires_in, None, None
        )
    )


async def test_requests_lists_only_the_waiting_ones(
    with_another_agent: Path, cli_env: dict[str, str]
) -> None:
    code, said, _ = await piper_mcp(cli_env, "local", "requests")
    assert (code, said.splitlines()[0]) == (0, "No grant requests are waiting.")
    vault = Vault.open(with_another_agent)
    waiting(vault, "req-waiting")
    waiting(vault, "req-expired", expires_in=-1)
    waiting(vault, "req-denied")
    vault.decide_grant_request("req-denied", "denied")
    code, said, _ = await piper_mcp(cli_env, "local", "requests")
    assert code == 0
    assert said.startswith("req-waiting  other-agent asks for 'x' (Some Host 1.0), expires in ")
    assert "req-expired" not in said and "req-denied" not in said


async def test_deciding_what_is_not_waiting_is_one_line_that_says_why(
    with_another_agent: Path, cli_env: dict[str, str]
) -> None:
    vault = Vault.open(with_another_agent)
    waiting(vault, "req-expired", expires_in=-1)
    waiting(vault, "req-denied")
    vault.decide_grant_request("req-denied", "denied")
    cases = {
        ("approve", "nope", SECRET): "is not waiting (it expired, or there is none)",
        ("approve", "req-expired", SECRET): "is not waiting (it expired, or there is none)",
        ("deny", "req-denied"): "was already denied",
    }
    for args, why in cases.items():
        code, said, stderr = await piper_mcp(cli_env, "local", *args)
        assert code == 1 and said == ""
        assert stderr.count("\n") == 1 and why in stderr and "local requests" in stderr
    assert vault.grants(client_id="other-agent") == []


async def test_approving_with_a_secret_that_does_not_exist_grants_nothing(
    with_another_agent: Path, cli_env: dict[str, str]
) -> None:
    vault = Vault.open(with_another_agent)
    waiting(vault, "req-waiting")
    code, _, stderr = await piper_mcp(cli_env, "local", "approve", "req-waiting", "No such")
    assert code == 1 and "No such" in stderr and "Traceback" not in stderr
    assert [r.request_id for r in vault.grant_requests()] == ["req-waiting"]  # still waiting
    assert vault.grants(client_id="other-agent") == []


async def test_a_declined_link_takes_its_request_back(
    ungranted_home: Path, cli_env: dict[str, str]
) -> None:
    """The user said no in the host: nothing is left waiting in the dashboard or the CLI."""

    async def decline(context: object, params: ElicitRequestParams) -> ElicitResult:
        code, listed, _ = await piper_mcp(cli_env, "local", "requests", "--json")
        assert code == 0 and len(json.loads(listed)) == 1  # it waited while asked
        return ElicitResult(action="decline")

    async with Client(server(cli_env), elicitation_callback=decline) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": VARIABLE})
        assert result.is_error is True
        code, listed, _ = await piper_mcp(cli_env, "local", "requests")
    assert (code, listed.splitlines()[0]) == (0, "No grant requests are waiting.")


async def test_a_models_spelling_of_the_variable_is_asked_for_as_declared(
    ungranted_home: Path, cli_env: dict[str, str]
) -> None:
    """A zero-width space matches the declared name; the request names the declared one,
    so the user can approve it (a control character could never be granted)."""
    seen: list[Any] = []
    answer = user_at_the_command_line(cli_env, ["approve", SECRET], seen)
    async with Client(server(cli_env), elicitation_callback=answer) as client:  # type: ignore[arg-type]
        result = await client.call_tool("get_secret", {"variable": "\u200b" + VARIABLE})
    assert result.is_error is False, result.content
    assert [w["variable"] for w in seen] == [VARIABLE]


async def test_a_request_whose_server_was_killed_waits_no_more(
    ungranted_home: Path, cli_env: dict[str, str]
) -> None:
    """SIGKILL leaves no time to withdraw the request: the dashboard and the command line
    stop offering it at once (approving it would answer no call), not ten minutes later."""
    serving = await anyio.open_process(
        [sys.executable, "-m", "piper_mcp", "serve", "--local"],
        env=cli_env,
        stderr=subprocess.DEVNULL,
    )
    assert serving.stdin is not None and serving.stdout is not None
    answers = BufferedByteReceiveStream(serving.stdout)
    try:
        for message in (
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {"elicitation": {"url": {}}},
                    "clientInfo": {"name": "killed-host", "version": "1"},
                },
            },
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "get_secret", "arguments": {"variable": VARIABLE}},
            },
        ):
            await serving.stdin.send(json.dumps(message).encode() + b"\n")
        with anyio.fail_after(60):
            while (said := json.loads(await answers.receive_until(b"\n", 1 << 20))).get(
                "method"
            ) != "elicitation/create":
                pass
        assert said["params"]["mode"] == "url"
        code, listed, _ = await piper_mcp(cli_env, "local", "requests", "--json")
        [request] = json.loads(listed)  # it waits while its server does
    finally:
        serving.kill()
        await serving.wait()

    code, listed, _ = await piper_mcp(cli_env, "local", "requests")
    assert (code, listed.splitlines()[0]) == (0, "No grant requests are waiting.")
    code, _, stderr = await piper_mcp(cli_env, "local", "approve", request["id"], SECRET)
    assert code == 1 and stderr.count("\n") == 1
    assert "the server whose call raised it stopped" in stderr
    assert Vault.open(ungranted_home).grants(client_id="local-agent") == []
