"""What each of the dashboard's forms does to the vault, and the one line it then shows.

Each is the same change as a `piper-mcp local` command, recorded in the vault's audit
table as made in the dashboard (`dashboard`, `dashboard_secret`). An action takes the
form's fields and returns what was done; a `VaultError` says why nothing was. A
secret's value arrives once, in a form field, is stored, and is never shown, logged,
echoed back or put in a notice; errors name secrets, never values.
"""

from __future__ import annotations

from collections.abc import Callable

from piper_mcp.local import decisions
from piper_mcp.local.errors import VaultError
from piper_mcp.local.vault import Vault, checked_declared_variable
from piper_mcp.printable import shown

Action = Callable[[dict[str, str]], str]


class FormActions:
    """The actions on `vault`, each answering one form of the dashboard's pages."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def routes(self) -> dict[str, tuple[str, Action]]:
        """Each form's route: the page it goes back to, and its action."""
        return {
            "/secrets/set": ("/secrets", self.set_secret),
            "/secrets/remove": ("/secrets", self.remove_secret),
            "/grants/grant": ("/grants", self.grant),
            "/grants/revoke": ("/grants", self.revoke),
            "/requests/approve": ("/grants", self.approve),
            "/requests/deny": ("/grants", self.deny),
        }

    def set_secret(self, fields: dict[str, str]) -> str:
        name, value = fields.get("name", "").strip(), fields.get("value", "")
        if not value:
            raise VaultError("type the secret's value")
        replaced = self.vault.find_secret(name) is not None
        secret_id = self.vault.put_secret(name, value, owner_user_id=self.vault.local_user_id)
        self._record("replaced" if replaced else "stored", subject=name, action="dashboard_secret")
        return f"{'Replaced the value of' if replaced else 'Stored'} {name!r} ({secret_id})."

    def remove_secret(self, fields: dict[str, str]) -> str:
        name = fields.get("name", "")
        self.vault.remove_secret(name)
        self._record("removed", subject=name, action="dashboard_secret")
        return f"Removed {name!r} and every grant of it."

    def grant(self, fields: dict[str, str]) -> str:
        from piper_mcp.broker.rules import RuleError, rule_from_use

        use, inject = fields.get("use", "").strip(), fields.get("inject", "").strip()
        if inject and not use:
            raise VaultError("'where the credential goes' needs the hosts it goes to")
        try:
            rule = rule_from_use(use, inject or None) if use else None
        except RuleError as error:
            raise VaultError(str(error).rstrip(".")) from None
        agent, variable = fields.get("agent", ""), fields.get("variable", "").strip()
        if self.vault.agent(agent) is None:
            raise VaultError(f"there is no agent {agent!r}")
        checked_declared_variable(variable)  # before a new secret is stored for it
        secret = decisions.chosen_secret(
            self.vault,
            fields.get("secret", ""),
            fields.get("new_name", ""),
            fields.get("new_value", ""),
        )
        made, _ = self.vault.grant(
            self.vault.local_user_id,
            agent,
            variable,
            secret,
            api_rule=rule.model_dump_json() if rule else None,
        )
        self._record("granted", agent=agent, subject=f"{made.variable} {secret}")
        hosts = f"; call_api may send it to {', '.join(rule.hosts)}" if rule else ""
        return f"Granted {secret!r} to {agent!r} as {made.variable!r}{hosts}."

    def revoke(self, fields: dict[str, str]) -> str:
        agent, variable = fields.get("agent", ""), fields.get("variable", "")
        self.vault.revoke(self.vault.local_user_id, agent, variable)
        self._record("revoked", agent=agent, subject=variable)
        return f"Revoked {variable!r} from {agent!r}; its next call is refused."

    def approve(self, fields: dict[str, str]) -> str:
        request = decisions.waiting_request(self.vault, fields.get("request", ""))
        decisions.approvable(self.vault, request.client_id, request.variable)
        secret = decisions.chosen_secret(
            self.vault,
            fields.get("secret", ""),
            fields.get("new_name", ""),
            fields.get("new_value", ""),
        )
        grant = decisions.approve(self.vault, request.request_id, secret, by="dashboard")
        return (
            f"Granted {grant.secret_name!r} to {grant.client_id!r} as {grant.variable!r}; "
            f"the call of {shown(request.client)!r} goes on."
        )

    def deny(self, fields: dict[str, str]) -> str:
        request = decisions.deny(self.vault, fields.get("request", ""), by="dashboard")
        return f"Denied {request.client_id!r} the variable {request.variable!r}."

    def _record(
        self, outcome: str, *, subject: str, agent: str | None = None, action: str = "dashboard"
    ) -> None:
        self.vault.record(
            action, outcome, client_id=agent, user_id=self.vault.local_user_id, subject=subject
        )
