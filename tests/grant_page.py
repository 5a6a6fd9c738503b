"""What a person does on the local grant page, done by an HTTP client as their browser."""

from __future__ import annotations

import re

import httpx


async def open_and_choose(url: str, *, action: str = "grant", **choice: str) -> httpx.Response:
    """What a person does in the browser: open the link, choose, press the button."""
    origin = re.match(r"https?://[^/]+", url)
    assert origin is not None
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url)
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "action": action, **choice}
        path = url.split("?", 1)[0]
        return await browser.post(path, data=form, headers={"Origin": origin.group(0)})
