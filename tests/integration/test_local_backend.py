"""The local backend's own answers: bad requests get the protocol's 4xx body, never a 500."""

from __future__ import annotations

import json
import sys

import httpx
import pytest

from piper_mcp.local.server_thread import LocalBackend
from tests.conftest import AGENT_ID, AGENT_SECRET, INSTANCE_ID, OPENAI_VALUE, V1_AGENT_ID

RESOLVE = "/piper-resolve-variable-mapping"
V2_RESOLVE = {"agentClientId": AGENT_ID, "instanceId": INSTANCE_ID, "variableName": "database_url"}


def post(piper: LocalBackend, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(piper.base_url + path, timeout=5, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("request_kwargs", "status", "says"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ({"content": b"[1, 2]", "headers": {"content-type": "application/json"}}, 400, "object"),
        (
            {"content": json.dumps(V2_RESOLVE), "headers": {"content-type": "text/plain"}},
            415,
            "json",
        ),
        ({"json": {**V2_RESOLVE, "extra": 1}}, 400, "extra"),
        ({"json": {"agentClientId": AGENT_ID, "instanceId": INSTANCE_ID}}, 400, "variableName"),
        ({"json": {**V2_RESOLVE, "variableName": 42}}, 400, "variableName"),
        ({"json": {**V2_RESOLVE, "variableName": "x" * 70_000}}, 413, "larger than 65536"),
    ],
)
def test_malformed_requests_get_a_4xx_error_body(
    piper: LocalBackend, request_kwargs: dict[str, object], status: int, says: str
) -> None:
    response = post(piper, RESOLVE, **request_kwargs)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == "invalid_request"
    assert says in body["error_description"]
    assert post(piper, RESOLVE, json=V2_RESOLVE).status_code == 200  # still serving


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"grant_type": "password"}, 400, "invalid_request"),
        (
            {
                "grant_type": "password",
                "client_id": V1_AGENT_ID,
                "client_secret": AGENT_SECRET,
                "audience": "http://x/piper-resolve-variable-mapping",
            },
            400,
            "unsupported_grant_type",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": V1_AGENT_ID,
                "client_secret": AGENT_SECRET,
                "audience": "http://x/elsewhere",
            },
            400,
            "invalid_request",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": AGENT_ID,
                "client_secret": "wrong",
                "audience": "http://x/getscopedgcpcredentials",
            },
            401,
            "invalid_client",
        ),
    ],
)
def test_the_token_endpoint_refuses_with_the_protocols_codes(
    piper: LocalBackend, form: dict[str, str], status: int, code: str
) -> None:
    response = post(piper, "/piper-token-endpoint", data=form)
    assert (response.status_code, response.json()["error"]) == (status, code)


def test_a_token_for_one_function_does_not_open_another(piper: LocalBackend) -> None:
    token = post(
        piper,
        "/piper-token-endpoint",
        data={
            "grant_type": "client_credentials",
            "client_id": V1_AGENT_ID,
            "client_secret": AGENT_SECRET,
            "audience": piper.base_url + "/getscopedgcpcredentials",
            "piper_link_instance_id": INSTANCE_ID,
        },
    ).json()["access_token"]
    response = post(
        piper,
        RESOLVE,
        json={"variableName": "database_url"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_token")


def test_secret_manager_needs_a_bearer_and_names_google_statuses(piper: LocalBackend) -> None:
    secret = f"projects/{piper.project_id}/secrets/cred-openai-ada/versions/latest"
    url = f"{piper.base_url}/v1/{secret}:access"
    missing = httpx.get(url)
    assert missing.status_code == 401 and missing.json()["error"]["status"] == "UNAUTHENTICATED"
    forged = httpx.get(url, headers={"authorization": "Bearer piper-sts-forged"})
    assert forged.status_code == 403 and forged.json()["error"]["status"] == "PERMISSION_DENIED"
    assert OPENAI_VALUE not in forged.text


def test_link_answers_only_its_user_context(piper: LocalBackend) -> None:
    assert piper.link_url is not None
    assert httpx.get(piper.link_url).json() == {"instanceId": INSTANCE_ID}


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/no-such-function", 404, "not_found"),
        ("GET", RESOLVE, 405, "invalid_request"),
        ("POST", "/v1/projects/p/secrets/s/versions/latest:access", 405, "invalid_request"),
    ],
)
def test_unknown_routes_and_methods_get_the_protocols_error_body(
    piper: LocalBackend, method: str, path: str, status: int, code: str
) -> None:
    response = httpx.request(method, piper.base_url + path)
    assert response.status_code == status
    assert response.json()["error"] == code


def test_a_form_field_given_twice_is_refused(piper: LocalBackend) -> None:
    response = post(
        piper,
        "/piper-token-endpoint",
        content=b"grant_type=client_credentials&client_id=a&client_id=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "given more than once" in response.json()["error_description"]


@pytest.mark.anyio
async def test_link_refuses_callers_from_other_machines() -> None:
    from piper_mcp.local.link import link_app

    app = link_app(INSTANCE_ID)
    for client, status in ((("192.0.2.7", 50000), 403), (("127.0.0.1", 50000), 200)):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://link") as http:
            response = await http.get("/piper-link-context")
        assert response.status_code == status
        assert (INSTANCE_ID in response.text) is (status == 200)


def test_an_agent_not_allowed_v2_is_told_the_command_as_the_operator_runs_it(
    piper: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.5: `local serve` started as `.venv/bin/piper-mcp`, the venv off PATH."""
    monkeypatch.setattr(sys, "argv", [".venv/bin/piper-mcp", "local", "serve"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    response = post(piper, RESOLVE, json={**V2_RESOLVE, "agentClientId": "not-secretless"})
    assert response.status_code == 401
    said = response.json()["error_description"]
    assert "`.venv/bin/piper-mcp local agent add ID --secretless --variable NAME`" in said
    assert said.endswith("`.venv/bin/piper-mcp local agent secretless AGENT on`.")
