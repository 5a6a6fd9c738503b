"""The MCP server definition: one `MCPServer` behind stdio, SSE and streamable HTTP."""

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.mcpserver.resolve import Resolve
from mcp.types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
    ToolAnnotations,
)
from pydantic import BaseModel, Field

from piper_mcp import __version__
from piper_mcp.server.audit import AuditError, AuditTrail, RecentEntries
from piper_mcp.server.brokered_calls import BrokeredCalls, HttpMethod
from piper_mcp.server.consent import (
    ConsentKeeper,
    RevealConsent,
    client_name,
    consent_asked,
    use_key,
)
from piper_mcp.server.credentials import CredentialService, Mode, Refusal
from piper_mcp.server.just_in_time import GrantingServer, tool_error
from piper_mcp.server.redaction import Redactor
from piper_mcp.server.results import ApiCallResult, LinkStatus, SecretCredential, VariablesReport

INSTRUCTIONS = """\
piper-mcp hands out user-approved credentials from Piper. Call list_variables to see \
which variables this agent may ask for, then get_secret(variable) for a short-lived \
token. The token is a Google OAuth (STS) access token that reads the granted secret \
from Google Secret Manager (`secret_version`); it is not the secret itself. If a call \
fails, its text says what the user must do (start Piper Link, grant the variable). To \
use a credential without seeing it, call_api sends an HTTPS request with it attached to \
the hosts the operator allows for that variable."""

VARIABLE_TEMPLATE = "piper://variables/{name}"
DeclaredVariable = Annotated[
    str, Field(description="One of the agent's declared variable names (list_variables).")
]
AUDIT_RESOURCE_ENTRIES = 50

# Tool descriptions are written for a model; they are part of the public contract
# (tests/protocol/snapshots/list_tools.json).
GET_SECRET = (
    "Get a short-lived credential for one of this agent's declared variables. Returns a "
    "Piper STS token (a Google OAuth access token) with its expiry and the Secret Manager "
    "resource it can read. Only declared variables are served, and only once the user has "
    "granted the variable to this agent in Piper. On failure the error says what the user "
    "needs to do."
)
CHECK_LINK = (
    "Check whether Piper Link (the local app that says which user this agent serves) "
    "answers, how fast, and what the user should do if it does not; with a local Piper, "
    "which vault it serves (its path)."
)
CALL_API = (
    "Call an HTTPS API with one of this agent's granted credentials attached by piper-mcp, "
    "so the credential never enters this conversation. Only to the hosts the operator "
    "allows for that variable, which also sets where the credential goes (e.g. the "
    "Authorization header): do not set that header yourself. Returns the status, selected "
    "headers and the body, with any echo of the credential removed."
)
LIST_VARIABLES = (
    "List the variables this agent may ask for and where each would come from now: "
    "'piper' (granted: get_secret works), 'environment' or 'local_file' (only a raw "
    "fallback exists: get_secret with mode='value', as the reveal policy allows), or "
    "'missing', with advice for the user, and with a local Piper the vault served (its "
    "path). Never returns values or tokens."
)


def build_server(
    service: CredentialService,
    *,
    calls: BrokeredCalls | None = None,
    audit: AuditTrail | None = None,
    transport: str = "stdio",
    redactor: Redactor | None = None,
    grant_wait: float = 120.0,
    offer_grants: bool = True,
) -> MCPServer:
    """The MCP server over `service`; everything it says passes `redactor` (the log's, if given).

    `grant_wait`: how long a call waits for the user to grant a variable it lacks.
    `offer_grants`: whether to offer that at all: only where the client is the user's
    (stdio, or HTTP with a bearer token; see `just_in_time`).
    """
    calls = calls or BrokeredCalls(service, {})
    keeper = ConsentKeeper(service, calls, one_client=transport == "stdio")
    redactor = redactor or Redactor()
    redactor.watch(service.client)
    scrub = redactor.scrub
    server = GrantingServer(
        service=service,
        grant_wait=grant_wait,
        offer_grants=offer_grants,
        scrub=scrub,
        name="piper",
        title="Piper credentials",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://agentpiper.com",
    )

    def audited(ctx: Context, outcome: str, reason: str, **fields: Any) -> None:
        """One audit entry for a call's outcome; without one, the call gives nothing out."""
        if not audit:
            return
        try:
            audit.record(
                client=scrub(client_name(ctx)),
                agent=service.client.settings.client_id,
                transport=transport,
                **{k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()},
                outcome=outcome,
                reason=scrub(reason),
            )
        except AuditError as error:
            # Every outcome is audited (SECURITY.md rule 8): no record, no credential.
            withheld = "The credential was withheld because"
            said = withheld if outcome == "ok" else f"Refused ({reason}), and"
            raise ToolError(scrub(f"{said} this call could not be audited: {error}")) from None

    @server.tool(
        title="Get a credential",
        description=GET_SECRET,
        annotations=ToolAnnotations(
            title="Get a credential",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    async def get_secret(
        variable: DeclaredVariable,
        ctx: Context,
        consent: Annotated[ElicitationResult[RevealConsent], Resolve(keeper.ask)],
        mode: Annotated[
            Mode,
            Field(
                description="'token' (default): a short-lived STS token. 'value': the raw "
                "secret, released only as the operator's reveal policy allows (by default "
                "the user is asked)."
            ),
        ] = "token",
    ) -> SecretCredential:
        asked, given = consent_asked(consent)

        def record(outcome: str, variable: str, source: str | None, reason: str) -> None:
            audited(
                ctx,
                outcome,
                reason,
                variable=variable,
                mode=mode,
                source=source,
                consent_asked=asked,
                consent_given=given,
            )

        try:
            if mode == "token":
                result = await service.get_secret(variable)
            else:
                allowed = keeper.decision(consent, service.declared_name(variable), ctx)
                result = await service.reveal(variable, allowed)
        except Refusal as refusal:
            record("refused", variable, None, refusal.reason)
            raise tool_error(refusal, variable, scrub(str(refusal))) from None
        record("ok", result.variable, result.source, result.consent)
        return scrubbed(result, scrub, keep=frozenset({"token", "value"}))

    @server.tool(
        title="Call an API with a credential",
        description=CALL_API,
        annotations=ToolAnnotations(
            title="Call an API with a credential",
            read_only_hint=False,
            destructive_hint=True,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    async def call_api(
        variable: DeclaredVariable,
        url: Annotated[
            str,
            Field(description="The https:// URL to call, on a host allowed for this variable."),
        ],
        ctx: Context,
        consent: Annotated[ElicitationResult[RevealConsent], Resolve(keeper.ask_to_use)],
        method: Annotated[HttpMethod, Field(description="The HTTP method.")] = "GET",
        headers: Annotated[
            dict[str, str] | None,
            Field(description="Extra request headers; never the one the credential goes in."),
        ] = None,
        body: Annotated[str | None, Field(description="The request body, as text.")] = None,
    ) -> ApiCallResult:
        asked, given = consent_asked(consent)
        host = urlsplit(url).hostname or ""  # the audit's, should the call be refused early

        def record(outcome: str, reason: str, status: int | None = None, size: int = 0) -> None:
            audited(
                ctx,
                outcome,
                reason,
                variable=variable,
                mode="call",
                source="piper",
                host=host,
                method=method,
                status=status,
                bytes=size,
                consent_asked=asked,
                consent_given=given,
            )

        try:
            name, host = calls.target(variable, method, url)
            allowed = keeper.decision(consent, use_key(name, host), ctx)
            response = await calls.call(
                variable, allowed, method=method, url=url, headers=headers or {}, body=body
            )
        except Refusal as refusal:
            record("refused", refusal.reason)
            raise tool_error(refusal, variable, scrub(str(refusal))) from None
        record("ok", allowed, response.status, response.body_bytes)
        return scrubbed(
            ApiCallResult(variable=name, host=host, method=method, **response.model_dump()), scrub
        )

    @server.tool(
        title="Check Piper Link",
        description=CHECK_LINK,
        annotations=ToolAnnotations(
            title="Check Piper Link",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )
    async def check_link() -> LinkStatus:
        return scrubbed(await service.check_link(), scrub)

    @server.tool(
        title="List variables",
        description=LIST_VARIABLES,
        annotations=ToolAnnotations(
            title="List variables",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    )
    async def list_variables() -> VariablesReport:
        return scrubbed(await service.list_variables(), scrub)

    @server.resource(
        "piper://link",
        name="link",
        title="Piper Link status",
        description="Whether Piper Link answers and which user context is in use (JSON).",
        mime_type="application/json",
    )
    async def link_resource() -> str:
        return scrub((await service.check_link()).model_dump_json(indent=2))

    @server.resource(
        "piper://variables",
        name="variables",
        title="Declared variables",
        description="The agent's declared variables and where each would come from (JSON).",
        mime_type="application/json",
    )
    async def variables_resource() -> str:
        return scrub((await service.list_variables()).model_dump_json(indent=2))

    @server.resource(
        VARIABLE_TEMPLATE,
        name="variable",
        title="One variable",
        description="Where one declared variable would come from now (JSON).",
        mime_type="application/json",
    )
    async def variable_resource(name: str) -> str:
        try:
            status = await service.variable_status(name)
        except Refusal as refusal:
            raise ResourceNotFoundError(scrub(str(refusal))) from None
        return scrub(status.model_dump_json(indent=2))

    @server.resource(
        "piper://audit",
        name="audit",
        title="Recent get_secret outcomes",
        description="The most recent audit entries: who asked for which variable, when, and "
        "the outcome (JSON; never a value or a token).",
        mime_type="application/json",
    )
    async def audit_resource() -> str:
        try:
            entries = audit.recent(AUDIT_RESOURCE_ENTRIES) if audit else RecentEntries()
        except AuditError as error:
            raise ResourceError(scrub(str(error))) from None
        page = {"entries": entries, "skipped": entries.skipped}
        return scrub(json.dumps(page, indent=2, ensure_ascii=False))

    @server.prompt(
        title="Fix a variable",
        description="Walk the user through making one variable available: Piper Link, "
        "the grant, or a fallback.",
    )
    async def fix_variable(variable: str) -> str:
        try:
            status = await service.variable_status(variable)
        except Refusal as refusal:
            return scrub(f"I cannot help with that variable: {refusal}")
        link = await service.check_link()
        return scrub(fix_steps(status.model_dump(), link.model_dump()))

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # SDK: no hints
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        wanted = (
            (isinstance(ref, ResourceTemplateReference) and ref.uri == VARIABLE_TEMPLATE)
            or (isinstance(ref, PromptReference) and ref.name == "fix_variable")
        ) and argument.name in ("name", "variable")
        if not wanted:
            return None
        values = service.complete(argument.value)
        return Completion(values=values, total=len(values), has_more=False)

    return server


Result = TypeVar("Result", bound=BaseModel)


def scrubbed(
    result: Result, scrub: Callable[[str], str], keep: frozenset[str] = frozenset()
) -> Result:
    """`result` with every string scrubbed, but the fields in `keep` (the credential itself)."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, BaseModel):
            return scrubbed(value, scrub)
        if isinstance(value, list):
            return [clean(item) for item in value]
        if isinstance(value, dict):
            return {clean(key): clean(item) for key, item in value.items()}
        return value

    # Field by field, unvalidated: this runs on every get_secret, the hot path.
    updates = {name: clean(value) for name, value in result if name not in keep}
    return result.model_copy(update=updates)


def fix_steps(status: dict[str, Any], link: dict[str, Any]) -> str:
    """The prompt's text: where the variable stands and the user's next steps."""
    name = status["variable"]
    lines = [f"Help me make the Piper variable {name!r} available to this agent."]
    if link.get("vault"):
        lines.append(f"This server serves the local vault {link['vault']}.")
    lines.append("")
    if status["source"] == "piper":
        lines.append(f"It is already granted in Piper; get_secret({name!r}) will work.")
        return "\n".join(lines)
    lines.append(f"Right now it would come from: {status['source']}.")
    if status.get("piper_problem"):
        lines.append(f"Piper said: {status['piper_problem']}")
    lines.append("")
    lines.append("Steps:")
    step = 1
    if link["context"] == "none":
        lines.append(f"{step}. {link['advice']}")
        step += 1
    if status.get("advice"):
        lines.append(f"{step}. {status['advice']}")
        step += 1
    lines.append(f"{step}. Then call list_variables (or check_link) to confirm it is fixed.")
    return "\n".join(lines)
