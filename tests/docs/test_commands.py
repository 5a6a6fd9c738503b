"""Every command shown in README.md and docs/*.md runs in a test.

A command is each logical line of a fenced ```sh block (backslash and pipe
continuations joined, a heredoc kept whole, `  # comments` dropped) and each `$ `
line. Each one is either run here, in a sandbox (a fresh PIPER_HOME, the venv's bin
first on PATH, a minimal environment, stdin a pipe), by its handler in RUN_HERE, or
named in ELSEWHERE with the test file that runs it and the parts of the command that
file must contain. A command in the docs that is in neither table fails this test, and
so does a row for a command the docs no longer show.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from piper_mcp.cli import main
from piper_mcp.invocation import INSPECTOR

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?\s*$")
VALUE = "sk-docs-0123456789abcdef"  # what a person types at the hidden prompt


def commands(text: str) -> list[str]:
    """The commands a page shows, in order."""
    found: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("$ "):
            found.append(line[2:].strip())
        if line.strip() != "```sh":
            continue
        pending = ""
        for raw in lines:
            if raw.strip() == "```":
                break
            line = re.sub(r"\s{2,}#.*$", "", raw).strip()
            if not line:
                continue
            if heredoc := HEREDOC.search(line):
                body = []
                for body_line in lines:
                    body.append(body_line)
                    if body_line.strip() == heredoc.group(1):
                        break
                found.append("\n".join([pending + line, *body]))
                pending = ""
            elif line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
            elif line.endswith("|"):
                pending += line + " "
            else:
                found.append(pending + line)
                pending = ""
        assert not pending, f"a sh block ends inside a command: {pending!r}"
    return found


# Commands a page shows inline (a table cell, a sentence) for another program to run.
INLINE = re.compile(r"`((?:npx|claude|uvx) [^`]+)`")
# ... and piper-mcp's own, which are synopses (`piper-mcp local grant AGENT VARIABLE ...`).
INLINE_OURS = re.compile(r"`piper-mcp ([^`]+)`")


# --- Running a command here --------------------------------------------------------


@dataclass
class Sandbox:
    """A fresh folder (the command's working directory and HOME) with its own PIPER_HOME."""

    root: Path

    @property
    def piper_home(self) -> Path:
        return self.root / "piper-home"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin",
            "HOME": str(self.root),
            "PIPER_HOME": str(self.piper_home),
            "LANG": "C.UTF-8",
        }


Handler = Callable[[Sandbox, str], None]


def ci_script() -> str:
    return (ROOT / ".ci" / "run").read_text()


def creates_the_venv(sandbox: Sandbox, command: str) -> None:
    """CI makes the venv with this very step; the sandbox links the one it made."""
    assert command == "python3 -m venv .venv"
    assert f"{command} && .venv/bin/pip install -e '.[test]'" in ci_script()
    assert (sandbox.root / ".venv" / "bin" / "piper-mcp").exists()


def activates_the_venv(sandbox: Sandbox, command: str) -> None:
    assert command == ". .venv/bin/activate"
    assert (sandbox.root / ".venv" / "bin" / "activate").is_file()
    assert sandbox.env["PATH"].startswith(str(VENV_BIN))  # what activating does


def installs_what_ci_installs(sandbox: Sandbox, command: str) -> None:
    """`pip install -e .` plus packages: CI installs the package with its test extra,
    so each extra package must be in that extra."""
    words = shlex.split(command)
    assert words[0] in ("pip", ".venv/bin/pip") and words[1:3] in (["install", "-e"],)
    assert words[3] in (".", ".[test]"), command
    assert ".venv/bin/pip install -e '.[test]'" in ci_script()
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = pyproject.split("test = [", 1)[1].split("]", 1)[0]
    for package in words[4:]:
        assert f'"{package}' in extra, f"{package} is not in the [test] extra CI installs"


def each_part(*handlers: Handler) -> Handler:
    """A `a && b && c` command: one handler per part, in order."""

    def run(sandbox: Sandbox, command: str) -> None:
        parts = command.split(" && ")
        assert len(parts) == len(handlers), command
        for handler, part in zip(handlers, parts, strict=True):
            handler(sandbox, part)

    return run


def piper_mcp(
    *expected: str, stdin: str = "", then: Callable[[Sandbox], None] | None = None
) -> Handler:
    """`piper-mcp ...` in this process (`main(argv)`): exits 0, prints `expected`, and
    leaves what `then` checks."""

    def run(sandbox: Sandbox, command: str) -> None:
        words = shlex.split(command)
        assert words[0] == "piper-mcp"
        with sandboxed(sandbox, stdin) as output:
            code = main(words[1:])
        printed = output.getvalue()
        assert code == 0, printed
        for text in expected:
            assert text in printed, printed
        assert VALUE not in printed
        if then:
            then(sandbox)

    return run


@contextmanager
def sandboxed(sandbox: Sandbox, stdin: str) -> Iterator[io.StringIO]:
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for name in [name for name in os.environ if name.startswith("PIPER_")]:
            patch.delenv(name)
        patch.setenv("PIPER_HOME", str(sandbox.piper_home))
        patch.setenv("HOME", str(sandbox.root))
        patch.chdir(sandbox.root)
        patch.setattr(sys, "stdin", io.StringIO(stdin))
        patch.setattr(sys, "stdout", output)
        patch.setattr(sys, "stderr", output)
        yield output


def in_a_shell(check: Callable[[Sandbox], None]) -> Handler:
    """The command as a shell runs it, in the sandbox; then `check` looks at what it did."""

    def run(sandbox: Sandbox, command: str) -> None:
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=sandbox.root,
            env=sandbox.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        check(sandbox)

    return run


def serves_a_host_over_stdio(sandbox: Sandbox, command: str) -> None:
    """Answers `initialize` on stdout, says on stderr how to add a secret, ends on EOF."""
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "docs-test", "version": "1"},
        },
    }
    done = subprocess.run(
        shlex.split(command),
        cwd=sandbox.root,
        env=sandbox.env,
        input=json.dumps(initialize) + "\n",  # then EOF: Ctrl-D
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[0])
    assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"], done.stdout
    assert "piper-mcp local secret set" in done.stderr
    assert (sandbox.piper_home / "vault.sqlite3").is_file()


def a_vault(sandbox: Sandbox) -> None:
    for name in ("vault.sqlite3", "vault.key"):
        assert stat.S_IMODE((sandbox.piper_home / name).stat().st_mode) == 0o600, name


def an_owner_only_token(sandbox: Sandbox) -> None:
    token_file = sandbox.root / ".piper-mcp-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(token_file.read_text().strip()) >= 32


def a_throwaway_ca(sandbox: Sandbox) -> None:
    for name in ("server.pem", "server.key", "client.pem"):
        assert (sandbox.root / name).read_text().startswith("-----BEGIN"), name


RUN_HERE: dict[str, Handler] = {
    # README: Quickstart.
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/piper-mcp serve --local": (
        each_part(creates_the_venv, installs_what_ci_installs, serves_a_host_over_stdio)
    ),
    # README: from a fresh clone to get_secret; docs/local-backend.md.
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e .": each_part(
        creates_the_venv, activates_the_venv, installs_what_ci_installs
    ),
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . pyper-sdk trustme": (
        each_part(creates_the_venv, activates_the_venv, installs_what_ci_installs)
    ),
    # After the Quickstart's `serve --local`, README's init finds the vault it made.
    "piper-mcp local init": piper_mcp("vault", then=a_vault),
    'piper-mcp local secret set "My OpenAI key"': piper_mcp(
        "Stored 'My OpenAI key'", stdin=VALUE + "\n"
    ),
    'piper-mcp local grant local-agent openai_api_key "My OpenAI key"': piper_mcp(
        "Granted 'My OpenAI key' to 'local-agent' as 'openai_api_key'"
    ),
    "piper-mcp check --local": piper_mcp(
        "ok    configuration",
        "ok    piper link",
        "ok    backend and agent credentials",
        "ok    variable openai_api_key",
    ),
    "piper-mcp local agent add research --variable openai_api_key --secretless": piper_mcp(
        "research"
    ),
    'piper-mcp local grant research openai_api_key "My OpenAI key"': piper_mcp(
        "Granted 'My OpenAI key' to 'research' as 'openai_api_key'"
    ),
    "python -m trustme -i 127.0.0.1 localhost": in_a_shell(a_throwaway_ca),
    # docs/exec.md: the token once in the vault, then handed to a program, audited.
    'piper-mcp local secret set "GitHub token"': piper_mcp(
        "Stored 'GitHub token'", stdin=VALUE + "\n"
    ),
    'piper-mcp local grant local-agent github_token "GitHub token"': piper_mcp(
        "Granted 'GitHub token' to 'local-agent' as 'github_token'"
    ),
    # A subprocess: `exec` replaces the process that runs it. `test -n` fails without it.
    "piper-mcp exec --local --env TOKEN=github_token -- "
    """sh -c 'test -n "$TOKEN" && echo "got it"'""": in_a_shell(lambda sandbox: None),
    "piper-mcp audit --limit 3": piper_mcp("'github_token'", "exec", " sh"),
    # docs/security.md: serving HTTP beyond loopback.
    "(umask 077; python -c 'import secrets; print(secrets.token_urlsafe(32))' "
    "> ~/.piper-mcp-token)": in_a_shell(an_owner_only_token),
}


# --- Commands another test runs ------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """The test file that runs a command, and the parts of it that file must contain."""

    path: str
    parts: tuple[str, ...]
    why: str


SDK_HEREDOC = """REQUESTS_CA_BUNDLE=client.pem python - <<'PY'
import os
from piper_sdk.client import PiperClient
env = os.environ                                    # the settings `serve` printed
piper = PiperClient("research", resolve_mapping_url=env["PIPER_RESOLVE_MAPPING_URL"],
                    get_scoped_url=env["PIPER_GET_SCOPED_URL"],
                    exchange_secret_url=env["PIPER_EXCHANGE_SECRET_URL"],
                    piper_link_service_url=env["PIPER_LINK_URL"])
print(piper.get_secret("openai_api_key")["source"])                          # piper_sts
print(piper.get_secret("openai_api_key", fetch_raw_secret=True)["value"])    # sk-my-real-key
PY"""

TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
)

ELSEWHERE: dict[str, Where] = {
    TEST_COMMAND: Where(".ci/run", (TEST_COMMAND,), "CI runs the test command exactly"),
    '.venv/bin/python -m pytest -m "not e2e"': Where(
        "tests/docs/test_fast_subset.py",
        ('"-m", "not e2e"', '"--collect-only"'),
        "the suite cannot run itself; collecting it shows what the subset runs",
    ),
    ".venv/bin/ruff check .": Where(".ci/run", (".venv/bin/ruff check .",), "CI"),
    ".venv/bin/ruff format --check .": Where(".ci/run", (".venv/bin/ruff format --check .",), "CI"),
    ".venv/bin/mypy": Where(".ci/run", (".venv/bin/mypy",), "CI"),
    "npx @modelcontextprotocol/inspector@2.12.0 --cli --config mcp.json --server piper-local "
    '-e PIPER_HOME="$(piper-mcp local home)" '
    "--method tools/call --tool-name get_secret --tool-arg variable=openai_api_key": Where(
        "tests/e2e/test_inspector.py",
        (
            '"--config"',
            '"mcp.json"',
            '"piper-local"',
            '"-e"',
            "PIPER_HOME=",
            '"tools/call"',
            "variable=openai_api_key",
        ),
        "the Inspector comes from npm, which the e2e tests install",
    ),
    'claude mcp add piper -e PIPER_HOME="$(piper-mcp local home)" -- piper-mcp serve --local': (
        Where(
            "tests/e2e/test_hosts.py",
            ('"mcp", "add", "piper", "-e", f"PIPER_HOME={piper_home}", "--"', '"serve", "--local"'),
            "Claude Code comes from npm; the test gives the path `piper-mcp local home` prints",
        )
    ),
    "claude mcp add --scope project piper -e 'PIPER_HOME=${PIPER_HOME:-}' -- piper-mcp serve "
    "--local": Where(
        "tests/e2e/test_hosts.py",
        ('"--scope", "project", "piper"', '"-e", "PIPER_HOME=${PIPER_HOME:-}", "--", "piper-mcp"'),
        "Claude Code comes from npm",
    ),
    "npx @anthropic-ai/mcpb@2.1.2 pack": Where(
        "tests/e2e/test_packaging.py",
        ('mcpb(env, "pack", str(ROOT)',),
        "mcpb comes from npm; the test packs into a scratch folder",
    ),
    "npx @modelcontextprotocol/inspector@2.12.0 --config mcp.json --server piper-local "
    '-e PIPER_HOME="$(piper-mcp local home)"': Where(
        "tests/e2e/test_inspector.py",
        ('"--config"', '"mcp.json"', '"piper-local"', '"-e"', "PIPER_HOME="),
        "the web UI waits for a person in a browser: the tests run the same entry and flags "
        "with --cli",
    ),
    "uvx --from piper_mcp-0.1.0-py3-none-any.whl piper-mcp serve --local": Where(
        "tests/e2e/test_packaging.py",
        ('args=["--from", str(wheel), "piper-mcp", "serve", "--local"]',),
        "the test builds the wheel first, as README says (`pip wheel --no-deps .`)",
    ),
    "piper-mcp local serve --tls-cert server.pem --tls-key server.key": Where(
        "tests/cli/test_published_sdk.py",
        ('"--tls-cert"', '"--tls-key"', '"local", "init"', '"grant"'),
        "serves on Piper's ports 31478/31477, which a test must not take; it takes free ones",
    ),
    SDK_HEREDOC: Where(
        "tests/cli/test_published_sdk.py",
        ("docs_sdk_example", '"REQUESTS_CA_BUNDLE"', "local serve --port 0 --link-port 0"),
        "needs the server above; the test runs this very text against it",
    ),
    "piper-mcp local dashboard": Where(
        "tests/cli/test_dashboard_command.py",
        ('"local", "dashboard"', "login_link(process)", "signal.SIGINT"),
        "serves until stopped: the test starts it as a person does, logs in, then Ctrl-C",
    ),
    "piper-mcp serve --transport streamable-http --host 0.0.0.0 "
    "--auth-token-file ~/.piper-mcp-token": Where(
        "tests/attacks/test_http_token.py",
        ('"--host", "0.0.0.0", "--auth-token-file"', "chmod(0o600)"),
        "binds every interface on port 8000",
    ),
    "pass show piper-mcp-token | piper-mcp serve --transport streamable-http --host 0.0.0.0 "
    "--auth-token-file /dev/stdin": Where(
        "tests/attacks/test_http_token.py",
        ('"--auth-token-file", "/dev/stdin"', "stdin=subprocess.PIPE"),
        "`pass` is not installed here; the test pipes the token the same way",
    ),
}


# --- The tests ------------------------------------------------------------------------


def shown() -> dict[Path, list[str]]:
    """Each page's commands: its `sh` blocks, then the host commands it shows inline."""
    return {
        page: commands(page.read_text()) + INLINE.findall(page.read_text()) for page in DOCUMENTS
    }


def synopses() -> list[str]:
    return sorted({found for page in DOCUMENTS for found in INLINE_OURS.findall(page.read_text())})


@pytest.mark.parametrize("synopsis", synopses())
def test_each_inline_piper_mcp_command_exists_with_the_options_it_shows(
    synopsis: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`piper-mcp local grant AGENT VARIABLE SECRET [--use PRESET|HOSTS]`: the command
    `local grant` exists and takes `--use`; placeholders (capitals, <...>) are not checked."""
    words = list(itertools.takewhile(re.compile(r"[a-z][a-z-]*").fullmatch, synopsis.split()))
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0, synopsis
    usage = capsys.readouterr().out
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", synopsis):
        assert option in usage, f"`piper-mcp {synopsis}`: {option} is not an option of it"


def test_the_extractor_finds_the_quickstart_and_joins_continued_lines() -> None:
    readme = shown()[ROOT / "README.md"]
    assert readme[:2] == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/piper-mcp serve --local",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
    ]
    assert "piper-mcp local init" in readme  # its trailing comment dropped
    assert any(command.endswith("--tool-arg variable=openai_api_key") for command in readme)


def test_every_command_shown_is_run_here_or_by_a_named_test() -> None:
    every = {command for found in shown().values() for command in found}
    assert not RUN_HERE.keys() & ELSEWHERE.keys()
    unhandled = sorted(every - RUN_HERE.keys() - ELSEWHERE.keys())
    assert not unhandled, f"add each to RUN_HERE or ELSEWHERE in {__file__}: {unhandled}"
    stale = sorted((RUN_HERE.keys() | ELSEWHERE.keys()) - every)
    assert not stale, f"no page shows these any more; drop their rows: {stale}"


@pytest.mark.parametrize("command", sorted(ELSEWHERE), ids=lambda command: command[:50])
def test_the_named_test_contains_the_command(command: str) -> None:
    where = ELSEWHERE[command]
    text = (ROOT / where.path).read_text()
    for part in where.parts:
        assert part in text, f"{where.path} no longer contains {part!r}"


def test_every_npx_command_names_the_version_the_tests_install() -> None:
    """An unpinned `npx` runs whatever npm has today, not what the e2e tests checked."""
    tested = json.loads((ROOT / "tests/e2e/package.json").read_text())["devDependencies"]
    shown = [
        (document.name, package)
        for document in DOCUMENTS
        for package in re.findall(r"\bnpx\s+(@?[\w./-]+(?:@[\w.-]+)?)", document.read_text())
    ]
    assert shown, "README shows the Inspector"
    shown.append(("piper_mcp.invocation.INSPECTOR", INSPECTOR))  # what the hints suggest
    for document, package in shown:
        name, version = re.fullmatch(r"(@?[^@]+)@?(.*)", package).groups()  # type: ignore[union-attr]
        assert name in tested, f"{document}: npx {package} is not a package the tests install"
        assert version == tested[name], f"{document}: npx {package}; the tests run {tested[name]}"


@pytest.mark.parametrize("page", DOCUMENTS, ids=lambda page: page.name)
def test_the_commands_run_here_work_in_page_order(page: Path, tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    sandbox = Sandbox(tmp_path)
    for command in commands(page.read_text()):
        if command in RUN_HERE:
            RUN_HERE[command](sandbox, command)
