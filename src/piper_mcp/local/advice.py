"""What to do about a local vault that lacks something: said once, for `serve --local` and `exec`.

Plain strings from `invocation.command`, so that the commands that say them load
nothing more (exec reads the vault itself and starts in a few milliseconds).
"""

from __future__ import annotations

from pathlib import Path

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.invocation import command
from piper_mcp.local.errors import did_you_mean


def how_to_grant(home: Path, agent_id: str, variable: str | None) -> str:
    """How `variable` (None: any variable) is granted to `agent_id` in the vault."""
    grant = command("local", "grant", agent_id, variable or "VARIABLE", "SECRET")
    what = repr(variable) if variable else "A variable"
    # Said alike to a model (which relays it) and to the person at a terminal (exec, check).
    return (
        f"{what} is granted to the agent {agent_id!r} in the local vault {home} with "
        f"`{grant}`, where SECRET names a stored secret "
        f"(`{command('local', 'secret', 'list')}`; store one with "
        f"`{command('local', 'secret', 'set', 'SECRET')}`)."
    )


def no_vault(home: Path, agent_id: str) -> str:
    """There is no vault in `home`: how to make one, with `agent_id` in it."""
    init = f"`{command('local', 'init')}`"
    if agent_id == DEFAULT_AGENT:
        return (
            f"there is no vault in {home}; create it with {init}, or start "
            f"`{command('serve', '--local')}`, which creates it"
        )
    return (
        f"there is no vault in {home}, so no agent {agent_id!r}; a new vault has "
        f"only {DEFAULT_AGENT!r}.{did_you_mean(agent_id, [DEFAULT_AGENT])} Create it "
        f"with {init}, then add agents with "
        f"`{command('local', 'agent', 'add', 'AGENT', '--variable', 'NAME')}`"
    )


def no_agent(home: Path, agent_id: str, agents: list[str]) -> str:
    """The vault has no `agent_id`: the agents there are instead (and the likely one meant)."""
    said = f"there is no agent {agent_id!r} in {home}; agents: {', '.join(agents) or 'none'}."
    meant = did_you_mean(agent_id, agents)
    if meant:
        return said + meant
    add = command("local", "agent", "add", "AGENT", "--variable", "NAME")
    return f"{said} Choose one with --agent, or add one with `{add}`"
