"""What every local Piper web page checks and sends: its own host, its own origin, strict headers.

The grant page and the dashboard are meant for one person's browser on this machine:
- a request must name this server in its Host header (a DNS-rebinding page names its own);
- a change must come from this origin: the Origin header, and Sec-Fetch-Site where the
  browser sends it (another site's form, even one posted at 127.0.0.1, is refused);
- every answer forbids framing and caching, sends a referrer only to itself, under a
  Content-Security-Policy that lets the page load only its own stylesheet (and, for the
  dashboard, its own script). (`no-referrer` would be stricter, but Chromium then posts
  forms with `Origin: null`, which the origin check refuses.)
"""

from __future__ import annotations

from starlette.requests import Request

_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer makes Chromium post forms with Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_POLICY = "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; "


def security_headers(*, scripts: bool = False) -> dict[str, str]:
    """The headers of every answer; `scripts`: the page may run its own script file and
    fetch from its own origin (nothing inline, nothing from elsewhere)."""
    own = "script-src 'self'; connect-src 'self'; " if scripts else ""
    return {"Content-Security-Policy": f"{_POLICY}{own}base-uri 'none'", **_HEADERS}


class PageGuard:
    """The Host and Origin checks of a page served at `origin` (`http://127.0.0.1:PORT`),
    which also answers as `localhost` on the same port."""

    def __init__(self, origin: str) -> None:
        port = origin.rsplit(":", 1)[1]
        self.hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})
        self.origins = frozenset(f"http://{host}" for host in self.hosts)

    def right_host(self, request: Request) -> bool:
        return request.headers.get("host", "") in self.hosts

    def same_origin(self, request: Request) -> bool:
        """Whether a change was posted by a page of this server itself."""
        fetched_from = request.headers.get("sec-fetch-site", "same-origin")
        return request.headers.get("origin") in self.origins and fetched_from == "same-origin"
