"""Brokered calls: the model calls an API with a granted credential it never sees. No MCP here.

The rule for each variable (which hosts, where the credential goes, limits) comes
from the operator: `PIPER_MCP_API_RULES`, or with a local vault the rule stored
with the grant (`piper-mcp local grant ... --use openai`); never from the model.
Only Piper grants are used, no fallback tier. The reveal policy governs these
calls as it governs raw values, since the credential leaves the server. The broker
(`piper_mcp.broker`, with the HTTP stack it needs) loads at the first call: a server
answers `initialize` without it.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Literal

from piper_mcp.invocation import command
from piper_mcp.piper import PiperError
from piper_mcp.piper.names import normalize_variable_name
from piper_mcp.server.consents import Consent
from piper_mcp.server.credentials import CredentialService, Refusal, refusal

if TYPE_CHECKING:
    from piper_mcp.broker.call import ApiRequest, ApiResponse
    from piper_mcp.broker.rules import ApiRule

Resolver = Callable[[str, int], Awaitable[list[str]]]
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class BrokeredCalls:
    """`call_api`'s operations for one agent: its rules, and the calls made with them.

    `stored_rule(variable)`: the rule a local grant carries (JSON), None without one.
    `ssl_context` and `resolve`: for tests; by default the system's trust (SSL_CERT_FILE,
    SSL_CERT_DIR, else certifi's bundle) and DNS.
    """

    def __init__(
        self,
        service: CredentialService,
        rules: Mapping[str, ApiRule],
        *,
        stored_rule: Callable[[str], str | None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.service = service
        self._rules = {normalize_variable_name(name): rule for name, rule in rules.items()}
        self._stored_rule = stored_rule
        self._ssl_context = ssl_context
        self._resolve = resolve

    def rule_for(self, name: str) -> ApiRule:
        """The operator's rule for the declared variable `name`; else a `Refusal` saying how."""
        configured = self._rules.get(normalize_variable_name(name))
        if configured is not None:
            return configured
        stored = self._stored_rule(name) if self._stored_rule is not None else None
        if stored is not None:
            from piper_mcp.broker.rules import ApiRule

            return ApiRule.model_validate_json(stored)
        if self.service.vault:
            grant = command("local", "grant", "AGENT", name, "SECRET", "--use", "openai")
            how = f"grant it with a rule, e.g. `{grant}` (a preset) or `--use api.example.com`"
        else:
            how = "add one to PIPER_MCP_API_RULES, e.g. '{\"" + name + '": "openai"}\''
        raise Refusal(
            f"{name!r} has no API rule, so call_api cannot use it: the operator says which "
            f"hosts it may be sent to. Ask the user to {how}.",
            reason="no_api_rule",
        )

    def target(self, variable: str, method: str, url: str) -> tuple[str, str]:
        """(declared name, host) of a call, checked against the rule before anything happens."""
        from piper_mcp.broker.call import ApiRequest

        name = self.service.declared_name(variable)
        return name, _checked_host(self.rule_for(name), ApiRequest(method=method, url=url))

    async def call(
        self,
        variable: str,
        consent: Consent,
        *,
        method: str,
        url: str,
        headers: dict[str, str],
        body: str | None,
    ) -> ApiResponse:
        """Send the request with the credential attached, when the policy (and consent) allow."""
        from piper_mcp.broker.call import ApiRequest, BrokerRefusal, send
        from piper_mcp.broker.transport import default_ssl_context

        request = ApiRequest(method=method, url=url, headers=headers, body=body)
        name = self.service.declared_name(variable)
        rule = self.rule_for(name)
        _checked_host(rule, request)
        policy = self.service.policy.for_variable(name)
        if policy == "deny":
            raise Refusal(
                f"The operator's reveal policy denies using {name!r} outside Piper's STS "
                "token, so call_api cannot send it; use get_secret for the token instead.",
                reason="reveal_denied",
            )
        if policy == "ask" and not consent.given_by_user:
            raise Refusal(f"The user did not allow this call with {name!r}.", reason="no_consent")
        raw = rule.credential == "value"
        try:
            result = await self.service.client.get_from_piper(name, fetch_raw_secret=raw)
        except PiperError as error:
            raise refusal(
                f"No credential for {name!r}: {self.service.said(name, error)}", error
            ) from None
        credential = result.value if isinstance(result.value, str) else str(result.value)
        if self._ssl_context is None:  # built once (some 20 ms), at the first call that needs it
            self._ssl_context = default_ssl_context()
        try:
            return await send(
                rule, credential, request, ssl_context=self._ssl_context, resolve=self._resolve
            )
        except BrokerRefusal as refused:
            raise Refusal(str(refused), reason=refused.reason) from None


def _checked_host(rule: ApiRule, request: ApiRequest) -> str:
    """The host `request` goes to, if `rule` allows the request; else a `Refusal` saying why."""
    from piper_mcp.broker.call import BrokerRefusal, target_host

    try:
        return target_host(rule, request)
    except BrokerRefusal as refused:
        raise Refusal(str(refused), reason=refused.reason) from None
