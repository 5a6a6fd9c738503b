"""The local grant page: where a user decides a grant request a model's call raised.

Served on loopback beside the Secret Manager route of `serve --local`. It is meant
for one person's browser and guarded against everyone else on the machine or the
web: the way in is the request's one-time link (`GrantRequests.open_page`); it sets a
session cookie (HttpOnly, SameSite=Strict, this request's path only) and puts a CSRF
token in the form, and a decision needs both. Host, Origin and headers: `page_guard`.
A value typed into the page is stored in the vault and never shown, logged or echoed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from piper_mcp.invocation import command
from piper_mcp.local.decisions import approvable, chosen_secret
from piper_mcp.local.errors import VaultError
from piper_mcp.local.grant_requests import GrantRequest, GrantRequests, LinkProblem
from piper_mcp.local.page_guard import PageGuard, security_headers
from piper_mcp.local.vault import Vault
from piper_mcp.printable import shown

STYLESHEET = Path(__file__).parent / "pages" / "piper.css"
COOKIE = "piper_grant"
MAX_FORM_BYTES = 65_536
SECURITY_HEADERS = security_headers()

_pages = Environment(
    loader=PackageLoader("piper_mcp.local", "pages"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)
_pages.filters["shown"] = shown


class GrantPage:
    """The page's routes over one vault and one server's open requests.

    `origins`: the origins this server answers as (`http://127.0.0.1:PORT`, and its
    `localhost` twin); a request naming another host is refused.
    """

    def __init__(self, vault: Vault, requests: GrantRequests, origin: str) -> None:
        self.vault = vault
        self.requests = requests
        self.guard = PageGuard(origin)
        self.asgi = Starlette(
            routes=[
                Route("/grant/{request_id}", self.show, methods=["GET"]),
                Route("/grant/{request_id}", self.decide, methods=["POST"]),
                Route("/assets/piper.css", self.stylesheet, methods=["GET"]),
            ]
        )

    def show(self, request: Request) -> Response:
        if (refused := self._wrong_host(request)) is not None:
            return refused
        key = request.query_params.get("key", "")
        try:
            grant_request, session = self.requests.open_page(request.path_params["request_id"], key)
        except LinkProblem as problem:
            return _page("This link does not work", status=403, problem=str(problem))
        response = self._form(grant_request)
        response.set_cookie(
            COOKIE,
            session,
            path=f"/grant/{grant_request.request_id}",
            httponly=True,
            samesite="strict",
        )
        return response

    async def decide(self, request: Request) -> Response:
        if (refused := self._wrong_host(request) or self._cross_site(request)) is not None:
            return refused
        if int(request.headers.get("content-length") or MAX_FORM_BYTES + 1) > MAX_FORM_BYTES:
            return _page("Nothing was changed", status=413, problem="The form was too large.")
        form = await request.form()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        try:
            grant_request = self.requests.session_request(
                request.path_params["request_id"],
                request.cookies.get(COOKIE, ""),
                fields.get("csrf"),
            )
        except LinkProblem as problem:
            return _page("Nothing was changed", status=403, problem=str(problem))
        # The vault's writes wait for a lock; not on the loop that also serves Secret Manager.
        return await anyio.to_thread.run_sync(self._decided, grant_request, fields)

    def _decided(self, grant_request: GrantRequest, fields: dict[str, str]) -> Response:
        if fields.get("action") == "deny":
            try:
                self.requests.decide(grant_request, "denied")
            except LinkProblem as problem:
                return _page("Nothing was changed", status=409, problem=str(problem))
            self._record(grant_request, "denied")
            return _page(
                "Denied",
                done=f"{shown(grant_request.client)} does not get {grant_request.variable!r}. "
                "You can close this page.",
            )
        try:
            approvable(self.vault, grant_request.agent_id, grant_request.variable)
            secret = chosen_secret(
                self.vault,
                fields.get("secret", ""),
                fields.get("new_name", ""),
                fields.get("new_value", ""),
            )
            self.vault.grant(  # and the request granted, in one transaction
                self.vault.local_user_id,
                grant_request.agent_id,
                grant_request.variable,
                secret,
                deciding=grant_request.request_id,
            )
        except VaultError as error:
            if (outcome := self.requests.outcome(grant_request)) is not None:
                already = f"This request was already {outcome}; nothing was granted."
                return _page("Nothing was granted", status=409, problem=already)
            return self._form(grant_request, problem=f"Not granted: {error}.", status=400)
        self.requests.decide(grant_request, "granted", recorded=True)
        self._record(grant_request, "granted", subject=secret)
        revoke = command("local", "revoke", grant_request.agent_id, grant_request.variable)
        return _page(
            "Granted",
            done=f"The agent {grant_request.agent_id!r} may now use {grant_request.variable!r} "
            f"(secret {secret!r}). {shown(grant_request.client)} goes on by itself; you can close "
            f"this page. Revoke it with `{revoke}`.",
        )

    def stylesheet(self, request: Request) -> Response:
        if (refused := self._wrong_host(request)) is not None:
            return refused
        return Response(STYLESHEET.read_bytes(), media_type="text/css", headers=SECURITY_HEADERS)

    def _form(
        self, grant_request: GrantRequest, *, problem: str | None = None, status: int = 200
    ) -> Response:
        return _page(
            "Grant a secret to an agent",
            status=status,
            problem=problem,
            request=grant_request,
            secrets=self.vault.secrets(),
            vault=str(self.vault.home),
        )

    def _record(self, grant_request: GrantRequest, outcome: str, subject: str = "") -> None:
        self.vault.record(
            "grant_page",
            outcome,
            client_id=grant_request.agent_id,
            user_id=self.vault.local_user_id,
            subject=f"{grant_request.variable} {subject}".strip(),
        )

    def _wrong_host(self, request: Request) -> Response | None:
        if self.guard.right_host(request):
            return None
        return _page(
            "Wrong address",
            status=421,
            problem="This page answers only at the address piper-mcp printed (127.0.0.1).",
        )

    def _cross_site(self, request: Request) -> Response | None:
        if self.guard.same_origin(request):
            return None
        return _page(
            "Nothing was changed",
            status=403,
            problem="A decision is taken only from this page itself, not from another site.",
        )


def _page(title: str, *, status: int = 200, **context: Any) -> Response:
    html = _pages.get_template("grant.html").render(title=title, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
