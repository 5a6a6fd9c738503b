"""Another site open in the same Chromium, while the person is logged in to the dashboard.

The site is on another loopback port: the same *site* as the dashboard to a browser
(cookies are not kept apart by port, and SameSite=Strict lets them through), so only
the dashboard's own checks stand between it and the vault. It is even given the
dashboard's secret path, which a real one would have to guess. It posts a form that
would remove a secret and frames the dashboard; neither works, and the secret stays.
"""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from piper_mcp.local.dashboard.command import RunningDashboard
from piper_mcp.local.vault import Vault

SECRET = "My OpenAI key"
VALUE = "sk-canary-cross-site-5e1b"


def attacker_site(dashboard: str) -> Starlette:
    """A page that frames the dashboard and, on a click, posts a removal to it."""
    page = f"""<!doctype html>
<title>Cat pictures</title>
<iframe id="framed" src="{dashboard}/secrets" width="600" height="300"></iframe>
<form id="attack" method="post" action="{dashboard}/secrets/remove">
  <input type="hidden" name="name" value="{SECRET}">
  <button>See more cats</button>
</form>"""

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", home)])


def test_another_site_can_neither_post_to_the_dashboard_nor_frame_it(
    page: Page, running: RunningDashboard, vault: Vault, serve: Callable[[object], str]
) -> None:
    vault.put_secret(SECRET, VALUE, owner_user_id=vault.local_user_id)
    dashboard = running.dashboard.pages
    page.goto(running.dashboard.login_url)
    expect(page.locator("main")).to_contain_text(SECRET)  # logged in

    page.goto(serve(attacker_site(dashboard)))
    page.wait_for_load_state("load")
    [_, framed] = page.frames
    assert SECRET not in framed.content()  # the browser refused to show it in the frame

    with page.expect_response(f"{dashboard}/secrets/remove") as answered:
        page.click("text=See more cats")  # a person's click: the cookie goes along
    assert answered.value.status == 403
    assert vault.find_secret(SECRET) is not None  # nothing was removed

    page.goto(f"{dashboard}/secrets")  # the person's own session still works
    expect(page.locator("main")).to_contain_text(SECRET)
