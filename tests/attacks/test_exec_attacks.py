"""`piper-mcp exec` attacked through what it reads: its environment, the command, the values.

A host's `env` block (or whoever starts piper-mcp) chooses the environment: names in
any case or width, references with control characters, entries without a name. The
command may be a file no kernel can run. Each test runs the real `piper-mcp exec`
and says which protection it guards. An entry without a name once made exec end in a
traceback after it had fetched the values; it is now left out, as a shell leaves it out.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from piper_mcp.home import DEFAULT_AGENT
from piper_mcp.local.vault import Vault
from tests.cli.conftest import PROGRAM, Done

# Line breaks, "=", a tab, quotes and non-ASCII: all legal in an environment value.
VALUE = 'sk-canary-exec-attacks\nsecond "line"=x\tvärde ✓ 7e1f'
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()
LONG_ENOUGH = "t" * 40  # a PIPER_MCP_HTTP_TOKEN piper-mcp accepts, should it read one


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a host entry whose vault grants github_token to local-agent."""
    home = tmp_path / "piper-home"
    vault, _ = Vault.init(home)
    vault.put_secret("GitHub token", VALUE, owner_user_id=vault.local_user_id)
    vault.grant(vault.local_user_id, DEFAULT_AGENT, "github_token", "GitHub token")
    vault.close()
    return {"PATH": os.environ["PATH"], "PIPER_HOME": str(home)}


def run(env: dict[str, str], *args: str) -> Done:
    done = subprocess.run(
        [PROGRAM, "exec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def one_plain_line(done: Done) -> str:
    """piper-mcp's one line on stderr, checked to hold no value, no traceback, no escape."""
    assert "Traceback" not in done.err
    lines = done.err.splitlines()
    assert len(lines) == 1, done.err
    assert lines[0].startswith("piper-mcp: ")
    assert VALUE not in done.err and VALUE.splitlines()[0] not in done.err
    assert not any(char < " " for char in lines[0])
    return lines[0]


def test_piper_settings_in_any_case_or_width_never_reach_the_command(
    env: dict[str, str],
) -> None:
    """Guards `child_environment`: a setting piper-mcp may read as its own (the settings are
    case-insensitive, names are compared after NFKC) is not handed to the command either."""
    settings = {
        "piper_client_secret": "lower-case-client-secret-canary",
        "Piper_Mcp_Http_Token": LONG_ENOUGH,
        "\uff30\uff29\uff30\uff25\uff32_CLIENT_SECRET": "full-width-canary",  # ＰＩＰＥＲ_...
    }
    show = (
        "import json, os, unicodedata; print(json.dumps(sorted(n for n in os.environ if "
        "unicodedata.normalize('NFKC', n).upper().startswith('PIPER'))))"
    )

    done = run({**env, **settings}, "--local", "--env", "T=github_token", "--", *python(show))

    assert (done.code, done.err) == (0, ""), done.err
    assert json.loads(done.out) == []


def test_a_value_with_line_breaks_arrives_whole_and_piper_mcp_prints_nothing(
    env: dict[str, str],
) -> None:
    """Guards the hand-over: the value reaches the command byte for byte (no quoting, no
    cut at a line break or "="), and piper-mcp itself writes nothing on stdout or stderr."""
    show = "import hashlib, os; print(hashlib.sha256(os.environ['T'].encode()).hexdigest())"

    done = run(env, "--local", "--env", "T=github_token", "--", *python(show))

    assert (done.code, done.out, done.err) == (0, f"{DIGEST}\n", "")


def test_a_command_the_kernel_refuses_after_the_values_were_fetched_says_one_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Guards `become`'s failure path: the values are in hand when execve fails (a file
    marked executable that is no program), and the one line it says holds none of them."""
    no_program = tmp_path / "not-a-program"
    no_program.write_text("this is text, not a program\n")
    no_program.chmod(0o755)

    done = run(env, "--local", "--env", "T=github_token", "--", str(no_program))

    assert done.code == 126
    assert "Exec format error" in one_plain_line(done)


@pytest.mark.parametrize(
    ("args", "more_env"),
    [
        (["--env", "T=github_token"], {"REF": "piper:evil\n\x1b[31mred\x07"}),
        (["--env", "T=evil\n\x1b[2Jcleared"], {}),
    ],
    ids=["piper: reference", "--env flag"],
)
def test_a_variable_name_with_control_characters_is_refused_in_one_plain_line(
    env: dict[str, str], args: list[str], more_env: dict[str, str], tmp_path: Path
) -> None:
    """Guards `say`: what the environment or the command line names is printed escaped,
    so it can neither forge a second log line nor drive the terminal of whoever reads it."""
    marker = tmp_path / "ran"

    done = run(
        {**env, **more_env},
        "--local",
        *args,
        "--",
        *python(f"open({str(marker)!r}, 'w').close()"),
    )

    assert done.code in (1, 2)
    assert "\x1b" not in done.err
    one_plain_line(done)
    assert not marker.exists()


# Starts piper-mcp through execve with an environment entry no Python API can set: one
# without a name ("=piper:github_token"), as a host's `env` block with an empty key gives.
RAW_EXECVE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
args = [a.encode() for a in sys.argv[1:]]
env = [f"{k}={v}".encode() for k, v in os.environ.items()] + [b"=piper:github_token"]
argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
libc.execve(args[0], argv, envp)
sys.exit(f"execve failed: {ctypes.get_errno()}")
"""


@pytest.mark.skipif(os.name != "posix", reason="an environment entry without a name is POSIX's")
def test_an_environment_entry_without_a_name_is_one_line_not_a_traceback(
    env: dict[str, str],
) -> None:
    """Guards "what fails is said in one line on stderr" (docs/exec.md) for an environment
    piper-mcp did not expect, and that no value is printed with it."""
    show = "import os; print(len(os.environ['T']))"
    done = subprocess.run(
        [sys.executable, "-c", RAW_EXECVE, PROGRAM, "exec", "--local", "--env", "T=github_token",
         "--", *python(show)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip

    assert "Traceback" not in done.stderr
    assert VALUE not in done.stderr and VALUE not in done.stdout
    assert done.returncode == 0 or len(done.stderr.splitlines()) == 1, done.stderr
