"""The MCP conformance suite against `serve --transport streamable-http`.

Every scenario that needs no fixture tools (the `test_*` tools the suite's
own servers define, which do not belong in a product).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    # Calls a fixture tool that does not exist here; an unknown tool must come back as a
    # result with isError, which is what this checks (see checks.json's details).
    "tools-call-error",
    "resources-list",
    "prompts-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_passes(
    shared_http_server: tuple[dict[str, str], str], tmp_path: Path, scenario: str
) -> None:
    node_env, url = shared_http_server
    done = subprocess.run(
        ["conformance", "server", "--url", url, "--scenario", scenario, "-o", str(tmp_path)],
        env=node_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [checks_file] = tmp_path.glob("*/checks.json")
    checks = json.loads(checks_file.read_text())
    assert checks, "the scenario ran no checks"
    assert [(c["id"], c["status"]) for c in checks if c["status"] != "SUCCESS"] == []
    if scenario == "tools-call-error":
        assert checks[0]["details"]["result"]["isError"] is True
