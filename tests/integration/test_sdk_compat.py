"""The published SDK (pyper-sdk 0.7.1) and this client agree on names and result shapes.

The SDK is installed as a test dependency and run for real: its own
normalization, its own environment fallback, and its own Piper flow against
the local backend over TLS (the SDK insists on HTTPS).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import piper_sdk
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from piper_sdk.client import PiperClient as SdkClient

from piper_mcp.local.server_thread import LocalBackend, Tls
from piper_mcp.piper import PiperClient, env_var_name, normalize_variable_name
from tests.conftest import AGENT_ID, INSTANCE_ID, OPENAI_VALUE, seeded_vault

logging.getLogger("piper_sdk.client").setLevel(logging.CRITICAL)

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00="),
    min_size=1,
    max_size=40,
)


@given(names)
def test_variable_names_normalize_as_the_sdk_sends_them(name: str) -> None:
    sdk_normalized = SdkClient._normalize_variable_name(None, name.strip())  # type: ignore[arg-type]
    assert normalize_variable_name(name) == sdk_normalized


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names.filter(lambda n: n.strip()), prefix=st.sampled_from(["", "MYAPP_", "X1_"]))
def test_environment_names_are_the_ones_the_sdk_reads(
    monkeypatch: pytest.MonkeyPatch, name: str, prefix: str
) -> None:
    ours = env_var_name(name.strip(), prefix)
    monkeypatch.setenv(ours, "value")
    sdk = SdkClient("agent", use_piper=False, env_variable_prefix=prefix)
    found = sdk.get_secret(name)
    assert found["env_var_name_used"] == ours
    monkeypatch.delenv(ours)


@pytest.fixture(scope="module")
def tls_piper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalBackend, Path]]:
    folder = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    served = folder / "server.pem"
    authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(served)
    )
    ca_file = folder / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with LocalBackend(
        seeded_vault(folder / "vault"), instance_id=INSTANCE_ID, tls=Tls(served, served)
    ) as backend:
        yield backend, ca_file


def test_results_have_the_sdks_keys(
    tls_piper: tuple[LocalBackend, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, ca_file = tls_piper
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    monkeypatch.setenv("SLACK_TOKEN", "from-env")
    urls = backend.client_settings()
    sdk_urls = {
        key: urls[key]
        for key in (
            "resolve_mapping_url",
            "get_scoped_url",
            "exchange_secret_url",
            "piper_link_service_url",
        )
    }
    sdk = SdkClient(AGENT_ID, **sdk_urls)
    ours = PiperClient(AGENT_ID, ca_bundle=ca_file, **urls)
    with ours:
        for variable, raw in [("OpenAI API Key", False), ("database_url", True)]:
            expected = sdk.get_secret(variable, fetch_raw_secret=raw)
            got = ours.get_secret(variable, fetch_raw_secret=raw).as_dict()
            assert set(got) == set(expected)
            assert got["source"] == expected["source"]
            assert got["piper_instance_id"] == expected["piper_instance_id"] == INSTANCE_ID
        # Secret Manager over the backend's TLS, trusting PIPER_CA_BUNDLE only.
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        assert ours.read_secret_value(ours.get_secret("OpenAI API Key")) == OPENAI_VALUE
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
        expected = sdk.get_secret("slack_token")
        got = ours.get_secret("slack_token").as_dict()
    # The seed README's key for the environment variable; the SDK renamed it per release.
    expected["env_var_name"] = expected.pop("env_var_name_used")
    assert got == expected


def test_the_sdk_exports_every_error_name_we_keep() -> None:
    import piper_mcp.piper as ours

    for name in (
        "PiperError",
        "PiperConfigError",
        "PiperLinkNeededError",
        "PiperAuthError",
        "PiperGrantNeededError",
        "PiperForbiddenError",
        "PiperRawSecretExchangeError",
    ):
        assert hasattr(piper_sdk, name) and hasattr(ours, name), name
    assert os.environ.get("SLACK_TOKEN") is None
