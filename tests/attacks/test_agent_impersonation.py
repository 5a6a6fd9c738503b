"""Issue 9.1: a local process that only knows an agent's id cannot act as that agent.

The attacker has a shell as the same user: it can read Piper Link's answer and
reach every loopback port. Protocol v2 bodies name an agent and an instance
id and prove nothing, so `local serve` serves them only for agents the
operator made secretless, and `serve --local` has no port for them at all.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.vault import Vault, VaultError
from piper_mcp.piper import AsyncPiperClient, PiperAuthError
from tests.cli.conftest import Cli, Serving, cli, cli_env, piper_home, serve_local  # noqa: F401
from tests.conftest import AGENT_SECRET, OPENAI_SECRET, USER_ID, V1_AGENT_ID
from tests.processes import initialize, serve_local_over_stdio

pytestmark = pytest.mark.anyio

VALUE = 'sk-impersonation-canary-"quoted"-\\-é'
RESOLVE = "/piper-resolve-variable-mapping"
SCOPED = "/getscopedgcpcredentials"
EXCHANGE = "/piper-exchange-sts-for-secret"


def as_the_attacker(base: str, link_url: str, agent: str, credential_id: str) -> list[int]:
    """Ask the Link for the user, then every v2 function as `agent`: the HTTP statuses."""
    instance = httpx.get(link_url, timeout=5).json()["instanceId"]
    who = {"agentClientId": agent, "instanceId": instance}
    answers = [
        httpx.post(f"{base}{RESOLVE}", json={**who, "variableName": "openai_api_key"}),
        httpx.post(f"{base}{SCOPED}", json={**who, "credentialIds": [credential_id]}),
        httpx.post(f"{base}{EXCHANGE}", json={**who, "piperCredentialId": credential_id}),
    ]
    for answer in answers:
        assert VALUE not in answer.text
    return [answer.status_code for answer in answers]


@pytest.fixture
def research_agent(cli: Cli) -> tuple[str, str]:  # noqa: F811
    """An agent registered the default way (with a client secret), granted one secret."""
    cli("local", "init")
    secret = cli(
        "local", "agent", "add", "research", "--variable", "openai_api_key", "--json"
    ).json()["client_secret"]
    cli("local", "secret", "set", "My OpenAI", stdin=VALUE)
    cli("local", "grant", "research", "openai_api_key", "My OpenAI")
    credential = cli("local", "secret", "list", "--json").json()[0]["id"]
    return secret, credential


def test_local_serve_refuses_v2_for_an_agent_with_a_client_secret(
    cli: Cli,  # noqa: F811
    research_agent: tuple[str, str],
    serve_local: Callable[..., Serving],  # noqa: F811
) -> None:
    _, credential = research_agent
    serving = serve_local()
    statuses = as_the_attacker(
        serving.info["url"], serving.info["link_url"], "research", credential
    )
    assert statuses == [401, 401, 401]
    # The same refusal for an agent that does not exist: ids cannot be probed this way.
    assert as_the_attacker(serving.info["url"], serving.info["link_url"], "nobody", credential) == [
        401,
        401,
        401,
    ]
    # The default agent of every vault is for `serve --local` only, never for a port.
    assert as_the_attacker(
        serving.info["url"], serving.info["link_url"], "local-agent", credential
    ) == [401, 401, 401]


async def test_the_agent_works_over_v1_and_its_secret_keeps_it_off_v2_for_good(
    cli: Cli,  # noqa: F811
    cli_env: dict[str, str],  # noqa: F811
    research_agent: tuple[str, str],
    serve_local: Callable[..., Serving],  # noqa: F811
) -> None:
    secret, credential = research_agent
    serving = serve_local()
    env = serving.info["env"]
    settings = {
        "token_url": env["PIPER_TOKEN_URL"],
        "resolve_mapping_url": env["PIPER_RESOLVE_MAPPING_URL"],
        "get_scoped_url": env["PIPER_GET_SCOPED_URL"],
        "exchange_secret_url": env["PIPER_EXCHANGE_SECRET_URL"],
        "piper_link_service_url": env["PIPER_LINK_URL"],
    }
    async with AsyncPiperClient("research", secret, **settings) as v1:
        assert (await v1.get_secret("openai_api_key", fetch_raw_secret=True)).value == VALUE
    async with AsyncPiperClient("research", **settings) as v2:
        with pytest.raises(PiperAuthError) as refused:
            await v2.get_secret("openai_api_key")
        assert "local agent secretless AGENT on`" in str(refused.value)  # as the backend was run

    # The operator cannot open v2 for an agent with a client secret...
    turned_on = cli("local", "agent", "secretless", "research", "on")
    assert turned_on.code == 1 and "Traceback" not in turned_on.err
    assert "has a client secret, so it proves itself over protocol v1 only" in turned_on.err
    assert "local agent add ID --secretless" in turned_on.err
    base, link = serving.info["url"], serving.info["link_url"]
    assert as_the_attacker(base, link, "research", credential) == [401, 401, 401]
    # ... nor register one with both, and a vault that says both (an older piper-mcp let
    # it) still serves the agent over v1 only.
    vault = Vault.open(Path(cli_env["PIPER_HOME"]))
    with pytest.raises(VaultError, match="cannot have a client secret and be secretless"):
        vault.add_agent(
            "r2", secret, owner_user_id=vault.local_user_id, variables=["x"], secretless=True
        )
    with vault._write() as db:
        db.execute("UPDATE agents SET secretless = 1 WHERE client_id = 'research'")
    vault.close()
    assert as_the_attacker(base, link, "research", credential) == [401, 401, 401]
    assert "research  (client secret: protocol v1)" in cli("local", "agent", "list").out


async def test_a_secretless_agent_is_served_over_v2_only_while_the_operator_allows_it(
    cli: Cli,  # noqa: F811
    research_agent: tuple[str, str],
    serve_local: Callable[..., Serving],  # noqa: F811
) -> None:
    _, credential = research_agent
    cli("local", "agent", "add", "helper", "--variable", "openai_api_key", "--secretless")
    cli("local", "grant", "helper", "openai_api_key", "My OpenAI")
    serving = serve_local()
    base, link = serving.info["url"], serving.info["link_url"]
    assert as_the_attacker(base, link, "helper", credential) == [200, 200, 200]
    off = cli("local", "agent", "secretless", "helper", "off")
    assert off.code == 0 and "only `" in off.out and "serve --local --agent helper" in off.out
    assert as_the_attacker(base, link, "helper", credential) == [401, 401, 401]
    assert cli("local", "agent", "secretless", "helper", "on").code == 0
    assert as_the_attacker(base, link, "helper", credential) == [200, 200, 200]


def test_a_secretless_agent_is_said_so_when_listed(cli: Cli) -> None:  # noqa: F811
    cli("local", "init")
    added = cli("local", "agent", "add", "bot", "--variable", "x", "--secretless")
    assert added.code == 0 and "any process that can reach" in added.out
    assert (
        "client_secret"
        not in cli(
            "local", "agent", "add", "bot2", "--variable", "x", "--secretless", "--json"
        ).json()
    )
    listing = cli("local", "agent", "list").out
    assert "bot  (secretless: protocol v2)" in listing
    assert "local-agent  (serve --local only)" in listing
    both = cli("local", "agent", "add", "b3", "--variable", "x", "--secretless", "--secret-stdin")
    assert both.code == 2 and "not allowed with argument" in both.err


def test_an_instance_id_selects_the_user_but_never_authenticates(
    piper: LocalBackend,
) -> None:
    """Knowing a real instance id (Link hands it to anyone local) is not enough for v1 either."""
    base = piper.base_url
    for forged in ("Bearer piper-agent-made-up", "Basic cmVzZWFyY2g6eA=="):
        answer = httpx.post(
            f"{base}{RESOLVE}",
            json={"variableName": "openai_api_key"},
            headers={"authorization": forged},
        )
        assert answer.status_code in (400, 401), forged
    # The token endpoint wants the secret; the instance id alone mints nothing.
    refused = httpx.post(
        f"{base}/piper-token-endpoint",
        data={
            "grant_type": "client_credentials",
            "client_id": V1_AGENT_ID,
            "client_secret": "x" * 40,
            "audience": f"{base}{RESOLVE}",
            "piper_link_instance_id": "instance-ada-laptop",
        },
    )
    assert refused.status_code == 401


def test_a_re_added_agent_does_not_inherit_the_old_agents_tokens(
    piper: LocalBackend,
) -> None:
    """Removing an agent kills its agent tokens, even if someone registers the id again."""
    base = piper.base_url
    token = httpx.post(
        f"{base}/piper-token-endpoint",
        data={
            "grant_type": "client_credentials",
            "client_id": V1_AGENT_ID,
            "client_secret": AGENT_SECRET,
            "audience": f"{base}{RESOLVE}",
        },
    ).json()["access_token"]
    ask = {
        "json": {"variableName": "openai_api_key"},
        "headers": {"authorization": f"Bearer {token}"},
    }
    owner = piper.vault.agent(V1_AGENT_ID)
    assert owner is not None
    piper.vault.remove_agent(V1_AGENT_ID)
    piper.vault.add_agent(
        V1_AGENT_ID,
        "a-new-owner-chose-this-secret-0123456789",
        owner_user_id=USER_ID,
        variables=["openai_api_key"],
    )
    piper.vault.grant(USER_ID, V1_AGENT_ID, "openai_api_key", OPENAI_SECRET)
    assert httpx.post(f"{base}{RESOLVE}", **ask).status_code == 401  # type: ignore[arg-type]


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def rpc(process: subprocess.Popen[str], message: dict[str, object]) -> dict[str, object]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()
    while True:
        answer: dict[str, object] = json.loads(process.stdout.readline())
        if answer.get("id") == message["id"]:
            return answer


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="reads Linux /proc")
def test_serve_local_has_no_port_for_the_piper_functions_or_link(
    piper_home: Path,  # noqa: F811
    cli_env: dict[str, str],  # noqa: F811
) -> None:
    vault, _ = Vault.init(piper_home)
    vault.put_secret("My OpenAI", VALUE, owner_user_id=vault.local_user_id)
    vault.grant(vault.local_user_id, "local-agent", "openai_api_key", "My OpenAI")
    instance = vault.local_instance_id
    vault.close()
    process = serve_local_over_stdio(cli_env, stderr=subprocess.DEVNULL)
    try:
        rpc(process, initialize("attack-test", 1))
        called = rpc(
            process,
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "get_secret", "arguments": {"variable": "openai_api_key"}},
            },
        )
        credential = called["result"]["structuredContent"]  # type: ignore[index]

        ports = listening_ports(process.pid)
        assert len(ports) == 1, ports  # the Secret Manager read route, nothing else
        (port,) = ports
        base = f"http://127.0.0.1:{port}"
        who = {"agentClientId": "local-agent", "instanceId": instance}
        for path, body in (
            (RESOLVE, {**who, "variableName": "openai_api_key"}),
            (SCOPED, {**who, "credentialIds": [credential["credential_id"]]}),
            (EXCHANGE, {**who, "piperCredentialId": credential["credential_id"]}),
        ):
            answer = httpx.post(f"{base}{path}", json=body)
            assert answer.status_code == 404 and VALUE not in answer.text
        assert httpx.get(f"{base}/piper-link-context").status_code == 404

        # What the handed-out token is for still works on that port, with the token only.
        read = f"{base}/v1/{credential['secret_version']}:access"
        assert httpx.get(read).status_code == 401
        data = httpx.get(read, headers={"authorization": f"Bearer {credential['token']}"})
        assert base64.b64decode(data.json()["payload"]["data"]).decode() == VALUE
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=20)
