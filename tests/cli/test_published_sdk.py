"""The published Piper SDK cannot tell `piper-mcp local serve` from the real service.

Releases 0.4.4 (protocol v1) and 0.7.1 (v2) are installed from PyPI into
folders of their own and run their documented flow over TLS (a throwaway
CA from trustme), as separate processes, against a separate serve process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.cli.conftest import Cli, Serving

HERE = Path(__file__).parent
VALUE = "sk-canary-published-sdk-0e7f"
FALLBACK_VALUE = "env-canary-fallback-77aa"


@pytest.fixture(scope="session")
def sdk_release() -> Callable[[str], Path]:
    """`sdk_release("0.4.4")`: a folder with that release, installed once per machine.

    Kept in the user's cache folder (a release never changes), so only the first run
    needs PyPI.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "piper-mcp-tests"

    def install(version: str) -> Path:
        target = cache / f"pyper-sdk-{version}"
        if not target.is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f"pyper-sdk-{version}-", dir=cache))
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "--target",
                    str(partial),
                    f"pyper-sdk=={version}",
                ],
                check=True,
                timeout=300,
            )
            try:
                partial.rename(target)  # whole or not at all, even with runs side by side
            except OSError:
                shutil.rmtree(partial)  # another run got there first
        return target

    return install


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    cert, key, ca = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca))
    return cert, key, ca


@pytest.mark.parametrize("version", ["0.4.4", "0.7.1"])
def test_the_published_sdk_runs_its_documented_flow_against_local_serve(
    cli: Cli,
    serve_local: Callable[..., Serving],
    sdk_release: Callable[[str], Path],
    tls_files: tuple[Path, Path, Path],
    version: str,
) -> None:
    cli("local", "init")
    agent = cli(
        "local",
        "agent",
        "add",
        "research",
        "--variable",
        "OpenAI API Key",
        "--variable",
        "slack_token",
        # 0.4.4 proves the agent with its client secret (v1); 0.7.1 speaks v2, which the
        # operator must allow for the agent.
        *(["--secretless"] if version >= "0.6" else []),
        "--json",
    ).json()
    cli("local", "secret", "set", "Ada's OpenAI key", stdin=VALUE)
    cli("local", "grant", "research", "OpenAI API Key", "Ada's OpenAI key")
    cert, key, ca = tls_files
    serving = serve_local("--tls-cert", str(cert), "--tls-key", str(key))
    assert serving.info["url"].startswith("https://127.0.0.1:")

    env = {
        **os.environ,
        **serving.info["env"],
        "PYTHONPATH": str(sdk_release(version)),
        "REQUESTS_CA_BUNDLE": str(ca),
        "PIPER_CLIENT_ID": "research",
        "PIPER_CLIENT_SECRET": agent.get("client_secret", ""),
        "GRANTED": "OpenAI API Key",
        "UNGRANTED": "slack token",
        "SLACK_TOKEN": FALLBACK_VALUE,
    }
    done = subprocess.run(
        [sys.executable, str(HERE / "sdk_flow.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    digest = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    assert seen["version"].startswith(version[:3])
    assert seen["sts"]["source"] == "piper_sts"
    assert seen["sts"]["instance"].startswith("instance-")
    assert seen["raw"] == {"source": "piper_raw_secret", "value": digest(VALUE)}
    assert seen["secret_manager_value"] == digest(VALUE)
    assert seen["ungranted"] == {"raised": "PiperGrantNeededError", "code": "mapping_not_found"}
    assert seen["fallback"] == {"source": "environment_variable", "value": digest(FALLBACK_VALUE)}
    code, stderr = serving.stop()
    assert code == 0 and "Stopped." in stderr


def test_the_docs_sdk_example_runs_on_ports_serve_chose(
    cli: Cli,
    cli_env: dict[str, str],
    sdk_release: Callable[[str], Path],
    tls_files: tuple[Path, Path, Path],
    tmp_path: Path,
) -> None:
    """docs_sdk_example: docs/local-backend.md's snippet, as written, after the `export`
    lines `local serve --port 0 --link-port 0` printed (the Piper Link app holds the
    default ports), pasted into a shell as the page says."""
    from tests.docs.test_commands import commands

    page = (HERE.parents[1] / "docs" / "local-backend.md").read_text()
    [snippet] = [c for c in commands(page) if c.startswith("REQUESTS_CA_BUNDLE=client.pem python")]
    cli("local", "init")
    cli("local", "agent", "add", "research", "--variable", "openai_api_key", "--secretless")
    cli("local", "secret", "set", "My OpenAI key", stdin=VALUE)
    cli("local", "grant", "research", "openai_api_key", "My OpenAI key")
    cert, key, ca = tls_files
    shutil.copy(ca, tmp_path / "client.pem")
    serve = ["local", "serve", "--port", "0", "--link-port", "0"]
    serving = subprocess.Popen(
        [sys.executable, "-m", "piper_mcp", *serve, "--tls-cert", str(cert), "--tls-key", str(key)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serving.stdout is not None
        printed = []
        for line in serving.stdout:  # until serve says it is ready (or ends)
            printed.append(line)
            if line.startswith("Stop with Ctrl-C."):
                break
        exports = [line.strip() for line in printed if line.startswith("  export PIPER_")]
        assert any("PIPER_LINK_URL=" in line for line in exports), printed
        shell = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.defpath}",
            "HOME": str(tmp_path),
            "PYTHONPATH": str(sdk_release("0.7.1")),
        }
        done = subprocess.run(
            ["sh", "-c", "\n".join([*exports, snippet])],
            cwd=tmp_path,
            env=shell,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines() == ["piper_sts", VALUE]
        serving.terminate()
        assert serving.wait(timeout=20) == 0
    finally:
        if serving.poll() is None:
            serving.kill()
        serving.communicate()
