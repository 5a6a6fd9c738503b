"""Deciding the grant requests a model's call raised, from outside the server that waits.

`piper-mcp serve --local` keeps each request in the vault while its tool call waits
(`GrantRequests.keep_in`). Approving one grants the variable to the agent and marks
the request granted; denying marks it denied; the waiting server notices either
within a poll and answers the original call. The dashboard and the `piper-mcp local
requests`/`approve`/`deny` commands both decide through here, and both are recorded
in the vault's audit table as `by` (the dashboard, the command line).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING, Any

from piper_mcp.invocation import command
from piper_mcp.local.errors import VaultError
from piper_mcp.printable import printable

if TYPE_CHECKING:
    from piper_mcp.local.vault import Grant, StoredGrantRequest, Vault


def waiting_request(vault: Vault, request_id: str) -> StoredGrantRequest:
    """The request `request_id`, if it still waits for the user; `VaultError` says why not."""
    request = vault.grant_request(request_id)
    if request is not None and request.waiting(time.time()):
        return request
    if request is not None and request.outcome:
        state = f"was already {request.outcome}"
    elif request is not None and not request.waited_for:
        state = (
            "is not waited for: the server whose call raised it stopped (grant the variable "
            f"with `{command('local', 'grant', request.client_id, request.variable, 'SECRET')}`"
            " if the agent should have it)"
        )
    else:
        state = "is not waiting (it expired, or there is none)"
    raise VaultError(
        f"the grant request {request_id!r} {state}; "
        f"`{command('local', 'requests')}` lists the waiting ones"
    )


def approvable(vault: Vault, agent_id: str, variable: str) -> None:
    """`VaultError` unless a grant of `variable` to `agent_id` could be made: checked before a
    page stores a new secret for it (a request names what a model asked for)."""
    from piper_mcp.local.vault import checked_declared_variable

    if vault.agent(agent_id) is None:
        raise VaultError(f"there is no agent {agent_id!r} any more")
    checked_declared_variable(variable)


def chosen_secret(vault: Vault, chosen: str, new_name: str, new_value: str) -> str:
    """The stored secret a page's form chose, or the new one it stores first: its name."""
    chosen, new_name = chosen.strip(), new_name.strip()
    if chosen and new_value:
        raise VaultError("choose a stored secret or type a new value, not both")
    if chosen:
        if vault.find_secret(chosen) is None:
            raise VaultError(f"there is no secret {chosen!r}")
        return chosen
    if not new_value:
        raise VaultError("type the new secret's value, or choose a stored secret")
    if vault.find_secret(new_name) is not None:
        raise VaultError(
            f"a secret named {new_name!r} is stored already; choose it, or give the new one "
            "another name"
        )
    vault.put_secret(new_name, new_value, owner_user_id=vault.local_user_id)
    return new_name


def approve(vault: Vault, request_id: str, secret_name: str, *, by: str) -> Grant:
    """Grant the request's variable to its agent as `secret_name`, and mark it granted."""
    request = waiting_request(vault, request_id)
    try:  # one transaction: a request denied meanwhile is not granted after all
        grant, _ = vault.grant(
            vault.local_user_id,
            request.client_id,
            request.variable,
            secret_name,
            deciding=request_id,
        )
    except VaultError:
        waiting_request(vault, request_id)  # decided elsewhere meanwhile: say how
        raise
    _record(vault, request, "granted", by, grant.secret_name)
    return grant


def deny(vault: Vault, request_id: str, *, by: str) -> StoredGrantRequest:
    """Mark the request denied: the waiting call answers that the user said no."""
    request = waiting_request(vault, request_id)
    if not vault.decide_grant_request(request_id, "denied"):
        waiting_request(vault, request_id)  # decided elsewhere meanwhile: say how
    _record(vault, request, "denied", by)
    return request


def _record(
    vault: Vault, request: StoredGrantRequest, outcome: str, by: str, secret: str = ""
) -> None:
    vault.record(
        by,
        outcome,
        client_id=request.client_id,
        user_id=vault.local_user_id,
        subject=f"{request.variable} {secret}".strip(),
    )


# --- the command line ---


def add_commands(group: Any, with_json: Any) -> None:
    """`local requests`, `local approve` and `local deny` on the `local` group."""
    from piper_mcp.cli import add_command

    with_json(
        add_command(
            group,
            "requests",
            "list the grant requests waiting for you",
            "List the grant requests that MCP clients' calls raised and that still wait: "
            "the request id, the agent, the variable and the client. Approve or deny each "
            "here, on its grant page, or in the dashboard.",
            [command("local", "requests")],
            requests,
        )
    )
    approve_parser = add_command(
        group,
        "approve",
        "grant what a waiting request asks for, with a stored secret",
        "Grant the request's variable to its agent as the stored SECRET; the call that "
        "raised the request then goes on by itself.",
        [command("local", "approve", "REQUEST", "'My OpenAI key'")],
        approve_command,
    )
    approve_parser.add_argument("request_id", metavar="REQUEST", help="the request's id")
    approve_parser.add_argument("secret", metavar="SECRET", help="a stored secret's name")
    deny_parser = add_command(
        group,
        "deny",
        "refuse what a waiting request asks for",
        "Deny the request: the call that raised it answers that the user said no.",
        [command("local", "deny", "REQUEST")],
        deny_command,
    )
    deny_parser.add_argument("request_id", metavar="REQUEST", help="the request's id")


def requests(args: argparse.Namespace) -> int:
    from piper_mcp.local.commands import open_vault

    now = time.time()
    waiting = open_vault().grant_requests()
    if args.json:
        data = [
            {
                "id": r.request_id,
                "agent": r.client_id,
                "variable": r.variable,
                "client": r.client,
                "waiting_seconds": round(now - r.opened_at),
                "expires_in_seconds": round(r.expires_at - now),
            }
            for r in waiting
        ]
        print(json.dumps(data, indent=2))
        return 0
    lines = [
        f"{r.request_id}  {r.client_id} asks for {r.variable!r} ({printable(r.client)}), "
        f"expires in {round(r.expires_at - now)} s"
        for r in waiting
    ]
    print("\n".join(lines) or "No grant requests are waiting.")
    return 0


def approve_command(args: argparse.Namespace) -> int:
    from piper_mcp.local.commands import open_vault

    grant = approve(open_vault(), args.request_id, args.secret, by="command_line")
    print(
        f"Granted {grant.secret_name!r} to {grant.client_id!r} as {grant.variable!r}; "
        "the waiting call goes on."
    )
    return 0


def deny_command(args: argparse.Namespace) -> int:
    from piper_mcp.local.commands import open_vault

    request = deny(open_vault(), args.request_id, by="command_line")
    print(f"Denied {request.client_id!r} the variable {request.variable!r}.")
    return 0
