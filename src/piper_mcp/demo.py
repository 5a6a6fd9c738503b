"""`piper-mcp demo`: the whole Piper flow on this machine, narrated.

Starts a local Piper (backend + Link) with a throwaway vault, then does what
an agent does with `PiperClient`: get an STS token for a granted variable,
read the secret with it, meet a missing grant, fall back to the environment.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import TextIO

from piper_mcp.invocation import command
from piper_mcp.local.server_thread import LocalBackend
from piper_mcp.local.vault import Vault
from piper_mcp.piper import PiperClient, PiperGrantNeededError

AGENT_ID = "demo-agent"
USER_ID = "demo-user"
INSTANCE_ID = "demo-laptop"
DEMO_VALUE = "sk-demo-" + "0" * 16


def _mask(value: str) -> str:
    return f"{value[:4]}…{value[-4:]} ({len(value)} characters)"


def demo_vault(home: Path, agent_secret: str) -> Vault:
    vault, _ = Vault.init(home)
    vault.add_instance(INSTANCE_ID, USER_ID)
    vault.add_agent(
        AGENT_ID,
        agent_secret,
        owner_user_id="demo-developer",
        variables=["openai_api_key", "slack_token"],
    )
    vault.put_secret("Demo OpenAI key", DEMO_VALUE, owner_user_id=USER_ID)
    vault.grant(USER_ID, AGENT_ID, "openai_api_key", "Demo OpenAI key")
    return vault


def run(out: TextIO) -> int:
    """Run the demo; 0 when every step behaved as Piper promises."""
    agent_secret = secrets.token_urlsafe(32)
    for name in [name for name in os.environ if name.startswith("PIPER_")]:
        del os.environ[name]  # the demo is self-contained: no cloud settings apply
    with (
        tempfile.TemporaryDirectory(prefix="piper-demo-") as home,
        LocalBackend(
            demo_vault(Path(home) / "vault", agent_secret), instance_id=INSTANCE_ID
        ) as piper,
    ):
        out.write(f"Local Piper at {piper.base_url}, Piper Link at {piper.link_url}\n")
        out.write(f"Agent {AGENT_ID!r}; user {USER_ID!r} granted it 'openai_api_key' only.\n\n")
        with PiperClient(AGENT_ID, agent_secret, **piper.client_settings()) as client:
            result = client.get_secret("openai_api_key")
            token = str(result["value"])
            out.write(
                "1. get_secret('openai_api_key')\n"
                f"   source={result['source']} token=…{token[-6:]} "
                f"expires_in={result['expires_in']}s credential={result['piper_credential_id']}\n"
            )
            value = client.read_secret_value(result)
            out.write(f"2. Secret Manager read with that STS token: {_mask(value)}\n")

            try:
                client.get_secret("slack_token", enable_env_fallback_for_this_call=False)
                out.write("3. slack_token was served without a grant: unexpected.\n")
                return 1
            except PiperGrantNeededError as error:
                grant = command("local", "grant", AGENT_ID, "slack_token", "SECRET")
                out.write(
                    "3. get_secret('slack_token'): no grant. The error's grant page, for the "
                    f"Piper cloud:\n   {error.grant_url}\n   In a local vault the user runs "
                    f"`{grant}`.\n"
                )

            os.environ["SLACK_TOKEN"] = "xoxb-demo-fallback"
            fallback = client.get_secret("slack_token")
            out.write(
                f"4. With SLACK_TOKEN set, the fallback answers: source={fallback['source']} "
                f"env_var_name={fallback['env_var_name']}\n"
            )
        ok = value == DEMO_VALUE and fallback["source"] == "environment_variable"
    if not ok:
        out.write("\nSomething went wrong.\n")
        return 1
    out.write(
        "\nThe Piper flow works on this machine. Next, serve your own vault to an MCP host: "
        f"`{command('serve', '--local')}` (README: Connecting a host).\n"
    )
    return 0
