"""Issue 12.8: `serve` with no configuration, or with the examples' placeholders, says so.

Started bare (a host entry without `env`), it would answer every call with an error;
started from mcp.json's cloud entry as shipped, its values are examples. Either is said
at start and fails `piper-mcp check`, with the way to `--local`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from piper_mcp.server.credentials import looks_like_placeholder
from tests.cli.conftest import PROGRAM, Cli

ROOT = Path(__file__).resolve().parents[2]


def test_serve_without_a_client_id_says_what_is_missing_and_offers_local(tmp_path: Path) -> None:
    done = subprocess.run(
        [PROGRAM, "serve"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "PIPER_CLIENT_ID is not set, so every get_secret fails" in done.stderr
    assert f"`{PROGRAM} serve --local` serves a local vault instead" in done.stderr


def test_mcp_json_cloud_entry_as_shipped_does_not_pass_check(
    cli_env: dict[str, str], cli: Cli
) -> None:
    entry = json.loads((ROOT / "mcp.json").read_text())["mcpServers"]["piper"]
    cli_env.update(entry["env"])
    done = cli("check", "--json")
    report = done.json()
    assert done.code == 1
    [configuration] = [c for c in report["checks"] if c["check"] == "configuration"]
    assert configuration["ok"] is False
    assert "looks like an example value" in configuration["fix"]
    assert f"PIPER_CLIENT_ID={entry['env']['PIPER_CLIENT_ID']!r}" in configuration["fix"]


@pytest.mark.parametrize(
    "value",
    [
        "your-agent-client-id",
        "YOUR_CLIENT_ID",
        "<client-id>",
        "xxxx",
        "changeme",
        "TODO",
        "${input:piper-client-id}",  # VS Code's entry pasted into a host that does not expand it
        "$PIPER_CLIENT_ID",
    ],
)
def test_example_values_are_placeholders(value: str) -> None:
    assert looks_like_placeholder(value)


@pytest.mark.parametrize(
    "value", ["research-agent", "agent-7f3a9c", "openai_api_key", "yourself", "todo_list_bot"]
)
def test_real_looking_values_are_not(value: str) -> None:
    assert not looks_like_placeholder(value)


def test_a_reader_that_leaves_early_gets_no_traceback(cli_env: dict[str, str]) -> None:
    """`piper-mcp check | head -1`: the pipe closes before everything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    done = subprocess.run(
        [PROGRAM, "check"],
        env=cli_env,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
