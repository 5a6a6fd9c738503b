"""The local dashboard against everyone but the browser that opened its login link.

Over real loopback HTTP: other local processes (no link, a guessed or replayed one,
another session's token), other sites in the user's browser (cross-site forms, DNS
rebinding, framing), floods (an oversized form). Each refusal leaves the vault as it
was. Canary values stored through the pages appear in no page, header, notice, audit
row, file beside the vault, log record or output of the real `piper-mcp local
dashboard`; names with markup are shown as text.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from markupsafe import escape

from piper_mcp.local.dashboard.app import Dashboard
from piper_mcp.local.dashboard.command import show_login, start
from piper_mcp.local.dashboard.sessions import COOKIE, Sessions
from piper_mcp.local.vault import Vault
from piper_mcp.server.audit import AuditTrail
from tests.conftest import LoopbackPool
from tests.dashboard import (
    AGENT,
    OTHER_AGENT,
    SECRET,
    SECRET_VALUE,
    VARIABLE,
    act,
    csrf_of,
    log_in,
    notice_of,
    seeded_vault,
    value_of,
    vault_state,
    waiting_request,
)

# ASCII letters, digits and dashes: the same in every escaping, URL-encoding included.
STORED_CANARY = "sk-canary-dashboard-stored-5e1f0b93"
APPROVED_CANARY = "sk-canary-dashboard-approved-c47d2a18"
REFUSED_CANARY = "sk-canary-dashboard-refused-8b6e05f1"
CANARIES = (STORED_CANARY, APPROVED_CANARY, REFUSED_CANARY, SECRET_VALUE)
MARKUP_NAME = "<script>alert(1)</script>"
MARKUP_CLIENT = '<img src=x onerror="alert(2)">Evil Client'
PAGES = ["/", "/grants", "/secrets", "/activity"]
ACTIONS = [
    "/secrets/set",
    "/secrets/remove",
    "/grants/grant",
    "/grants/revoke",
    "/requests/approve",
    "/requests/deny",
]
# What every action's form could carry, so a refusal is a refusal and not a missing field.
EVERY_FIELD = {
    "name": "Stolen",
    "value": REFUSED_CANARY,
    "agent": AGENT,
    "variable": VARIABLE,
    "secret": SECRET,
    "request": "request-1",
}
SIOCGIFADDR = 0x8915


@dataclass
class Served:
    """One dashboard on a loopback port, for the vault in `home`."""

    dashboard: Dashboard
    origin: str
    vault: Vault

    @property
    def port(self) -> int:
        return int(self.origin.rsplit(":", 1)[1])

    @property
    def pages(self) -> str:
        """Where the pages are: the origin and the dashboard's own path under it."""
        return self.dashboard.pages


@dataclass
class Recorder:
    """Every answer the clients it made received: to search them all for canaries."""

    answers: list[httpx.Response] = field(default_factory=list)
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self) -> httpx.Client:
        made = httpx.Client(event_hooks={"response": [self._keep]}, timeout=30)
        self.clients.append(made)
        return made

    def _keep(self, answer: httpx.Response) -> None:
        answer.read()
        self.answers.append(answer)

    def close(self) -> None:
        for made in self.clients:
            made.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "piper-home"
    monkeypatch.setenv("PIPER_HOME", str(home))
    return home


@pytest.fixture
def vault(home: Path) -> Iterator[Vault]:
    vault = seeded_vault(home)
    yield vault
    vault.close()


@pytest.fixture
def serve_dashboard(
    vault: Vault, home: Path, loopback_pool: LoopbackPool
) -> Iterator[Callable[[], Served]]:
    """`serve_dashboard()`: a new dashboard (its own login link) on a pooled loopback port."""
    taken = []

    def serve() -> Served:
        loopback = loopback_pool.take(None)
        taken.append(loopback)
        dashboard = Dashboard(vault, loopback.url, home / "audit.jsonl", Sessions())
        loopback.app = dashboard.asgi
        return Served(dashboard, loopback.url, vault)

    yield serve
    for loopback in taken:
        loopback_pool.give_back(loopback)


@pytest.fixture
def served(serve_dashboard: Callable[[], Served]) -> Served:
    return serve_dashboard()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


def holds(vault: Vault, name: str, value: str) -> bool:
    """Whether secret `name` has `value` (a bool, so a failing test prints no value)."""
    return value_of(vault, name) == value


def policy(answer: httpx.Response) -> dict[str, list[str]]:
    directives = answer.headers["content-security-policy"].split(";")
    return {d.split()[0]: d.split()[1:] for d in directives if d.strip()}


def refuses_connections(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, asked of each interface (Linux;
    elsewhere none are looked for, and the bound address alone is checked)."""
    if sys.platform != "linux":
        return []
    import fcntl

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, request)
            except OSError:
                continue  # an interface without an IPv4 address
            address = socket.inet_ntoa(answer[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                found.append(address)
    return found


def leaks(text: str) -> list[str]:
    """The canaries `text` contains (by index, so a failure does not print them)."""
    return [f"canary {index}" for index, canary in enumerate(CANARIES) if canary in text]


def files_leak(home: Path) -> list[str]:
    """The files beside the vault (the database, its log, the audit trail) holding a canary."""
    found = []
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [
                f"{path.name}: canary {index}"
                for index, canary in enumerate(CANARIES)
                if canary.encode() in data
            ]
    return found


def audit_rows_leak(vault: Vault) -> list[str]:
    return leaks(repr(vault.audit(10_000)))


def answers_leak(recorder: Recorder) -> list[str]:
    found = []
    for answer in recorder.answers:
        headers = "\n".join(f"{name}: {value}" for name, value in answer.headers.multi_items())
        found += [f"{answer.request.url.path}: {leak}" for leak in leaks(headers + answer.text)]
    return found


def use_the_dashboard(browser: httpx.Client, login_url: str, vault: Vault) -> None:
    """What the user does: log in, store a value, approve a waiting request with a new one,
    try an action that fails with a value typed in (each time reading the page it leads
    back to, and its notice), then look at every page."""
    origin = login_url.split("/login", 1)[0]
    csrf = log_in(browser, login_url)

    def do(path: str, **fields: str) -> str:
        answer = act(browser, origin, path, csrf, **fields)
        assert answer.status_code == 303
        notice = notice_of(browser.get(answer.headers["location"]).text)
        assert notice is not None
        return notice

    assert do("/secrets/set", name="Stripe key", value=STORED_CANARY).startswith("done: ")
    waiting_request(vault)
    approved = do(
        "/requests/approve",
        request="request-1",
        new_name="Ada's database",
        new_value=APPROVED_CANARY,
    )
    assert approved.startswith("done: ")
    refused = do(
        "/grants/grant",
        agent=OTHER_AGENT,
        variable="stripe_key",
        secret="Stripe key",
        new_value=REFUSED_CANARY,
    )
    assert refused.startswith("problem: ")
    for page in [*PAGES, "/activity?window=week&outcome=ok", "/changes"]:
        assert browser.get(f"{origin}{page}").status_code == 200
    assert holds(vault, "Stripe key", STORED_CANARY)
    assert holds(vault, "Ada's database", APPROVED_CANARY)


# --- the way in ---


def test_the_users_path_works_so_the_refusals_below_mean_something(
    served: Served, recorder: Recorder
) -> None:
    browser = recorder.client()
    csrf = log_in(browser, served.dashboard.login_url)
    answer = act(browser, served.pages, "/secrets/set", csrf, name="Stolen", value="x-value")
    assert answer.status_code == 303
    assert holds(served.vault, "Stolen", "x-value")


def test_without_the_login_link_nothing_is_readable_or_changed(
    served: Served, recorder: Recorder
) -> None:
    waiting_request(served.vault)
    before = vault_state(served.vault)
    secret = served.vault.find_secret(SECRET)
    assert secret is not None
    other_process = recorder.client()
    for path in [*PAGES, "/changes"]:
        answer = other_process.get(f"{served.pages}{path}")
        assert answer.status_code == 401
        for private in (str(escape(SECRET)), AGENT, secret.secret_id, str(served.vault.home)):
            assert private not in answer.text
    for path in ACTIONS:
        assert act(other_process, served.pages, path, "guessed", **EVERY_FIELD).status_code == 401
    assert vault_state(served.vault) == before


def test_a_wrong_token_opens_nothing(served: Served, recorder: Recorder) -> None:
    other_process = recorder.client()
    real = served.dashboard.sessions.login_token
    almost = real[:-1] + ("B" if real.endswith("A") else "A")
    for token in ("", "guessed", almost):
        answer = other_process.get(f"{served.pages}/login", params={"token": token})
        assert answer.status_code == 403
        assert "set-cookie" not in answer.headers
    assert other_process.get(f"{served.pages}/").status_code == 401


def test_a_used_login_link_opens_nothing_again_in_any_browser(
    served: Served, recorder: Recorder
) -> None:
    user, other_process = recorder.client(), recorder.client()
    log_in(user, served.dashboard.login_url)
    before = vault_state(served.vault)
    for browser in (user, other_process):  # replayed from history, a log, a shoulder
        again = browser.get(served.dashboard.login_url)
        assert again.status_code == 403
        assert "set-cookie" not in again.headers
    assert COOKIE not in other_process.cookies
    assert other_process.get(f"{served.pages}/").status_code == 401
    assert other_process.get(f"{served.pages}/changes").status_code == 401
    assert user.get(f"{served.pages}/").status_code == 200  # the user's session stands
    assert vault_state(served.vault) == before


# --- other sites ---


def test_a_form_posted_from_another_site_changes_nothing(
    served: Served, recorder: Recorder
) -> None:
    """Even with the session cookie and its CSRF token, which another site cannot have."""
    browser = recorder.client()
    csrf = log_in(browser, served.dashboard.login_url)
    waiting_request(served.vault)
    before = vault_state(served.vault)
    another_local_page = f"http://127.0.0.1:{served.port + 1}"
    forged = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": another_local_page, "Sec-Fetch-Site": "same-site"},
        {"Origin": served.origin, "Sec-Fetch-Site": "cross-site"},
        {"Origin": served.origin, "Sec-Fetch-Site": "same-site"},
        {},  # no Origin at all
    ]
    refused = {}
    for path in ACTIONS:
        for headers in forged:
            answer = browser.post(
                f"{served.pages}{path}", data={"csrf": csrf, **EVERY_FIELD}, headers=headers
            )
            refused[path, tuple(headers.items())] = answer.status_code
    assert set(refused.values()) == {403}
    assert vault_state(served.vault) == before


@pytest.mark.parametrize(
    "csrf", [None, "", "wrong", "login-token", "session-id"], ids=lambda csrf: str(csrf)
)
def test_the_right_origin_without_the_sessions_csrf_token_changes_nothing(
    served: Served, recorder: Recorder, csrf: str | None
) -> None:
    browser = recorder.client()
    log_in(browser, served.dashboard.login_url)
    given = {
        "login-token": served.dashboard.sessions.login_token,
        "session-id": browser.cookies[COOKIE],
    }.get(csrf or "", csrf)
    waiting_request(served.vault)
    before = vault_state(served.vault)
    for path in ACTIONS:
        answer = act(browser, served.pages, path, given, **EVERY_FIELD)
        assert answer.status_code == 403
        assert "its CSRF token did not match" in answer.text
    assert vault_state(served.vault) == before


def test_a_csrf_token_beyond_ascii_is_refused_like_any_wrong_one(
    served: Served, recorder: Recorder
) -> None:
    browser = recorder.client()
    log_in(browser, served.dashboard.login_url)
    before = vault_state(served.vault)
    answer = act(browser, served.pages, "/secrets/set", "é", name="Stolen", value="x")
    assert answer.status_code == 403
    assert vault_state(served.vault) == before


def test_one_sessions_csrf_token_does_not_work_with_another_sessions_cookie(
    serve_dashboard: Callable[[], Served], recorder: Recorder
) -> None:
    """Two dashboards of one vault (`local dashboard` twice): each session is its own."""
    first, second = serve_dashboard(), serve_dashboard()
    first_browser, second_browser = recorder.client(), recorder.client()
    first_csrf = log_in(first_browser, first.dashboard.login_url)
    second_csrf = log_in(second_browser, second.dashboard.login_url)
    assert first_csrf != second_csrf
    before = vault_state(first.vault)
    for path in ACTIONS:
        crossed = act(second_browser, second.pages, path, first_csrf, **EVERY_FIELD)
        assert crossed.status_code == 403
        unknown = act(second_browser, first.pages, path, second_csrf, **EVERY_FIELD)
        assert unknown.status_code == 401  # the first dashboard never issued that cookie
    assert vault_state(first.vault) == before


def test_a_rebound_host_name_is_refused_on_every_route(served: Served, recorder: Recorder) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, and the browser names it in Host."""
    hosts = [
        f"evil.example:{served.port}",
        "evil.example",
        f"127.0.0.1:{served.port + 1}",
        f"127.0.0.1.evil.example:{served.port}",
    ]
    browser = recorder.client()
    statuses = {}
    for host in hosts:  # before the user logs in: the link must survive it
        answer = browser.get(
            served.dashboard.login_url,
            headers={"Host": host, "Connection": "close"},
            follow_redirects=False,
        )
        statuses["/login", host] = answer.status_code
    csrf = log_in(browser, served.dashboard.login_url)
    waiting_request(served.vault)
    before = vault_state(served.vault)
    for host in hosts:
        for path in [*PAGES, "/grants/", "/changes", "/assets/piper.css", "/assets/dashboard.js"]:
            statuses[path, host] = browser.get(
                f"{served.pages}{path}", headers={"Host": host}
            ).status_code
        for path in ACTIONS:
            statuses[path, host] = act(
                browser, served.pages, path, csrf, headers={"Host": host}, **EVERY_FIELD
            ).status_code
    assert statuses == dict.fromkeys(statuses, 421)
    assert vault_state(served.vault) == before


# --- what every answer says about itself ---


def test_every_answer_forbids_framing_and_scripts_from_anywhere_else(
    served: Served, recorder: Recorder
) -> None:
    browser, stranger = recorder.client(), recorder.client()
    origin = served.pages
    stranger.get(f"{origin}/login", params={"token": "wrong"})  # 403
    login = browser.get(served.dashboard.login_url)  # a page that moves on to the overview
    assert login.status_code == 200
    csrf = csrf_of(browser.get(f"{origin}/secrets").text)
    for page in [*PAGES, "/changes", "/assets/piper.css", "/assets/dashboard.js", "/assets/x"]:
        browser.get(f"{origin}{page}")
        stranger.get(f"{origin}{page}")  # 401, or the assets
    act(browser, origin, "/grants/revoke", csrf, agent=AGENT, variable=VARIABLE)  # 303
    act(browser, origin, "/grants/revoke", csrf, headers={"Origin": "https://evil.example"})
    act(browser, origin, "/grants/revoke", "wrong")  # 403
    act(browser, origin, "/secrets/set", csrf, name="big", value="x" * 70_000)  # 413
    browser.get(f"{origin}/", headers={"Host": "evil.example"})  # 421
    statuses = {answer.status_code for answer in recorder.answers}
    assert statuses == {200, 303, 401, 403, 404, 413, 421}
    for answer in recorder.answers:
        directives = policy(answer)
        where = f"{answer.request.method} {answer.request.url.path} {answer.status_code}"
        assert answer.headers["x-frame-options"] == "DENY", where
        assert directives["frame-ancestors"] == ["'none'"], where
        assert directives["default-src"] == ["'none'"], where
        assert directives["script-src"] == ["'self'"], where
        assert "'unsafe-inline'" not in answer.headers["content-security-policy"], where
        assert "'unsafe-eval'" not in answer.headers["content-security-policy"], where
        assert answer.headers["x-content-type-options"] == "nosniff", where
        assert answer.headers["cache-control"] == "no-store", where
        assert answer.headers["referrer-policy"] in ("same-origin", "no-referrer"), where


def test_unknown_paths_and_methods_are_answered_with_the_same_protections(
    served: Served, recorder: Recorder
) -> None:
    browser = recorder.client()
    log_in(browser, served.dashboard.login_url)
    answers = [
        browser.get(f"{served.pages}/no-such-page"),  # 404
        browser.get(f"{served.pages}/secrets/set"),  # 405
        browser.post(f"{served.pages}/", headers={"Origin": served.origin}),  # 405
    ]
    assert [answer.status_code for answer in answers] == [404, 405, 405]
    for answer in answers:
        assert answer.headers.get("x-frame-options") == "DENY", answer.request.url.path
        assert "frame-ancestors 'none'" in answer.headers.get("content-security-policy", "")


def test_the_session_cookie_is_http_only_strict_and_for_the_dashboards_path_only(
    served: Served, recorder: Recorder
) -> None:
    login = recorder.client().get(served.dashboard.login_url)
    [header] = login.headers.get_list("set-cookie")
    cookie = SimpleCookie()
    cookie.load(header)
    morsel = cookie[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    # Its own unguessable path: browsers do not keep cookies apart by port, so with
    # Path=/ every other server on 127.0.0.1 the browser visits would receive it.
    assert morsel["path"] == served.dashboard.base and morsel["path"].startswith("/dashboard-")
    assert len(served.dashboard.base) > 20
    assert morsel["domain"] == ""  # this host only
    assert len(morsel.value) >= 40
    is_the_token = morsel.value == served.dashboard.sessions.login_token
    assert not is_the_token


def test_changes_without_a_session_says_nothing_of_the_vault(
    served: Served, recorder: Recorder
) -> None:
    answer = recorder.client().get(f"{served.pages}/changes")
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "state" not in answer.text
    assert served.vault.fingerprint() not in answer.text


def test_an_oversized_form_is_refused(served: Served, recorder: Recorder) -> None:
    browser = recorder.client()
    csrf = log_in(browser, served.dashboard.login_url)
    before = vault_state(served.vault)
    big = act(browser, served.pages, "/secrets/set", csrf, name="Big", value="x" * 70_000)
    assert big.status_code == 413
    form = f"csrf={csrf}&name=Big&value=small".encode()
    unmeasured = browser.post(  # chunked: no length to check it by
        f"{served.pages}/secrets/set",
        content=iter([form]),
        headers={
            "Origin": served.origin,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert unmeasured.status_code == 413
    assert vault_state(served.vault) == before


def test_the_dashboard_listens_on_loopback_only(vault: Vault, home: Path) -> None:
    running = start(vault, 0)
    try:
        [site] = running.server.sites
        address, port = site.sock.getsockname()
        assert address == "127.0.0.1"
        for other in non_loopback_addresses():
            assert refuses_connections(other, port), other
        assert running.announced is not None and running.announced.exists()
        with httpx.Client() as browser:
            log_in(browser, running.dashboard.login_url)
            overview = browser.get(f"{running.dashboard.pages}/").text
        assert f"<td>local dashboard</td><td>{os.getpid()}</td>" in overview
    finally:
        running.stop()
    assert refuses_connections("127.0.0.1", port)
    assert not running.announced.exists()


class _GraphicalBrowser:
    name = "firefox"


def test_the_login_link_is_not_handed_to_a_browser_on_its_command_line(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every local user can read a process's command line (`ps`, /proc/PID/cmdline): a
    browser started with the link as its argument shows the one-time token to all of them,
    and the first to open it has the session."""
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "get", lambda *_: _GraphicalBrowser())
    monkeypatch.setattr(webbrowser, "open", lambda url, *_, **__: opened.append(url) or True)
    show_login(served.dashboard, open_browser=True)
    assert served.dashboard.login_url in capsys.readouterr().out  # the terminal has it
    assert len(opened) == 1
    handed_over = served.dashboard.sessions.login_token in opened[0]
    assert not handed_over, "the browser's command line carries the login token"


# --- canaries and markup ---


def test_a_stored_value_appears_in_no_page_header_notice_audit_row_file_or_log(
    served: Served, recorder: Recorder, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    AuditTrail(home / "audit.jsonl").record(
        client="Claude", agent=AGENT, variable=VARIABLE, mode="token", outcome="ok"
    )
    use_the_dashboard(recorder.client(), served.dashboard.login_url, served.vault)
    assert answers_leak(recorder) == []
    assert audit_rows_leak(served.vault) == []
    assert files_leak(home) == []
    assert leaks(caplog.text) == []


def test_names_with_markup_are_shown_as_text_on_every_page(
    served: Served, recorder: Recorder, home: Path
) -> None:
    browser = recorder.client()
    origin = served.pages
    csrf = log_in(browser, served.dashboard.login_url)
    act(browser, origin, "/secrets/set", csrf, name=MARKUP_NAME, value="x-value")
    stored_notice = browser.get(f"{origin}/secrets").text
    act(browser, origin, "/grants/grant", csrf, agent=AGENT, variable="x_key", secret=MARKUP_NAME)
    waiting_request(served.vault, client=MARKUP_CLIENT)
    AuditTrail(home / "audit.jsonl").record(
        client=MARKUP_CLIENT, agent=AGENT, variable="x_key", mode="token", outcome="ok"
    )
    pages = {page: browser.get(f"{origin}{page}").text for page in PAGES}
    shown = {
        "/": [MARKUP_NAME],
        "/grants": [MARKUP_NAME, MARKUP_CLIENT],
        "/secrets": [MARKUP_NAME],
        "/activity": [MARKUP_CLIENT],
    }
    for page, text in [*pages.items(), ("notice", stored_notice)]:
        assert MARKUP_NAME not in text, page
        assert MARKUP_CLIENT not in text, page
        assert "<script>" not in text and "<img" not in text, page
        for name in shown.get(page, [MARKUP_NAME]):
            assert str(escape(name)) in text, (page, name)


def test_the_real_command_logs_in_once_keeps_values_out_of_everything_and_stops_on_ctrl_c(
    vault: Vault, home: Path, recorder: Recorder
) -> None:
    stderr_path = home.parent / "dashboard-stderr.log"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "piper_mcp", "local", "dashboard", "--no-browser"],
            env={**os.environ, "PIPER_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        )
    try:
        printed = read_until(process, rb"Stop with Ctrl-C\.")
        found = re.search(r"(http://127\.0\.0\.1:(\d+)/dashboard-[\w-]+)/login\?token=\S+", printed)
        assert found is not None, "no login link printed"
        login_url, origin, port = found.group(0), found.group(1), int(found.group(2))
        announced = home / "running" / f"{process.pid}-local_dashboard.json"
        assert announced.exists()
        browser = recorder.client()
        use_the_dashboard(browser, login_url, vault)
        overview = browser.get(f"{origin}/").text
        assert f"<td>local dashboard</td><td>{process.pid}</td>" in overview
        assert recorder.client().get(login_url).status_code == 403  # replayed elsewhere
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    err = stderr_path.read_text()
    assert process.returncode == 0, err
    assert err.strip().endswith("Stopped.")
    assert refuses_connections("127.0.0.1", port)
    assert not announced.exists()
    assert leaks(printed + out.decode() + err) == []
    assert answers_leak(recorder) == []
    assert audit_rows_leak(vault) == []
    assert files_leak(home) == []


def read_until(process: subprocess.Popen[bytes], pattern: bytes, within: float = 60) -> str:
    """What `process` printed up to `pattern`, read as it comes (no fixed waits)."""
    assert process.stdout is not None
    printed = b""
    deadline = time.monotonic() + within
    while not re.search(pattern, printed):
        left = deadline - time.monotonic()
        assert left > 0, "the dashboard printed no login link in time"
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 4096)
            assert chunk, f"the dashboard exited ({process.wait()}) before printing its link"
            printed += chunk
    return printed.decode()
