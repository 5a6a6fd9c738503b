"""`piper-mcp exec`: Piper secrets into another program's environment, never a model's.

The real `piper-mcp` command starts real programs: an MCP server (env_report_server.py)
under a real MCP client, and small Python programs that show their process id, stdio
and exit code. Every failure is one line before the command starts: each failing case
runs a command that would leave a marker file, and the marker is looked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from piper_mcp.home import DEFAULT_AGENT
from tests.cli.conftest import PROGRAM, Cli, Done, Serving

VALUE = 'sk-canary-exec "värde" 5e7a'
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()
ARGUMENT_CANARY = "argument-canary-3c9b"
SERVER = str(Path(__file__).with_name("env_report_server.py"))
PYTHON = Path(sys.executable).name

pytestmark = pytest.mark.anyio


@pytest.fixture
def vault(cli: Cli) -> None:
    """`github_token` granted to local-agent; `research` declares `ungranted_key` only."""
    for done in (
        cli("local", "init"),
        cli("local", "secret", "set", "GitHub token", stdin=VALUE),
        cli("local", "grant", DEFAULT_AGENT, "github_token", "GitHub token"),
        cli("local", "agent", "add", "research", "--variable", "ungranted_key"),
    ):
        assert done.code == 0, done.err


def run_exec(
    cli_env: dict[str, str], *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> Done:
    done = subprocess.run(
        [PROGRAM, "exec", *args],
        env={**cli_env, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def wrapped(cli_env: dict[str, str], *exec_args: str, **env: str) -> StdioServerParameters:
    """The env report server as a host entry runs it through `piper-mcp exec`."""
    return StdioServerParameters(
        command=PROGRAM,
        args=["exec", *exec_args, "--", sys.executable, SERVER],
        env={**cli_env, **env},
    )


async def report(params: StdioServerParameters, *names: str) -> dict[str, Any]:
    async with Client(params) as client:
        result = await client.call_tool("environment", {"digests_of": list(names)})
    assert result.is_error is False, result
    assert result.structured_content is not None
    return result.structured_content


# --- what the command gets ---


async def test_a_wrapped_mcp_server_gets_each_value_from_a_flag_and_from_piper_prefix(
    cli_env: dict[str, str], vault: None
) -> None:
    params = wrapped(
        cli_env,
        "--local",
        "--env",
        "FROM_FLAG=github_token",
        GITHUB_PERSONAL_ACCESS_TOKEN="piper:github_token",  # as a host's `env` block sets it
    )
    got = await report(params, "FROM_FLAG", "GITHUB_PERSONAL_ACCESS_TOKEN")
    assert got["sha256"] == {"FROM_FLAG": DIGEST, "GITHUB_PERSONAL_ACCESS_TOKEN": DIGEST}
    # piper-mcp's own settings stay with piper-mcp: the server cannot act as the agent.
    assert [name for name in got["names"] if name.startswith("PIPER_")] == []


async def test_as_the_piper_cloud_agent_its_client_secret_is_not_passed_on(
    cli: Cli, cli_env: dict[str, str], vault: None, serve_local: Callable[..., Serving]
) -> None:
    secret = cli(
        "local", "agent", "add", "cloud-agent", "--variable", "github_token", "--json"
    ).json()["client_secret"]
    assert cli("local", "grant", "cloud-agent", "github_token", "GitHub token").code == 0
    cloud = {
        **serve_local().info["env"],
        "PIPER_CLIENT_ID": "cloud-agent",
        "PIPER_CLIENT_SECRET": secret,
        "PIPER_VARIABLES": "github_token",
    }
    got = await report(wrapped(cli_env, "--env", "TOKEN=github_token", **cloud), "TOKEN")
    assert got["sha256"] == {"TOKEN": DIGEST}
    assert [name for name in got["names"] if name.startswith("PIPER_")] == []


def test_piper_mcp_becomes_the_command_its_stdio_and_exit_code_pass_straight_through(
    cli_env: dict[str, str], vault: None
) -> None:
    echo = (
        "import os, sys; print(os.getpid()); print(sys.stdin.read().strip().upper()); sys.exit(7)"
    )
    process = subprocess.Popen(
        [PROGRAM, "exec", "--local", "--env", "T=github_token", "--", sys.executable, "-c", echo],
        env=cli_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate("hello from the host\n", timeout=60)
    assert process.returncode == 7
    assert out.splitlines() == [str(process.pid), "HELLO FROM THE HOST"]  # same process
    assert err == ""  # piper-mcp says nothing when all is well


async def test_nothing_piper_mcp_opened_is_left_open_in_the_command(
    cli_env: dict[str, str], vault: None, piper_home: Path
) -> None:
    direct = StdioServerParameters(command=sys.executable, args=[SERVER], env=cli_env)
    through_exec = wrapped(cli_env, "--local", "--env", "T=github_token")
    alone = await report(direct)
    wrapped_fds = await report(through_exec)
    assert not [t for t in wrapped_fds["descriptors"].values() if str(piper_home) in t]
    # The same descriptors as the server started directly (which pipe or socket aside): no
    # socket, vault, audit file or event loop of piper-mcp's.
    kind = re.compile(r":\[\d+\]$")
    assert {fd: kind.sub("", t) for fd, t in wrapped_fds["descriptors"].items()} == {
        fd: kind.sub("", t) for fd, t in alone["descriptors"].items()
    }


# --- what is refused, before the command starts ---


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "the command ran"


def marking(marker: Path) -> list[str]:
    """A command that leaves `marker` behind if it ever runs."""
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]


def assert_refused_before_the_command(done: Done, code: int, says: str, marker: Path) -> None:
    assert done.code == code, done.err
    assert done.out == ""
    lines = done.err.splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("piper-mcp: ")
    assert lines[0].count("piper-mcp: ") == 1 and lines[0].count("did not start") <= 1
    assert says in lines[0]
    assert "Traceback" not in done.err
    assert VALUE not in done.err
    assert not marker.exists()


def test_the_marking_command_runs_when_nothing_is_wrong(
    cli_env: dict[str, str], vault: None, marker: Path
) -> None:
    """What makes the marker a proof in the cases below."""
    done = run_exec(cli_env, "--local", "--env", "T=github_token", "--", *marking(marker))
    assert (done.code, done.out, done.err) == (0, "", "")
    assert marker.exists()


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (["--local", "--env", "T=not_declared"], {}, 1, "'not_declared' is not a variable"),
        (
            ["--local", "--agent", "research", "--env", "T=ungranted_key"],
            {},
            1,
            "has not granted this agent the variable 'ungranted_key'",
        ),
        (["--local"], {"T": "piper:not_declared"}, 1, "'not_declared' is not a variable"),
        (["--local", "--agent", "nobody", "--env", "T=x"], {}, 1, "there is no agent 'nobody'"),
        # `--agent "$AGENT"` with AGENT unset: no agent, never the default one
        (["--local", "--agent", "", "--env", "T=github_token"], {}, 1, "there is no agent ''"),
        (["--local", "--env", "T"], {}, 2, "--env 'T' is not NAME=VARIABLE"),
        (["--local", "--env", "1T=github_token"], {}, 2, "is not NAME=VARIABLE"),
        (["--local", "--env", "T=github_token", "--env", "T=x"], {}, 2, "gives T twice"),
        (["--local"], {"T": "piper:"}, 2, "names no variable"),
        (["--local"], {}, 2, "nothing to inject"),
        (["--agent", "research", "--env", "T=x"], {}, 2, "add --local"),
    ],
    ids=[
        "undeclared",
        "declared, not granted",
        "piper: undeclared",
        "unknown agent",
        "empty --agent",
        "--env without =",
        "--env bad name",
        "--env twice",
        "piper: empty",
        "nothing to inject",
        "--agent without --local",
    ],
)
def test_each_problem_is_one_line_and_the_command_never_starts(
    cli_env: dict[str, str],
    vault: None,
    marker: Path,
    args: list[str],
    env: dict[str, str],
    code: int,
    says: str,
) -> None:
    done = run_exec(cli_env, *args, "--", *marking(marker), env=env)
    assert_refused_before_the_command(done, code, says, marker)


def test_a_refusal_says_what_is_wrong_and_the_command_that_fixes_it(
    cli_env: dict[str, str], vault: None, marker: Path
) -> None:
    done = run_exec(cli_env, "--local", "--env", "T=not_declared", "--", *marking(marker))
    assert_refused_before_the_command(done, 1, "not_declared", marker)
    grant = f"{PROGRAM} local grant {DEFAULT_AGENT} not_declared SECRET"
    assert done.err.startswith(
        f"piper-mcp: did not start {PYTHON}: 'not_declared' is not a variable the agent "
        f"declares (it declares: github_token). 'not_declared' is granted to the agent "
        f"'{DEFAULT_AGENT}' in the local vault {cli_env['PIPER_HOME']} with `{grant}`, "
    )


def test_a_value_no_environment_can_hold_is_refused(
    cli: Cli, cli_env: dict[str, str], vault: None, marker: Path, piper_home: Path
) -> None:
    assert cli("local", "secret", "set", "Binary", stdin="sk-canary\0with-a-nul").code == 0
    assert cli("local", "grant", DEFAULT_AGENT, "binary_key", "Binary").code == 0
    done = run_exec(cli_env, "--local", "--env", "T=binary_key", "--", *marking(marker))
    assert_refused_before_the_command(done, 1, "'binary_key' holds a NUL character", marker)
    (entry,) = [json.loads(line) for line in (piper_home / "audit.jsonl").read_text().splitlines()]
    assert (entry["variable"], entry["outcome"], entry["reason"]) == (
        "binary_key",
        "refused",
        "unfit_value",
    )


# --- decided as the local backend decides, read straight from the vault ---


def audited(piper_home: Path) -> list[tuple[str, str, str]]:
    """(variable, outcome, reason) of each audit entry."""
    lines = (piper_home / "audit.jsonl").read_text().splitlines()
    return [(e["variable"], e["outcome"], e["reason"]) for e in map(json.loads, lines)]


def test_a_variable_is_found_by_its_normalized_name_as_serve_finds_it(
    cli_env: dict[str, str], vault: None, piper_home: Path
) -> None:
    digest = "import hashlib, os; print(hashlib.sha256(os.environ['T'].encode()).hexdigest())"
    done = run_exec(cli_env, "--local", "--env", "T=GitHub-Token", "--", PYTHON, "-c", digest)
    assert (done.code, done.out, done.err) == (0, f"{DIGEST}\n", "")
    assert audited(piper_home) == [("github_token", "ok", "not_needed")]


@pytest.mark.parametrize("suspended", ["github_token", "github_alias"])
def test_a_grant_not_active_stops_every_name_its_secret_is_granted_under(
    cli_env: dict[str, str], vault: None, marker: Path, piper_home: Path, suspended: str
) -> None:
    """As the backend's STS step decides (by secret): one grant of it not active stops all."""
    from piper_mcp.local.vault import Vault

    opened = Vault.open(piper_home)  # no command makes a grant inactive: the vault's own call
    opened.grant(opened.local_user_id, DEFAULT_AGENT, suspended, "GitHub token", "SUSPENDED")
    opened.close()
    done = run_exec(cli_env, "--local", "--env", "T=github_token", "--", *marking(marker))
    assert_refused_before_the_command(done, 1, f"the agent's grant of {suspended!r}", marker)
    assert "is SUSPENDED, not active" in done.err
    assert f"local grant {DEFAULT_AGENT} {suspended} SECRET" in done.err  # granting anew fixes it
    assert audited(piper_home) == [("github_token", "refused", "permission_denied")]


def test_an_agent_removed_gets_nothing_and_added_again_has_no_grant(
    cli: Cli, cli_env: dict[str, str], vault: None, marker: Path
) -> None:
    assert cli("local", "grant", "research", "ungranted_key", "GitHub token").code == 0
    as_research = ["--local", "--agent", "research", "--env", "T=ungranted_key", "--"]
    assert run_exec(cli_env, *as_research, *marking(marker)).code == 0
    marker.unlink()
    assert cli("local", "agent", "remove", "research").code == 0
    removed = run_exec(cli_env, *as_research, *marking(marker))
    assert_refused_before_the_command(removed, 1, "there is no agent 'research'", marker)
    assert cli("local", "agent", "add", "research", "--variable", "ungranted_key").code == 0
    again = run_exec(cli_env, *as_research, *marking(marker))
    assert_refused_before_the_command(again, 1, "has not granted this agent the variable", marker)


def test_a_damaged_secret_is_said_audited_and_the_command_never_starts(
    cli_env: dict[str, str], vault: None, marker: Path, piper_home: Path
) -> None:
    with sqlite3.connect(piper_home / "vault.sqlite3") as db:
        (sealed,) = db.execute("SELECT sealed FROM secrets").fetchone()
        db.execute("UPDATE secrets SET sealed = ?", (sealed[:-1] + bytes([sealed[-1] ^ 1]),))
    done = run_exec(cli_env, "--local", "--env", "T=github_token", "--", *marking(marker))
    assert_refused_before_the_command(done, 1, "The stored value of 'GitHub token'", marker)
    assert "is damaged" in done.err and "local secret set 'GitHub token'" in done.err
    assert audited(piper_home) == [("github_token", "refused", "storage_unavailable")]


def test_the_values_are_read_without_starting_a_backend(
    cli_env: dict[str, str], vault: None
) -> None:
    """Start-up: no in-process backend (Starlette, the grant page) and, as nothing is written
    to the vault, not its audit settings; what is loaded is looked at where `execve` runs."""
    watched = [
        "piper_mcp.local.vault",  # what the probe does see
        "piper_mcp.local.app",
        "piper_mcp.local.embedded",
        "piper_mcp.server.local_piper",
        "piper_mcp.local.settings",
        "starlette",
        "jinja2",
    ]
    probe = (
        "import json, os, sys\n"
        "from piper_mcp.cli import main\n"
        "def execve(program, argv, environment):\n"
        "    print(json.dumps([name for name in sys.argv[1:] if name in sys.modules]))\n"
        "    os._exit(0)\n"
        "os.execve = execve\n"
        "main(['exec', '--local', '--env', 'T=github_token', '--', 'true'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *watched],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == ["piper_mcp.local.vault"]


def test_without_a_vault_nothing_starts(
    cli_env: dict[str, str], marker: Path, tmp_path: Path
) -> None:
    done = run_exec(cli_env, "--local", "--env", "T=github_token", "--", *marking(marker))
    assert_refused_before_the_command(done, 1, "there is no vault in", marker)
    assert "local init" in done.err


def test_without_an_audit_record_nothing_starts(
    cli_env: dict[str, str], vault: None, marker: Path, tmp_path: Path
) -> None:
    """SECURITY.md: no record, no credential."""
    (tmp_path / "a file").write_text("")
    audit = {"PIPER_MCP_AUDIT_FILE": str(tmp_path / "a file" / "audit.jsonl")}
    done = run_exec(
        cli_env, "--local", "--env", "T=github_token", "--", *marking(marker), env=audit
    )
    assert_refused_before_the_command(done, 1, "cannot write the audit trail", marker)


@pytest.mark.parametrize("problem", ["Link down", "backend unreachable"])
def test_piper_cloud_problems_are_one_line_and_the_command_never_starts(
    cli_env: dict[str, str], marker: Path, unused_link_url: str, problem: str
) -> None:
    cloud = {"PIPER_CLIENT_ID": "research", "PIPER_VARIABLES": "github_token"}
    if problem == "Link down":
        cloud["PIPER_LINK_URL"] = unused_link_url
        says = "Piper Link did not answer"
    else:
        cloud["PIPER_INSTANCE_ID"] = "instance-canary"
        cloud["PIPER_RESOLVE_MAPPING_URL"] = unused_link_url
        cloud["PIPER_RETRY_ATTEMPTS"] = "1"
        says = "Could not reach Piper"
    done = run_exec(cli_env, "--env", "T=github_token", "--", *marking(marker), env=cloud)
    assert_refused_before_the_command(done, 1, says, marker)


def test_a_command_that_is_not_there_or_cannot_run_exits_as_a_shell_would(
    cli_env: dict[str, str], vault: None, tmp_path: Path
) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\ntouch ran\n")
    script.chmod(0o644)
    inject = ["--local", "--env", "T=github_token", "--"]
    missing = run_exec(cli_env, *inject, "no-such-command-8d1f")
    assert_refused_before_the_command(missing, 127, "not found on PATH", tmp_path / "ran")
    cannot = run_exec(cli_env, *inject, str(script))
    assert_refused_before_the_command(cannot, 126, "not an executable file", tmp_path / "ran")
    nothing = run_exec(cli_env, "--local", "--env", "T=github_token", "--")
    assert_refused_before_the_command(nothing, 2, "give the command to run", tmp_path / "ran")


# --- the audit trail ---


def test_each_injection_is_audited_by_variable_and_command_name_never_value_or_arguments(
    cli: Cli, cli_env: dict[str, str], vault: None, piper_home: Path
) -> None:
    printing = [sys.executable, "-c", f"print({ARGUMENT_CANARY!r})"]
    done = run_exec(
        cli_env, "--local", "--env", "FLAG=github_token", "--", *printing,
        env={"ENTRY": "piper:github_token"},
    )  # fmt: skip
    assert (done.code, done.out, done.err) == (0, f"{ARGUMENT_CANARY}\n", "")
    for refused in (
        ["--local", "--env", "T=not_declared"],
        ["--local", "--agent", "research", "--env", "T=ungranted_key"],
    ):
        assert run_exec(cli_env, *refused, "--", *printing).code == 1
    trail = (piper_home / "audit.jsonl").read_text()
    assert VALUE not in trail and json.dumps(VALUE) not in trail
    assert ARGUMENT_CANARY not in trail
    fields = ("transport", "variable", "mode", "outcome", "source", "reason", "command")
    ok = ("exec", "github_token", "value", "ok", "piper_raw_secret", "not_needed", PYTHON)
    assert [
        tuple(json.loads(line).get(name) for name in fields) for line in trail.splitlines()
    ] == [
        ok,
        ok,
        ("exec", "not_declared", "value", "refused", None, "undeclared", PYTHON),
        ("exec", "ungranted_key", "value", "refused", None, "mapping_not_found", PYTHON),
    ]
    listed = cli("audit").out.splitlines()
    assert [line.split()[-1] for line in listed] == [PYTHON] * 4


# --- where a process cannot become another (Windows): a child, passed through ---

AS_CHILD = (
    "import os, sys; from piper_mcp.exec import run_as_child; "
    "sys.exit(run_as_child(sys.executable, [sys.executable, '-c', sys.argv[1]], "
    "dict(os.environ)))"
)


def as_child(program: str, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", AS_CHILD, program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_as_a_child_sigterm_is_passed_on_and_its_exit_code_comes_back() -> None:
    process = as_child(
        "import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(42)); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 42


def test_as_a_child_a_sigterm_before_the_child_exists_is_passed_on_once_it_does() -> None:
    """The signal lands while the child is being started (made certain here by sending it
    from inside `Popen`): it is passed on, not lost and not fatal to this process alone."""
    starting_signalled = (
        "import os, signal, subprocess, sys; from piper_mcp.exec import run_as_child\n"
        "start = subprocess.Popen\n"
        "def signalled(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return start(*args, **kwargs)\n"
        "subprocess.Popen = signalled\n"
        "sys.exit(run_as_child(sys.executable, [sys.executable, '-c', sys.argv[1]], "
        "dict(os.environ)))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", starting_signalled, "import time; time.sleep(60)"]
    )
    assert process.wait(timeout=30) == 128 + signal.SIGTERM  # the child's ending, passed back


def test_as_a_child_ctrl_c_is_the_childs_to_answer_and_stdio_is_shared() -> None:
    process = as_child(
        "import sys\ntry:\n    print('ready', flush=True)\n    sys.stdin.read()\n"
        "except KeyboardInterrupt:\n    print('child stopped'); sys.exit(3)",
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a console does: the whole group
    assert process.wait(timeout=30) == 3
    assert process.stdout.read() == "child stopped\n"


def test_as_a_child_ended_by_a_signal_exits_as_a_shell_says_it() -> None:
    process = as_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGKILL
