"""Issue 12, hosts: the MCP Bundle, the registry's server.json, and `uvx` from a wheel.

The bundle is checked by the official `mcpb` tool and then run the way Claude Desktop
runs it (`uv run --directory BUNDLE piper-mcp serve` with the user's settings); the
wheel is run with `uvx`, as README says. Both under a real MCP client over stdio. uv
resolves the dependencies from the package index, as it does for a user.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client, StdioServerParameters
from pydantic import BaseModel, Field, ValidationError

from piper_mcp.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DOCUMENTED = (ROOT / "docs/configuration.md").read_text()
UV = Path(sys.executable).with_name("uv")
pytestmark = pytest.mark.anyio


def mcpb(node_env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["mcpb", *args], cwd=ROOT, env=node_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --- manifest.json -------------------------------------------------------------------


def manifest() -> dict[str, Any]:
    return json.loads((ROOT / "manifest.json").read_text())


def test_the_official_tool_validates_the_bundle_manifest(node_env: dict[str, str]) -> None:
    assert "Manifest schema validation passes" in mcpb(node_env, "validate", "manifest.json")


def test_the_manifest_matches_the_package_and_hides_the_client_secret() -> None:
    found = manifest()
    assert found["version"] == PROJECT["version"] and found["license"] == PROJECT["license"]
    user_config = found["user_config"]
    assert user_config["client_secret"]["sensitive"] is True
    env = found["server"]["mcp_config"]["env"]
    for name, value in env.items():
        assert f"`{name}`" in DOCUMENTED, f"{name} is not a documented setting"
        for key in re.findall(r"\$\{user_config\.(\w+)\}", value):
            assert key in user_config, key
    assert "PIPER_HOME" in env  # Claude Desktop gives servers none of the user's shell


@pytest.fixture(scope="module")
def bundle(node_tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mcpb pack` of this repository, unpacked as Claude Desktop installs it."""
    folder = tmp_path_factory.mktemp("bundle")
    env = {**os.environ, "PATH": f"{node_tools}{os.pathsep}{os.environ['PATH']}"}
    mcpb(env, "pack", str(ROOT), str(folder / "piper-mcp.mcpb"))
    with zipfile.ZipFile(folder / "piper-mcp.mcpb") as packed:
        names = packed.namelist()
        packed.extractall(folder / "installed")
    assert {"manifest.json", "pyproject.toml", "LICENSE", "src/piper_mcp/cli.py"} <= set(names)
    assert not [name for name in names if name.startswith(("tests/", ".venv/", ".git/"))]
    return folder / "installed"


def uv_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a host gives a server, plus where uv keeps its downloads between runs."""
    keep = ("PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "UV_INDEX_URL", "UV_DEFAULT_INDEX")
    env = {name: os.environ[name] for name in keep if name in os.environ}
    cache = Path.home() / ".cache" / "piper-mcp-tests" / "uv"
    return {**env, "HOME": str(tmp_path), "UV_CACHE_DIR": str(cache), **extra}


def bundle_server(bundle: Path, tmp_path: Path, settings: dict[str, str]) -> StdioServerParameters:
    """The server a host starts from the manifest, filled in as `mcpb`'s own host does it.

    A field the user left empty (not in `settings`, no default) stays the literal
    `${user_config.NAME}`.
    """
    config = manifest()["server"]["mcp_config"]
    defaults = {
        key: str(option["default"]).lower()
        for key, option in manifest()["user_config"].items()
        if "default" in option
    }
    values = {**defaults, **settings}

    def filled(text: str) -> str:
        text = text.replace("${__dirname}", str(bundle))
        return re.sub(
            r"\$\{user_config\.(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text
        )

    env = uv_env(tmp_path, **{name: filled(value) for name, value in config["env"].items()})
    return StdioServerParameters(
        command=str(UV), args=[filled(arg) for arg in config["args"]], env=env
    )


async def test_the_bundle_runs_as_claude_desktop_runs_it(
    bundle: Path, piper_home: Path, tmp_path: Path
) -> None:
    """The local vault; the cloud fields left empty."""
    params = bundle_server(bundle, tmp_path, {"piper_home": str(piper_home)})
    async with Client(params) as client:
        listed = await client.call_tool("list_variables", {})
    assert listed.structured_content["vault"] == str(piper_home)
    assert [v["variable"] for v in listed.structured_content["variables"]] == ["openai_api_key"]


async def test_the_bundle_serves_a_secretless_cloud_agent(
    bundle: Path, piper_home: Path, tmp_path: Path
) -> None:
    """No client secret given (protocol v2): it starts. Only tools/list, no call: the
    Piper cloud is never contacted from a test."""
    settings = {"use_local_vault": "false", "piper_home": str(piper_home)}
    settings |= {"client_id": "research-bot", "variables": "openai_api_key"}
    async with Client(bundle_server(bundle, tmp_path, settings)) as client:
        tools = await client.list_tools()
    assert "get_secret" in [tool.name for tool in tools.tools]


# --- server.json ---------------------------------------------------------------------


class EnvironmentVariable(BaseModel, extra="forbid"):
    name: str
    description: str
    isRequired: bool = False
    isSecret: bool = False
    format: Literal["string", "number", "boolean", "filepath"] = "string"


class Package(BaseModel, extra="forbid"):
    registryType: str
    registryBaseUrl: str
    identifier: str
    version: str = Field(min_length=1, pattern=r"^[^^~<>=*x]+$")  # one version, no range
    runtimeHint: str
    transport: dict[str, Literal["stdio"]]
    packageArguments: list[dict[str, str]]
    environmentVariables: list[EnvironmentVariable]


class ServerDetail(BaseModel, extra="forbid"):
    """The registry's server.json (schema 2025-12-11, the one `mcp-publisher` takes), as
    far as this file uses it: the fields, their types and the documented limits."""

    schema_: str = Field(alias="$schema", pattern=r"/2025-12-11/server\.schema\.json$")
    name: str = Field(pattern=r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$", min_length=3, max_length=200)
    title: str = Field(min_length=1, max_length=100)
    description: str = Field(min_length=1, max_length=100)
    version: str
    packages: list[Package]


def test_server_json_has_the_registrys_shape() -> None:
    text = (ROOT / "server.json").read_text()
    ServerDetail.model_validate_json(text)
    broken = json.loads(text)
    broken["packages"][0]["transport"] = {"type": "pipe"}
    with pytest.raises(ValidationError):  # the shape is checked, not only parsed
        ServerDetail.model_validate(broken)


def test_server_json_describes_this_package() -> None:
    detail = json.loads((ROOT / "server.json").read_text())
    assert detail["version"] == PROJECT["version"]
    for package in detail["packages"]:
        assert (package["registryType"], package["identifier"]) == ("pypi", PROJECT["name"])
        assert package["version"] == PROJECT["version"]
        assert package["transport"] == {"type": "stdio"}
        arguments = [argument["value"] for argument in package["packageArguments"]]
        _parser().parse_args(arguments)  # exits on arguments piper-mcp does not take
        variables = package["environmentVariables"]
        for variable in variables:
            assert f"`{variable['name']}`" in DOCUMENTED, variable["name"]
            assert variable.get("isSecret", False) == ("SECRET" in variable["name"]), variable
        names = {variable["name"] for variable in variables}
        assert ("PIPER_HOME" in names) == ("--local" in arguments)


# --- uvx from a wheel ----------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(folder),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = folder.glob("piper_mcp-*.whl")
    with zipfile.ZipFile(built) as packed:
        assert any(name.endswith("licenses/LICENSE") for name in packed.namelist())
    yield built


def test_the_wheel_proves_the_registry_name(wheel: Path) -> None:
    """The registry takes server.json for a PyPI package whose description names it."""
    name = json.loads((ROOT / "server.json").read_text())["name"]
    with zipfile.ZipFile(wheel) as packed:
        [metadata] = [n for n in packed.namelist() if n.endswith(".dist-info/METADATA")]
        assert f"mcp-name: {name}" in packed.read(metadata).decode()


async def test_uvx_runs_serve_local_from_the_wheel(
    wheel: Path, piper_home: Path, tmp_path: Path
) -> None:
    # README: uvx --from piper_mcp-<version>-py3-none-any.whl piper-mcp serve --local
    params = StdioServerParameters(
        command=str(UV.with_name("uvx")),
        args=["--from", str(wheel), "piper-mcp", "serve", "--local"],
        env=uv_env(tmp_path, PIPER_HOME=str(piper_home)),
    )
    async with Client(params) as client:
        tools = await client.list_tools()
        got = await client.call_tool("get_secret", {"variable": "openai_api_key"})
    assert [tool.name for tool in tools.tools] == [
        "get_secret",
        "call_api",
        "check_link",
        "list_variables",
    ]
    assert got.structured_content["source"] == "piper_sts"
