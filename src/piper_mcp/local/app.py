"""The Piper wire protocol, answered: token, resolve, scoped credentials, raw exchange.

Every function sits at `/<function name>` on one port. A request with a
bearer token speaks v1; one whose body names `agentClientId` speaks v2. Each
call is written to the vault's audit trail (who, what, outcome; never a value).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
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
from piper_mcp.local.vault import Vault
from piper_mcp.piper import protocol
from piper_mcp.piper.protocol import (
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_TOKEN,
    MAPPING_NOT_FOUND,
    NOT_FOUND,
    PERMISSION_DENIED,
    UNSUPPORTED_GRANT_TYPE,
    error_body,
)

logger = logging.getLogger(__name__)

FUNCTIONS_WITH_AGENT_TOKENS = (
    protocol.RESOLVE_MAPPING_FUNCTION,
    protocol.GET_SCOPED_FUNCTION,
    protocol.EXCHANGE_SECRET_FUNCTION,
)


@dataclass
class Caller:
    """What a handler learned about the request, for the audit trail."""

    client_id: str | None = None
    user_id: str | None = None
    subject: str | None = None


Handler = Callable[[Request, Caller], Awaitable[Response]]


class PiperBackendApp:
    """The HTTP face of a vault. `calls` counts requests per function (for tests and bench)."""

    def __init__(self, vault: Vault, tokens: TokenIssuer, *, project_id: str) -> None:
        self.vault = vault
        self.tokens = tokens
        self.project_id = project_id
        self.calls: Counter[str] = Counter()
        handlers: dict[str, Handler] = {
            protocol.TOKEN_FUNCTION: self.token,
            protocol.RESOLVE_MAPPING_FUNCTION: self.resolve,
            protocol.GET_SCOPED_FUNCTION: self.scoped,
            protocol.EXCHANGE_SECRET_FUNCTION: self.exchange,
        }
        routes = [
            Route(f"/{name}", self._audited(name, handler), methods=["POST"])
            for name, handler in handlers.items()
        ]
        routes.append(
            Route(
                secret_manager.ACCESS_ROUTE,
                self._audited("secretmanager.access", self.access_secret),
                methods=["GET"],
            )
        )
        self.asgi = Starlette(
            routes=routes,
            exception_handlers={HTTPException: _http_error, Exception: _server_error},
        )

    def _audited(self, action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.calls[action] += 1
            caller = Caller()
            try:
                response = await handler(request, caller)
                outcome, reason = "ok", None
            except RequestRejected as rejection:
                response = rejection.response
                outcome, reason = rejection.code, rejection.description
            if response.status_code >= 400 and outcome == "ok":
                outcome = f"http_{response.status_code}"
            self.vault.record(
                action,
                outcome,
                client_id=caller.client_id,
                user_id=caller.user_id,
                subject=caller.subject,
                reason=reason,
            )
            return response

        return endpoint

    # --- who is asking ---

    def _v1_caller(self, request: Request, function: str, caller: Caller) -> None:
        """Fill `caller` from a valid agent token minted for this function."""
        token = bearer_token(request)
        found = self.tokens.agent_token(token) if token else None
        if found is None or found.audience != f"/{function}":
            raise rejected(
                401, INVALID_TOKEN, "The agent token is missing, expired or not for this function."
            )
        caller.client_id, caller.user_id = found.client_id, found.user_id

    def _v2_caller(self, client_id: str, instance_id: str, caller: Caller) -> None:
        caller.client_id = client_id
        if self.vault.agent(client_id) is None:
            raise rejected(401, INVALID_CLIENT, "Unknown agentClientId.")
        caller.user_id = self.vault.user_for_instance(instance_id)
        if caller.user_id is None:
            raise rejected(400, INVALID_REQUEST, "Unknown instanceId: sign in to Piper Link again.")

    @staticmethod
    def _known(caller: Caller) -> tuple[str, str]:
        assert caller.client_id is not None and caller.user_id is not None
        return caller.client_id, caller.user_id

    # --- functions ---

    async def token(self, request: Request, caller: Caller) -> Response:
        ask = await form_body(request, protocol.TokenRequest)
        caller.client_id = ask.client_id
        if ask.grant_type != "client_credentials":
            raise rejected(
                400, UNSUPPORTED_GRANT_TYPE, "Only grant_type=client_credentials is supported."
            )
        # scrypt takes tens of milliseconds: keep it off the event loop.
        agent = await run_in_threadpool(
            self.vault.verify_client_secret, ask.client_id, ask.client_secret
        )
        if agent is None:
            raise rejected(401, INVALID_CLIENT, "Unknown client_id or wrong client_secret.")
        audience = urlsplit(ask.audience).path.rstrip("/")
        caller.subject = audience
        if audience.lstrip("/") not in FUNCTIONS_WITH_AGENT_TOKENS:
            raise rejected(400, INVALID_REQUEST, "audience is not the URL of a Piper function.")
        caller.user_id = agent.owner_user_id
        if ask.piper_link_instance_id is not None:
            caller.user_id = self.vault.user_for_instance(ask.piper_link_instance_id)
            if caller.user_id is None:
                raise rejected(400, INVALID_REQUEST, "Unknown piper_link_instance_id.")
        token = self.tokens.issue_agent_token(agent.client_id, caller.user_id, audience)
        answer = protocol.TokenResponse(access_token=token, expires_in=self.tokens.agent_ttl)
        return JSONResponse(answer.model_dump())

    async def resolve(self, request: Request, caller: Caller) -> Response:
        if bearer_token(request):
            v1 = await json_body(request, protocol.ResolveRequestV1)
            self._v1_caller(request, protocol.RESOLVE_MAPPING_FUNCTION, caller)
            variable = v1.variableName
        else:
            v2 = await json_body(request, protocol.ResolveRequestV2)
            self._v2_caller(v2.agentClientId, v2.instanceId, caller)
            variable = v2.variableName
        caller.subject = variable[:256]
        client_id, user_id = self._known(caller)
        grant = self.vault.grant_for(user_id, client_id, variable)
        if grant is None:
            raise rejected(404, MAPPING_NOT_FOUND, "No grant of this variable to this agent.")
        return JSONResponse(protocol.ResolveResponse(credentialId=grant.credential_id).model_dump())

    async def scoped(self, request: Request, caller: Caller) -> Response:
        if bearer_token(request):
            v1 = await json_body(request, protocol.ScopedRequestV1)
            self._v1_caller(request, protocol.GET_SCOPED_FUNCTION, caller)
            requested = v1.credentialIds
        else:
            v2 = await json_body(request, protocol.ScopedRequestV2)
            self._v2_caller(v2.agentClientId, v2.instanceId, caller)
            requested = v2.credentialIds
        caller.subject = ",".join(requested)[:256]
        client_id, user_id = self._known(caller)
        grants = {grant.credential_id: grant for grant in self.vault.grants(user_id, client_id)}
        if any(cid in grants and not grants[cid].active for cid in requested):
            raise rejected(
                403, PERMISSION_DENIED, "A grant of a requested credential is not active."
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

    async def exchange(self, request: Request, caller: Caller) -> Response:
        if bearer_token(request):
            v1 = await json_body(request, protocol.ExchangeRequestV1)
            self._v1_caller(request, protocol.EXCHANGE_SECRET_FUNCTION, caller)
            credential_id = v1.piper_credential_id
        else:
            v2 = await json_body(request, protocol.ExchangeRequestV2)
            self._v2_caller(v2.agentClientId, v2.instanceId, caller)
            credential_id = v2.piperCredentialId
        caller.subject = credential_id[:256]
        client_id, user_id = self._known(caller)
        if not any(
            grant.credential_id == credential_id and grant.active
            for grant in self.vault.grants(user_id, client_id)
        ):
            raise rejected(
                403, PERMISSION_DENIED, "No active grant of this credential to this agent."
            )
        value = self.vault.secret_value(credential_id)
        if value is None:  # removed between the grant check and the read
            raise rejected(404, NOT_FOUND, "The granted secret no longer exists.")
        return JSONResponse(protocol.ExchangeResponse(secret_value=value).model_dump())

    async def access_secret(self, request: Request, caller: Caller) -> Response:
        return secret_manager.access(request, self.vault, self.tokens, self.project_id, caller)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = "not_found" if error.status_code == 404 else INVALID_REQUEST
    return JSONResponse(
        error_body(code, f"{request.method} {request.url.path[:100]}: {error.detail}"),
        status_code=error.status_code,
    )


async def _server_error(request: Request, error: Exception) -> Response:
    logger.error("Unexpected %s answering %s", type(error).__name__, request.url.path[:100])
    return JSONResponse(
        error_body("server_error", "The local Piper failed; see its log."), status_code=500
    )
