"""A real Chromium for end-to-end tests of piper-mcp's web pages: Debian's, driven by Playwright.

- `browser`: Debian's `chromium` (/usr/bin/chromium), headless, launched once for the
  tests in this folder with a fresh temporary profile; Playwright's own browser
  download is never used. Without /usr/bin/chromium the tests are skipped (`.ci/run`
  installs it, so CI runs them).
- `page`: a new browser context and page per test (no cookies carried over); every
  action, wait and `expect(...)` gives up after 15 s.
- `screenshot(page, name)`: saves a full-page PNG as
  `.pytest-screenshots/<test>-<name>.png` under the repository root, overwriting the
  last run's; the files saved are listed at the end of pytest's output (from the test's
  `screenshot` property, which also reaches JUnit XML).
Every test here is marked `browser` (leave them out with `-m 'not browser'`).

Playwright's sync API runs its asyncio loop in the test thread and keeps it marked
as running while the browser is open: tests here are plain functions, not anyio
ones, and run async clients with `tests.browser.in_a_thread`. That is also why
`browser` is scoped to this package, not the session: it is closed before the rest
of the suite's async tests run in the same thread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from piper_mcp.local.dashboard import command
from piper_mcp.local.dashboard.command import RunningDashboard
from piper_mcp.local.vault import Vault
from tests.browser import Screenshot

HERE = Path(__file__).parent
CHROMIUM = Path("/usr/bin/chromium")
# Headless, as root (no sandbox), and no traffic but the tests' own: no update,
# sync, QUIC or background requests to the internet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)  # `expect(...)` waits as long as actions do


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no {CHROMIUM}: install Debian's chromium (`apt-get install chromium`, "
            "as .ci/run does) to run the browser tests"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, record_property: Callable[..., None]) -> Screenshot:
    folder = request.config.rootpath / ".pytest-screenshots"

    def save(page: Page, name: str, *, full_page: bool = True) -> Path:
        path = folder / re.sub(r"[^\w.-]+", "-", f"{request.node.name}-{name}.png")
        page.screenshot(path=path, full_page=full_page)
        record_property("screenshot", str(path))
        print(f"screenshot: {path}")
        return path

    return save


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    """A new vault in `tmp_path / "piper-home"` (a test file may fill it, by its own `vault`)."""
    vault, _ = Vault.init(tmp_path / "piper-home")
    yield vault
    vault.close()


@pytest.fixture
def running(vault: Vault) -> Iterator[RunningDashboard]:
    """The dashboard of `vault` on a free loopback port, as `local dashboard` starts it."""
    served = command.start(vault, 0)
    yield served
    served.stop()
