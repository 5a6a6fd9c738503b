"""The Piper wire protocol, answered: token, resolve, scoped credentials, raw exchange.

Every function sits at `/<function name>` on one port. A request with a
bearer token speaks v1; one whose body names `agentClientId` speaks v2.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from piper_mcp.local import secret_manager
from piper_mcp.local.requests import (
    RequestRejected,
    bearer_token,
    form_body,
    json_body,
    rejected,
)
from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.local.vault import MemoryVault
from piper_mcp.piper import protocol
from piper_mcp.piper.protocol import (
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_TOKEN,
    MAPPING_NOT_FOUND,
    NOT_FOUND,
    PERMISSION_DENIED,
    UNSUPPORTED_GRANT_TYPE,
)

logger = logging.getLogger(__name__)

FUNCTIONS_WITH_AGENT_TOKENS = (
    protocol.RESOLVE_MAPPING_FUNCTION,
    protocol.GET_SCOPED_FUNCTION,
    protocol.EXCHANGE_SECRET_FUNCTION,
)


class PiperBackendApp:
    """The HTTP face of a vault. `calls` counts requests per function (for tests and bench)."""

    def __init__(self, vault: MemoryVault, tokens: TokenIssuer, *, project_id: str) -> None:
        self.vault = vault
        self.tokens = tokens
        self.project_id = project_id
        self.calls: Counter[str] = Counter()
        handlers: dict[str, Callable[[Request], Awaitable[Response]]] = {
            protocol.TOKEN_FUNCTION: self.token,
            protocol.RESOLVE_MAPPING_FUNCTION: self.resolve,
            protocol.GET_SCOPED_FUNCTION: self.scoped,
            protocol.EXCHANGE_SECRET_FUNCTION: self.exchange,
        }
        routes = [
            Route(f"/{name}", self._counted(name, handler), methods=["POST"])
            for name, handler in handlers.items()
        ]
        routes.append(
            Route(
                secret_manager.ACCESS_ROUTE,
                self._counted("secretmanager.access", self.access_secret),
                methods=["GET"],
            )
        )
        self.asgi = Starlette(routes=routes)

    def _counted(
        self, name: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.calls[name] += 1
            try:
                return await handler(request)
            except RequestRejected as rejection:
                return rejection.response

        return endpoint

    # --- who is asking ---

    def _v1_caller(self, request: Request, function: str) -> tuple[str, str]:
        """(client_id, user_id) of a valid agent token minted for this function."""
        token = bearer_token(request)
        found = self.tokens.agent_token(token) if token else None
        if found is None or found.audience != f"/{function}":
            raise rejected(
                401, INVALID_TOKEN, "The agent token is missing, expired or not for this function."
            )
        return found.client_id, found.user_id

    def _v2_caller(self, client_id: str, instance_id: str) -> tuple[str, str]:
        if self.vault.agent(client_id) is None:
            raise rejected(401, INVALID_CLIENT, "Unknown agentClientId.")
        user_id = self.vault.user_for_instance(instance_id)
        if user_id is None:
            raise rejected(400, INVALID_REQUEST, "Unknown instanceId: sign in to Piper Link again.")
        return client_id, user_id

    # --- functions ---

    async def token(self, request: Request) -> Response:
        ask = await form_body(request, protocol.TokenRequest)
        if ask.grant_type != "client_credentials":
            raise rejected(
                400, UNSUPPORTED_GRANT_TYPE, "Only grant_type=client_credentials is supported."
            )
        agent = self.vault.verify_client_secret(ask.client_id, ask.client_secret)
        if agent is None:
            raise rejected(401, INVALID_CLIENT, "Unknown client_id or wrong client_secret.")
        audience = urlsplit(ask.audience).path.rstrip("/")
        if audience.lstrip("/") not in FUNCTIONS_WITH_AGENT_TOKENS:
            raise rejected(400, INVALID_REQUEST, "audience is not the URL of a Piper function.")
        user_id = agent.owner_user_id
        if ask.piper_link_instance_id is not None:
            found = self.vault.user_for_instance(ask.piper_link_instance_id)
            if found is None:
                raise rejected(400, INVALID_REQUEST, "Unknown piper_link_instance_id.")
            user_id = found
        token = self.tokens.issue_agent_token(agent.client_id, user_id, audience)
        answer = protocol.TokenResponse(access_token=token, expires_in=self.tokens.agent_ttl)
        return JSONResponse(answer.model_dump())

    async def resolve(self, request: Request) -> Response:
        if bearer_token(request):
            v1 = await json_body(request, protocol.ResolveRequestV1)
            client_id, user_id = self._v1_caller(request, protocol.RESOLVE_MAPPING_FUNCTION)
            variable = v1.variableName
        else:
            v2 = await json_body(request, protocol.ResolveRequestV2)
            client_id, user_id = self._v2_caller(v2.agentClientId, v2.instanceId)
            variable = v2.variableName
        grant = self.vault.grant_for(user_id, client_id, variable)
        if grant is None:
            raise rejected(
                404, MAPPING_NOT_FOUND, f"No grant of variable {variable[:64]!r} to this agent."
            )
        return JSONResponse(protocol.ResolveResponse(credentialId=grant.credential_id).model_dump())

    async def scoped(self, request: Request) -> Response:
        if bearer_token(request):
            v1 = await json_body(request, protocol.ScopedRequestV1)
            client_id, user_id = self._v1_caller(request, protocol.GET_SCOPED_FUNCTION)
            requested = v1.credentialIds
        else:
            v2 = await json_body(request, protocol.ScopedRequestV2)
            client_id, user_id = self._v2_caller(v2.agentClientId, v2.instanceId)
            requested = v2.credentialIds
        grants = {grant.credential_id: grant for grant in self.vault.grants_of(user_id, client_id)}
        if any(cid in grants and not grants[cid].active for cid in requested):
            raise rejected(
                403, PERMISSION_DENIED, "A grant for a requested credential is not active."
            )
        granted = [cid for cid in dict.fromkeys(requested) if cid in grants]
        if not granted:
            raise rejected(
                403,
                PERMISSION_DENIED,
                "None of the requested credentials is granted to this agent.",
            )
        answer = protocol.ScopedResponse(
            access_token=self.tokens.issue_sts_token(client_id, user_id, granted),
            expires_in=self.tokens.sts_ttl,
            granted_credential_ids=granted,
        )
        return JSONResponse(answer.model_dump())

    async def exchange(self, request: Request) -> Response:
        if bearer_token(request):
            v1 = await json_body(request, protocol.ExchangeRequestV1)
            client_id, user_id = self._v1_caller(request, protocol.EXCHANGE_SECRET_FUNCTION)
            credential_id = v1.piper_credential_id
        else:
            v2 = await json_body(request, protocol.ExchangeRequestV2)
            client_id, user_id = self._v2_caller(v2.agentClientId, v2.instanceId)
            credential_id = v2.piperCredentialId
        grants = [
            grant
            for grant in self.vault.grants_of(user_id, client_id)
            if grant.credential_id == credential_id and grant.active
        ]
        if not grants:
            raise rejected(
                403, PERMISSION_DENIED, "No active grant of this credential to this agent."
            )
        value = self.vault.secret_value(credential_id)
        if value is None:
            raise rejected(404, NOT_FOUND, "The granted secret no longer exists.")
        return JSONResponse(protocol.ExchangeResponse(secret_value=value).model_dump())

    async def access_secret(self, request: Request) -> Response:
        return secret_manager.access(request, self.vault, self.tokens, self.project_id)
