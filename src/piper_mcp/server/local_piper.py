"""`serve --local`: the MCP server backed by a local Piper in this process.

Opens (or creates) the vault in PIPER_HOME and configures the Piper client to
act as one of the vault's agents over protocol v2, answered in-process: the
Piper functions and Link have no port another process could use. Only the
Secret Manager read route (for the STS tokens handed out) listens on loopback.
Grants made with `piper-mcp local ...` in another terminal apply on the next call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from piper_mcp.home import DEFAULT_AGENT, default_home
from piper_mcp.local.embedded import EmbeddedPiper
from piper_mcp.local.vault import Vault, VaultError
from piper_mcp.piper import PiperSettings, load_settings

logger = logging.getLogger(__name__)


@dataclass
class LocalPiper:
    backend: EmbeddedPiper
    settings: PiperSettings
    http_client: httpx.AsyncClient
    declared: Callable[[], list[str]]
    how_to_declare: str

    def stop(self) -> None:
        self.backend.stop()
        self.backend.vault.close()


def start_local_piper(agent_id: str) -> LocalPiper:
    home = default_home()
    vault, created = Vault.init(home)
    vault.check()  # a damaged vault is one line at start, not a failure on every call
    if created:
        print(
            f"piper-mcp: created a local Piper vault in {home} with the agent "
            f"{DEFAULT_AGENT!r}. Give it a secret:\n"
            "  piper-mcp local secret set 'My OpenAI key'   (asks for the value, hidden)\n"
            f"  piper-mcp local grant {DEFAULT_AGENT} openai_api_key 'My OpenAI key'",
            file=sys.stderr,
        )
    if vault.agent(agent_id) is None:
        raise VaultError(
            f"there is no agent {agent_id!r} in {home}; add it with "
            f"`piper-mcp local agent add {agent_id} --variable NAME`"
        )
    backend = EmbeddedPiper(vault, agent_id).start()
    settings = load_settings(
        client_id=agent_id,
        client_secret=None,  # protocol v2, in-process: no other process can send it
        client_secret_name=None,
        instance_id=None,
        **backend.client_settings(),
    )
    logger.info(
        "Local Piper for agent %r in-process; Secret Manager reads at %s",
        agent_id,
        backend.secret_manager_url,
    )

    def declared() -> list[str]:
        agent = vault.agent(agent_id)
        return list(agent.variables) if agent else []

    return LocalPiper(
        backend,
        settings,
        backend.http_client(),
        declared,
        how_to_declare=f"Grant it in the local vault: `piper-mcp local grant {agent_id} "
        "VARIABLE SECRET` (see `piper-mcp local --help`).",
    )
