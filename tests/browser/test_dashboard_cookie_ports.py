"""Another server on 127.0.0.1 that the logged-in browser visits: a model's app preview,
a container's forwarded port. Browsers keep cookies apart by host and path, not by port,
so the dashboard's session cookie is scoped to the dashboard's own unguessable path.

In Chromium: that server receives no session cookie, and a cookie it plants for every
path of 127.0.0.1 does not log the user out of the dashboard.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from piper_mcp.local.dashboard.command import RunningDashboard
from piper_mcp.local.dashboard.sessions import COOKIE


class OtherServer(ThreadingHTTPServer):
    """A page on another port of 127.0.0.1 that keeps every Cookie header it is sent,
    and tries to plant a session cookie of its own for every path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.cookies: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: OtherServer

    def do_GET(self) -> None:
        self.server.cookies.append(self.headers.get("Cookie", ""))
        body = b"<!doctype html><title>A preview</title><h1>A preview</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Set-Cookie", f"{COOKIE}=planted-by-another-server; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[OtherServer]:
    server = OtherServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_another_port_gets_no_session_and_cannot_log_the_user_out(
    running: RunningDashboard, other_server: OtherServer, page: Page
) -> None:
    dashboard = running.dashboard
    page.goto(dashboard.login_url)
    expect(page.locator("h1")).to_have_text("Overview")

    [session] = [c["value"] for c in page.context.cookies() if c["name"] == COOKIE]
    page.goto(other_server.url)
    expect(page.locator("h1")).to_have_text("A preview")
    assert other_server.cookies  # the page, and maybe its icon after the planted cookie
    assert not any(session in sent for sent in other_server.cookies)

    page.goto(f"{dashboard.pages}/grants")  # the planted cookie goes along too
    expect(page.locator("h1")).to_have_text("Grants")
    cookies = {(c["name"], c["path"], c["value"]) for c in page.context.cookies()}
    assert (COOKIE, "/", "planted-by-another-server") in cookies
