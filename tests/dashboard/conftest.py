"""The dashboard of a seeded vault, in-process, and a browser logged in to it.

The browser is Starlette's `TestClient` at the address the dashboard believes it is
served at (`ORIGIN`, and the pages' path under it: `Dashboard.pages`), so its Host
header is the right one; nothing listens there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from piper_mcp.local.dashboard.app import Dashboard
from piper_mcp.local.dashboard.sessions import Sessions
from piper_mcp.local.vault import Vault
from tests.dashboard import act, log_in, notice_of, seeded_vault

ORIGIN = "http://127.0.0.1:8765"


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    vault = seeded_vault(tmp_path / "piper-home")
    yield vault
    vault.close()


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    """The MCP server's audit trail; absent until a test writes it."""
    return tmp_path / "audit.jsonl"


@pytest.fixture
def dashboard(vault: Vault, audit_path: Path) -> Dashboard:
    return Dashboard(vault, ORIGIN, audit_path, Sessions())


@pytest.fixture
def client(dashboard: Dashboard) -> Iterator[TestClient]:
    """A browser that has not logged in."""
    with TestClient(dashboard.asgi, base_url=dashboard.pages) as client:
        yield client


@dataclass
class Browser:
    """The user's browser after the login link: its client and its session's CSRF token."""

    client: TestClient
    csrf: str
    pages: str  # `Dashboard.pages`

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def act(self, path: str, **fields: str) -> httpx.Response:
        """Post a form of the dashboard's pages; the redirect it answers with, unfollowed."""
        return act(self.client, self.pages, path, self.csrf, **fields)

    def act_and_see(self, path: str, **fields: str) -> tuple[str | None, httpx.Response]:
        """Post a form and open the page it leads back to: (its notice, that page)."""
        answer = self.act(path, **fields)
        assert answer.status_code == 303, answer.text
        page = self.get(answer.headers["location"])
        assert page.status_code == 200
        return notice_of(page.text), page


@pytest.fixture
def browser(client: TestClient, dashboard: Dashboard) -> Browser:
    return Browser(client, log_in(client, dashboard.login_url), dashboard.pages)
