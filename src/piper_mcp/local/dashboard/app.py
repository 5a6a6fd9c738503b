"""The dashboard's pages and actions over one vault, for the browser that logged in.

Four pages (overview, grants, secrets, activity), each action a form posted to its
own route and answered with a redirect back to its page (post/redirect/get), which
then says what was done. Every request must name this server (Host); every page
needs the session cookie; every action also needs this origin and the session's
CSRF token (`page_guard`, `sessions`). Each action is one `piper-mcp local` command
(README lists them); the vault's writes run off the event loop.

What each action does to the vault: `actions`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router

from piper_mcp.invocation import command
from piper_mcp.local.dashboard import activity, chart
from piper_mcp.local.dashboard.actions import Action, FormActions
from piper_mcp.local.dashboard.activity import Trails
from piper_mcp.local.dashboard.sessions import (
    COOKIE,
    SESSION_LIFETIME,
    LoginRefused,
    Session,
    Sessions,
)
from piper_mcp.local.errors import VaultError
from piper_mcp.local.page_guard import PageGuard, security_headers
from piper_mcp.local.running import running
from piper_mcp.local.storage import storage_error
from piper_mcp.local.vault import Vault
from piper_mcp.piper.names import normalize_variable_name
from piper_mcp.printable import shown

PAGES = Path(__file__).parent.parent / "pages"
ASSETS = {"piper.css": "text/css", "dashboard.js": "text/javascript"}
MAX_FORM_BYTES = 65_536
HEADERS = security_headers(scripts=True)
# Where each page is, as the navigation names it.
NAVIGATION = (
    ("/", "Overview"),
    ("/grants", "Grants"),
    ("/secrets", "Secrets"),
    ("/activity", "Activity"),
)

_templates = Environment(
    loader=PackageLoader("piper_mcp.local", "pages"),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)
_templates.filters["shown"] = shown
_templates.filters["when"] = lambda at: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
_templates.filters["hosts"] = lambda rule: ", ".join(json.loads(rule)["hosts"]) if rule else ""


class Refused(Exception):
    """A request the dashboard will not serve; `response` says why."""

    def __init__(self, response: Response) -> None:
        self.response = response


class Dashboard:
    """The dashboard app (`asgi`) for `vault`, served at `origin` (`http://127.0.0.1:PORT`).

    `audit_path`: the MCP server's audit trail, read for the activity page.
    """

    def __init__(self, vault: Vault, origin: str, audit_path: Path, sessions: Sessions) -> None:
        self.vault = vault
        self.audit_path = audit_path
        self.sessions = sessions
        self.guard = PageGuard(origin)
        # Every page lives under a path no other server knows: the browser keeps the session
        # cookie for this path only, and cookies are not kept apart by port (any server on
        # 127.0.0.1 would receive it otherwise), nor are two dashboards' sessions.
        self.base = f"/dashboard-{secrets.token_urlsafe(16)}"
        self.pages = f"{origin}{self.base}"
        self.login_url = f"{self.pages}/login?token={sessions.login_token}"
        self._read_trails: Trails | None = None
        routes = [
            Route("/login", self.log_in, methods=["GET"]),
            Route("/", self._page("overview.html", self.overview), methods=["GET"]),
            Route("/grants", self._page("grants.html", self.grants_page), methods=["GET"]),
            Route("/secrets", self._page("secrets.html", self.secrets_page), methods=["GET"]),
            Route("/activity", self._page("activity.html", self.activity), methods=["GET"]),
            Route("/changes", self.changes, methods=["GET"]),
            Route("/assets/{name}", self.asset, methods=["GET"]),
        ]
        actions = FormActions(vault)
        for path, (back, action) in actions.routes().items():
            routes.append(Route(path, self._action(back, action), methods=["POST"]))
        self.asgi = Starlette(
            routes=[Mount(self.base, app=Router(routes, redirect_slashes=False))],
            exception_handlers={404: self._elsewhere, 405: self._elsewhere},
        )
        self.asgi.router.redirect_slashes = False  # a redirect would skip the Host check
        self.login_file: Path | None = None  # the browser's way to the link, if one was opened

    # --- the way in ---

    def log_in(self, request: Request) -> Response:
        """Spend the link's token for a session cookie, then go on to the overview.

        Not a redirect: a page of this origin moves on, so the SameSite=Strict cookie goes
        with it even when the link came from another site or a file (`show_login`).
        """
        if request.method != "GET":  # a HEAD (a link previewer) must not spend the link
            return self._refusal("Not allowed", "Open the login link in a browser.", 405)
        try:
            self._check_host(request)
            session_id = self.sessions.log_in(request.query_params.get("token", ""))
        except Refused as refused:
            return refused.response
        except LoginRefused as refusal:
            return self._refusal("Not logged in", str(refusal), 403)
        if self.login_file is not None:
            self.login_file.unlink(missing_ok=True)
        response = _html("logged_in.html", {"base": self.base})
        response.set_cookie(
            COOKIE,
            session_id,
            max_age=int(SESSION_LIFETIME),
            path=self.base,
            httponly=True,
            samesite="strict",
        )
        return response

    def _session(self, request: Request) -> Session:
        self._check_host(request)
        # Every cookie of that name: another page on 127.0.0.1 may have planted one with a
        # broader path, and the request then carries both.
        session = next(filter(None, map(self.sessions.find, _cookies(request, COOKIE))), None)
        if session is None:
            raise Refused(
                self._refusal(
                    "Log in first",
                    "Open the login link that `"
                    + command("local", "dashboard")
                    + "` printed when it started. Each link works once; start the dashboard "
                    "again for a new one.",
                    401,
                )
            )
        return session

    def _check_host(self, request: Request) -> None:
        if not self.guard.right_host(request):
            raise Refused(
                self._refusal(
                    "Wrong address",
                    "The dashboard answers only at the address it printed (127.0.0.1).",
                    421,
                )
            )

    def _elsewhere(self, request: Request, error: Exception) -> Response:
        """Unknown paths and methods: the same checks and headers as every page."""
        try:
            self._check_host(request)
        except Refused as refused:
            return refused.response
        if getattr(error, "status_code", 404) == 405:
            return self._refusal("Not allowed", "This page does not take that method.", 405)
        return self._refusal("Not found", "There is no such page here; start at the overview.", 404)

    # --- pages ---

    def _page(
        self, template: str, context: Callable[[Request], dict[str, Any]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            try:
                session = self._session(request)
            except Refused as refused:
                return refused.response
            # Read before the data: a change in between then shows on the next poll.
            state = await anyio.to_thread.run_sync(self._state, request.url.path)
            data = await anyio.to_thread.run_sync(context, request)
            return _html(
                template,
                data
                | {
                    "session": session,
                    "notice": session.take_notice(),
                    "state": state,
                    "vault": str(self.vault.home),
                    "navigation": NAVIGATION,
                    "base": self.base,
                    "here": request.url.path,
                    "again": request.url.path
                    + (f"?{request.url.query}" if request.url.query else ""),
                },
            )

        return page

    def overview(self, request: Request) -> dict[str, Any]:
        agents = self.vault.agents()
        grants = self.vault.grants(self.vault.local_user_id)
        variables = sorted({v for agent in agents for v in agent.variables}, key=str.lower)
        granted = {(g.client_id, g.variable): g for g in grants}
        matrix = [
            (
                agent,
                [
                    (
                        granted.get((agent.client_id, normalize_variable_name(variable))),
                        variable in agent.variables,
                    )
                    for variable in variables
                ],
            )
            for agent in agents
        ]
        return {
            "agents": agents,
            "secrets": self.vault.secrets(),
            "variables": variables,
            "matrix": matrix,
            "running": running(self.vault.home),
            "waiting": len(self.vault.grant_requests()),
        }

    def grants_page(self, request: Request) -> dict[str, Any]:
        return {
            "requests": self.vault.grant_requests(),
            "grants": self.vault.grants(self.vault.local_user_id),
            "agents": self.vault.agents(),
            "secrets": self.vault.secrets(),
        }

    def secrets_page(self, request: Request) -> dict[str, Any]:
        grants = self.vault.grants(self.vault.local_user_id)
        return {
            "secrets": self.vault.secrets(),
            "used_by": {
                secret.name: [g for g in grants if g.credential_id == secret.secret_id]
                for secret in self.vault.secrets()
            },
        }

    def activity(self, request: Request) -> dict[str, Any]:
        filters = activity.Filters.from_query(request.query_params)
        trails = self._trails()
        events, since = activity.timeline(trails.server, trails.backend, filters)
        everything = trails.server + trails.backend
        return {
            "filters": filters,
            "windows": list(activity.WINDOWS),
            "tones": activity.TONES,
            "agents": sorted({e.agent for e in everything if e.agent}),
            "variables": sorted({e.variable for e in everything if e.variable}),
            "charts": chart.charts(events, since),
            "chart": chart,
            "last": list(reversed(events[-50:])),
            "count": len(events),
            "audit_path": str(self.audit_path),
            "audit_problem": trails.problem,
            "skipped": trails.skipped,
        }

    def _trails(self) -> Trails:
        """Both audit trails as events, read again only when either changed."""
        from piper_mcp.server.audit import AuditError, AuditTrail, RecentEntries

        state = self._state("/activity")
        if self._read_trails is not None and self._read_trails.state == state:
            return self._read_trails
        problem = None
        try:
            entries = AuditTrail(self.audit_path).recent(activity.ENTRIES_READ)
        except AuditError as error:
            entries, problem = RecentEntries(), str(error)
        self._read_trails = activity.Trails(
            state,
            activity.from_server(entries),
            activity.from_vault(self.vault.audit(activity.ENTRIES_READ)),
            problem,
            entries.skipped,
        )
        return self._read_trails

    async def changes(self, request: Request) -> Response:
        """What the page polls: a value that changes when the vault or the audit trail does."""
        try:
            self._session(request)
        except Refused as refused:
            return refused.response
        page = request.query_params.get("page", "")
        state = await anyio.to_thread.run_sync(self._state, page)
        return JSONResponse({"state": state}, headers=HEADERS)

    def _state(self, page: str) -> str:
        """What `page` shows, as a value that changes with it: the vault's contents, and for
        the activity page both audit trails (a call from an agent redraws only that page)."""
        state = self.vault.fingerprint()
        if page.removeprefix(self.base) != "/activity":
            return state
        try:
            trail = self.audit_path.stat()
            audited = f"{trail.st_size}/{trail.st_mtime_ns}"
        except OSError:
            audited = "-"
        return f"{state}|{self.vault.audit_mark()}|{audited}"

    def asset(self, request: Request) -> Response:
        try:
            self._check_host(request)
        except Refused as refused:
            return refused.response
        name = request.path_params["name"]
        if name not in ASSETS:
            return self._refusal("Not found", "There is no such file.", 404)
        return Response((PAGES / name).read_bytes(), media_type=ASSETS[name], headers=HEADERS)

    # --- actions ---

    def _action(self, back: str, action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def act(request: Request) -> Response:
            try:
                session = self._session(request)
                fields = await self._form(request, session)
            except Refused as refused:
                return refused.response
            try:
                session.notice = ("done", await anyio.to_thread.run_sync(action, fields))
            except VaultError as error:
                session.notice = ("problem", _sentence(f"Nothing was changed: {error}"))
            except sqlite3.Error as error:  # the disk or another process's lock, mid-action
                failure = storage_error(error, self.vault.database)
                session.notice = ("problem", _sentence(f"Nothing was changed: {failure}"))
            return RedirectResponse(f"{self.pages}{back}", status_code=303, headers=HEADERS)

        return act

    async def _form(self, request: Request, session: Session) -> dict[str, str]:
        if not self.guard.same_origin(request):
            raise Refused(
                self._refusal(
                    "Nothing was changed",
                    "Changes are made only from the dashboard's own pages, not from another site.",
                    403,
                )
            )
        if int(request.headers.get("content-length") or MAX_FORM_BYTES + 1) > MAX_FORM_BYTES:
            raise Refused(self._refusal("Nothing was changed", "The form was too large.", 413))
        form = await request.form()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        if not session.csrf_matches(fields.get("csrf")):
            raise Refused(
                self._refusal(
                    "Nothing was changed",
                    "The form was not one this dashboard showed you (its CSRF token did not "
                    "match). Reload the page and try again.",
                    403,
                )
            )
        return fields

    def _refusal(self, title: str, problem: str, status: int) -> Response:
        context = {"title": title, "problem": problem, "base": self.base}
        return _html("refused.html", context, status)


def _html(template: str, context: dict[str, Any], status: int = 200) -> Response:
    html = _templates.get_template(f"dashboard/{template}").render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _cookies(request: Request, name: str) -> list[str]:
    """Every value of cookie `name` the request carries (Starlette keeps only one)."""
    values = []
    for pair in request.headers.get("cookie", "").split(";"):
        key, _, value = pair.strip().partition("=")
        if key == name and value:
            values.append(value)
    return values


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else f"{text}."
