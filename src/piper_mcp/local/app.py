"""The Piper wire protocol, answered: token, resolve, scoped credentials, raw exchange.

Every function sits at `/<function name>` on one port. A request with a
bearer token speaks v1; one whose body names `agentClientId` speaks v2. v2
proves nothing about the caller, so it is served only for agents the operator
made secretless, and for the agent whose `serve --local` holds this app
in-process. Each call is written to the vault's audit trail (who, what,
outcome; never a value) off the event loop (`audit_writer.py`); an answer
that hands out a credential waits for its row, others do not. Requests that
prove no agent are recorded at a bounded rate, so a flood cannot grow the
vault. A vault that cannot be read or written is answered as
`storage_unavailable`, naming the cause and the fix, and logged once a minute.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from piper_mcp.invocation import command
from piper_mcp.local import secret_manager
from piper_mcp.local.audit_writer import AuditWriter, Caller
from piper_mcp.local.request_body import (
    RequestRejected,
    bearer_token,
    form_body,
    json_body,
    rejected,
)
from piper_mcp.local.storage import DAMAGED, StorageError, StorageFaultLog, storage_error
from piper_mcp.local.throttle import SecretCheckGate
from piper_mcp.local.tokens import TokenIssuer
from piper_mcp.local.vault import Vault
from piper_mcp.piper import protocol, protocol_names
from piper_mcp.piper.protocol import (
    ExchangeRequestV1,
    ExchangeRequestV2,
    ResolveRequestV1,
    ResolveRequestV2,
    ScopedRequestV1,
    ScopedRequestV2,
    error_body,
)
from piper_mcp.piper.protocol_names import (
    INVALID_CLIENT,
    INVALID_REQUEST,
    INVALID_TOKEN,
    MAPPING_NOT_FOUND,
    NOT_FOUND,
    PERMISSION_DENIED,
    STORAGE_UNAVAILABLE,
    UNSUPPORTED_GRANT_TYPE,
)

logger = logging.getLogger(__name__)

FUNCTIONS_WITH_AGENT_TOKENS = (
    protocol_names.RESOLVE_MAPPING_FUNCTION,
    protocol_names.GET_SCOPED_FUNCTION,
    protocol_names.EXCHANGE_SECRET_FUNCTION,
)
SECRET_MANAGER_ACCESS = "secretmanager.access"
# Their answers are credentials: given only once the audit row saying so is written.
HANDS_OUT_CREDENTIALS = frozenset(
    {
        protocol_names.TOKEN_FUNCTION,
        protocol_names.GET_SCOPED_FUNCTION,
        protocol_names.EXCHANGE_SECRET_FUNCTION,
        SECRET_MANAGER_ACCESS,
    }
)


# A function that names an agent takes one body in each protocol version.
V1 = TypeVar("V1", ResolveRequestV1, ScopedRequestV1, ExchangeRequestV1)
V2 = TypeVar("V2", ResolveRequestV2, ScopedRequestV2, ExchangeRequestV2)


class UnprovenRequests:
    """Audits requests that prove no agent at a bounded rate; counts the rest.

    Anyone who can reach the port can send them, so recording each one would
    let a flood grow the vault without limit.
    """

    def __init__(self, per_minute: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_start = clock()
        self._recorded = 0
        self.suppressed = 0

    def admit(self) -> tuple[bool, int]:
        """(record this one?, how many went unrecorded in the window that just closed)."""
        now = self._clock()
        closed = 0
        if now - self._window_start >= 60:
            closed, self.suppressed = self.suppressed, 0
            self._window_start, self._recorded = now, 0
        if self._recorded < self.per_minute:
            self._recorded += 1
            return True, closed
        if not self.suppressed:
            logger.warning(
                "More than %d requests a minute prove no agent; recording a count instead.",
                self.per_minute,
            )
        self.suppressed += 1
        return False, closed


Handler = Callable[[Request, Caller], Awaitable[Response]]


class PiperBackendApp:
    """The HTTP face of a vault. `calls` counts requests per function (for tests and bench)."""

    def __init__(
        self,
        vault: Vault,
        tokens: TokenIssuer,
        *,
        project_id: str,
        in_process_agent: str | None = None,
    ) -> None:
        self.vault = vault
        self.tokens = tokens
        self.project_id = project_id
        # Only `serve --local` sets this, for an app no port exposes: it alone can call it.
        self.in_process_agent = in_process_agent
        self.unproven = UnprovenRequests()
        self.faults = StorageFaultLog(logger)
        self.audit = AuditWriter(vault, self.faults)
        self.calls: Counter[str] = Counter()
        handlers: dict[str, Handler] = {
            protocol_names.TOKEN_FUNCTION: self.token,
            protocol_names.RESOLVE_MAPPING_FUNCTION: self.resolve,
            protocol_names.GET_SCOPED_FUNCTION: self.scoped,
            protocol_names.EXCHANGE_SECRET_FUNCTION: self.exchange,
        }
        routes = [
            Route(f"/{name}", self._audited(name, handler), methods=["POST"])
            for name, handler in handlers.items()
        ]
        access = Route(
            secret_manager.ACCESS_ROUTE,
            self._audited(SECRET_MANAGER_ACCESS, self.access_secret),
            methods=["GET"],
        )
        errors = {HTTPException: _http_error, Exception: _server_error}
        self.asgi = Starlette(routes=[*routes, access], exception_handlers=errors)
        # What a handed-out STS token needs, and nothing else: the port `serve --local` opens.
        self.secret_manager_asgi = Starlette(routes=[access], exception_handlers=errors)
        self.secret_checks = SecretCheckGate()

    def close(self) -> None:
        """Write the audit rows still pending (call once no request is being served)."""
        self.audit.close()

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
            except (StorageError, sqlite3.Error) as error:
                failure = storage_error(error, self.vault.database)
                self.faults.report(failure)
                response = _storage_failure(action, failure)
                outcome, reason = STORAGE_UNAVAILABLE, str(failure)
            if response.status_code >= 400 and outcome == "ok":
                outcome = f"http_{response.status_code}"
            if not caller.proven:
                record, unrecorded = self.unproven.admit()
                if unrecorded:
                    suppressed = f"{unrecorded} requests not recorded"
                    self.audit.record(Caller().entry("unproven", "suppressed", suppressed))
                if not record:
                    return response
            entry = caller.entry(action, outcome, reason)
            if response.status_code < 400 and action in HANDS_OUT_CREDENTIALS:
                try:
                    await self.audit.commit(entry)
                except StorageError as failure:  # logged by the writer
                    # What was answered instead, recorded once the vault takes writes again.
                    refused = caller.entry(action, STORAGE_UNAVAILABLE, str(failure))
                    self.audit.record(refused)
                    return _storage_failure(action, failure)
            else:
                self.audit.record(entry)
            return response

        return endpoint

    # --- who is asking ---

    async def _agent_call(
        self, request: Request, function: str, caller: Caller, v1: type[V1], v2: type[V2]
    ) -> tuple[V1 | V2, str, str]:
        """The body of a call that names an agent, and (agent, user) once the caller proved them.

        With a bearer token the body speaks v1 and the token says who; without one
        it speaks v2 and names its agent and user itself.
        """
        if bearer_token(request):
            ask: V1 | V2 = await json_body(request, v1)
            self._v1_caller(request, function, caller)
        else:
            secretless = await json_body(request, v2)
            self._v2_caller(secretless.agentClientId, secretless.instanceId, caller)
            ask = secretless
        assert caller.client_id is not None and caller.user_id is not None
        return ask, caller.client_id, caller.user_id

    def _v1_caller(self, request: Request, function: str, caller: Caller) -> None:
        """Fill `caller` from a valid agent token minted for this function."""
        token = bearer_token(request)
        found = self.tokens.agent_token(token) if token else None
        agent = self.vault.agent(found.client_id) if found else None
        if (
            found is None
            or found.audience != f"/{function}"
            or agent is None
            or agent.created_at != found.agent_registered_at  # removed, then added again
        ):
            raise rejected(
                401, INVALID_TOKEN, "The agent token is missing, expired or not for this function."
            )
        caller.client_id, caller.user_id = found.client_id, found.user_id
        caller.proven = True

    def _v2_caller(self, client_id: str, instance_id: str, caller: Caller) -> None:
        """A v2 body names its agent and user; believe it only where the operator said so."""
        caller.client_id = client_id
        agent = self.vault.agent(client_id)
        if agent is None or not (agent.serves_v2 or client_id == self.in_process_agent):
            # One answer for unknown and not-secretless agents: ids are not probed this way.
            add = command("local", "agent", "add", "ID", "--secretless", "--variable", "NAME")
            raise rejected(
                401,
                INVALID_CLIENT,
                "Unknown agentClientId, or an agent that must prove itself with its client "
                "secret (protocol v1). Protocol v2 is for agents without one: the vault's "
                f"operator registers one with `{add}`, or turns it back on with "
                f"`{command('local', 'agent', 'secretless', 'AGENT', 'on')}`.",
            )
        # The instance id selects the user; it authenticates no one.
        caller.user_id = self.vault.user_for_instance(instance_id)
        if caller.user_id is None:
            raise rejected(400, INVALID_REQUEST, "Unknown instanceId: sign in to Piper Link again.")
        caller.proven = True

    # --- functions ---

    async def token(self, request: Request, caller: Caller) -> Response:
        ask = await form_body(request, protocol.TokenRequest)
        caller.client_id = ask.client_id
        if ask.grant_type != "client_credentials":
            raise rejected(
                400, UNSUPPORTED_GRANT_TYPE, "Only grant_type=client_credentials is supported."
            )
        # scrypt is costly on purpose: the gate bounds how many run, and for whom.
        agent = await self.secret_checks.check(
            ask.client_id, lambda: self.vault.verify_client_secret(ask.client_id, ask.client_secret)
        )
        if agent is None:
            raise rejected(401, INVALID_CLIENT, "Unknown client_id or wrong client_secret.")
        audience = urlsplit(ask.audience).path.rstrip("/")
        caller.subject = audience
        if audience.lstrip("/") not in FUNCTIONS_WITH_AGENT_TOKENS:
            raise rejected(400, INVALID_REQUEST, "audience is not the URL of a Piper function.")
        caller.proven = True
        caller.user_id = agent.owner_user_id
        if ask.piper_link_instance_id is not None:
            caller.user_id = self.vault.user_for_instance(ask.piper_link_instance_id)
            if caller.user_id is None:
                raise rejected(400, INVALID_REQUEST, "Unknown piper_link_instance_id.")
        token = self.tokens.issue_agent_token(
            agent.client_id, caller.user_id, audience, agent_registered_at=agent.created_at
        )
        answer = protocol.TokenResponse(access_token=token, expires_in=self.tokens.agent_ttl)
        return JSONResponse(answer.model_dump())

    async def resolve(self, request: Request, caller: Caller) -> Response:
        ask, client_id, user_id = await self._agent_call(
            request,
            protocol_names.RESOLVE_MAPPING_FUNCTION,
            caller,
            ResolveRequestV1,
            ResolveRequestV2,
        )
        variable = ask.variableName
        caller.subject = variable[:256]
        grant = self.vault.grant_for(user_id, client_id, variable)
        if grant is None:
            raise rejected(404, MAPPING_NOT_FOUND, "No grant of this variable to this agent.")
        return JSONResponse(protocol.ResolveResponse(credentialId=grant.credential_id).model_dump())

    async def scoped(self, request: Request, caller: Caller) -> Response:
        ask, client_id, user_id = await self._agent_call(
            request, protocol_names.GET_SCOPED_FUNCTION, caller, ScopedRequestV1, ScopedRequestV2
        )
        requested = ask.credentialIds
        caller.subject = ",".join(requested)[:256]
        grants = {grant.credential_id: grant for grant in self.vault.grants(user_id, client_id)}
        if any(cid in grants and not grants[cid].active for cid in requested):
            raise rejected(
                403, PERMISSION_DENIED, "A grant of a requested credential is not active."
            )
        granted = {cid: grants[cid].grant_id for cid in dict.fromkeys(requested) if cid in grants}
        if not granted:
            raise rejected(
                403,
                PERMISSION_DENIED,
                "None of the requested credentials is granted to this agent.",
            )
        for credential_id in granted:
            # A token for a secret that cannot be read would only fail at the read.
            self.vault.check_secret(credential_id)
        answer = protocol.ScopedResponse(
            access_token=self.tokens.issue_sts_token(client_id, user_id, granted),
            expires_in=self.tokens.sts_ttl,
            granted_credential_ids=list(granted),
        )
        return JSONResponse(answer.model_dump())

    async def exchange(self, request: Request, caller: Caller) -> Response:
        ask, client_id, user_id = await self._agent_call(
            request,
            protocol_names.EXCHANGE_SECRET_FUNCTION,
            caller,
            ExchangeRequestV1,
            ExchangeRequestV2,
        )
        if isinstance(ask, ExchangeRequestV1):
            credential_id = ask.piper_credential_id
        else:
            credential_id = ask.piperCredentialId
        caller.subject = credential_id[:256]
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


def _storage_failure(action: str, failure: StorageError) -> Response:
    """The protocol's error body (Google's, on the Secret Manager route) naming the cause."""
    lasting = failure.cause == DAMAGED  # asking again cannot help: not a 503
    status = 500 if lasting else 503
    if action == SECRET_MANAGER_ACCESS:
        google_status = "DATA_LOSS" if lasting else "UNAVAILABLE"
        body = {"error": {"code": status, "message": str(failure), "status": google_status}}
        return JSONResponse(body, status_code=status)
    return JSONResponse(error_body(STORAGE_UNAVAILABLE, str(failure)), status_code=status)


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
