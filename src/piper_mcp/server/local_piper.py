"""`serve --local`: the MCP server backed by a local Piper in this process.

Opens (or creates) the vault in PIPER_HOME, runs the local backend and its
Piper Link on free loopback ports, and configures the Piper client to act as
one of the vault's agents over protocol v2. Grants made with
`piper-mcp local ...` in another terminal apply on the next call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from piper_mcp.local.home import DEFAULT_AGENT, default_home
from piper_mcp.local.server import LocalBackend
from piper_mcp.local.vault import Vault, VaultError
from piper_mcp.piper import PiperSettings, load_settings

logger = logging.getLogger(__name__)


@dataclass
class LocalPiper:
    backend: LocalBackend
    settings: PiperSettings
    declared: Callable[[], list[str]]
    how_to_declare: str

    def stop(self) -> None:
        self.backend.stop()
        self.backend.vault.close()


def start_local_piper(agent_id: str) -> LocalPiper:
    home = default_home()
    vault, created = Vault.init(home)
    if created:
        print(
            f"piper-mcp: created a local Piper vault in {home} with the agent "
            f"{DEFAULT_AGENT!r}. Give it a secret:\n"
            "  printf %s 'the-value' | piper-mcp local secret set 'My OpenAI key'\n"
            f"  piper-mcp local grant {DEFAULT_AGENT} openai_api_key 'My OpenAI key'",
            file=sys.stderr,
        )
    if vault.agent(agent_id) is None:
        raise VaultError(
            f"there is no agent {agent_id!r} in {home}; add it with "
            f"`piper-mcp local agent add {agent_id} --variable NAME`"
        )
    backend = LocalBackend(vault, instance_id=vault.local_instance_id).start()
    urls = backend.client_settings()
    settings = load_settings(
        client_id=agent_id,
        client_secret=None,  # protocol v2: the local backend knows its agents
        client_secret_name=None,
        instance_id=None,
        token_url=urls["token_url"],
        resolve_mapping_url=urls["resolve_mapping_url"],
        get_scoped_url=urls["get_scoped_url"],
        exchange_secret_url=urls["exchange_secret_url"],
        secret_manager_endpoint=urls["secret_manager_endpoint"],
        project_id=urls["project_id"],
        link_url=backend.link_url,
    )
    logger.info("Local Piper for agent %r at %s", agent_id, backend.base_url)

    def declared() -> list[str]:
        agent = vault.agent(agent_id)
        return list(agent.variables) if agent else []

    return LocalPiper(
        backend,
        settings,
        declared,
        how_to_declare=f"Grant it in the local vault: `piper-mcp local grant {agent_id} "
        "VARIABLE SECRET` (see `piper-mcp local --help`).",
    )
