"""Issue 9.10: deeply nested JSON is a malformed body (400), never a 500 or a traceback."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.cli.conftest import Cli, Serving, cli, cli_env, piper_home, serve_local  # noqa: F401

FUNCTIONS = [
    "/piper-resolve-variable-mapping",
    "/getscopedgcpcredentials",
    "/piper-exchange-sts-for-secret",
]


@pytest.mark.parametrize("shape", ["[" * 60_000, '{"a":' * 10_000 + "1" + "}" * 10_000])
def test_nested_bodies_get_a_400_and_the_backend_keeps_serving(
    cli: Cli,  # noqa: F811
    serve_local: Callable[..., Serving],  # noqa: F811
    shape: str,
) -> None:
    cli("local", "init")
    serving = serve_local()
    base = serving.info["url"]
    for path in FUNCTIONS:
        answer = httpx.post(
            f"{base}{path}", content=shape, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
    link = httpx.get(serving.info["link_url"])
    assert link.status_code == 200  # still serving
    code, stderr = serving.stop()
    assert code == 0 and "Traceback" not in stderr and "RecursionError" not in stderr
