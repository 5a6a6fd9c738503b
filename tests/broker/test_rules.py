"""The operator's rules: PIPER_MCP_API_RULES, `--use` and `--inject`, and what a mistake says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from piper_mcp.broker.rules import (
    BEARER,
    PRESETS,
    ApiRule,
    Injection,
    RuleError,
    parse_injection,
    parse_rules,
    rule_from_use,
)


def test_a_preset_name_is_a_rule() -> None:
    rules = parse_rules('{"OPENAI_API_KEY": "openai", "ANTHROPIC_API_KEY": "anthropic"}')

    assert rules["OPENAI_API_KEY"].hosts == ("api.openai.com",)
    assert str(rules["OPENAI_API_KEY"].inject) == "Authorization: Bearer {value}"
    assert str(rules["ANTHROPIC_API_KEY"].inject) == "x-api-key: {value}"


def test_the_google_preset_sends_piper_s_token_to_google_apis_only() -> None:
    google = PRESETS["google"]

    assert google.credential == "token"
    assert "secretmanager.googleapis.com" in google.hosts
    assert all(host.endswith(".googleapis.com") for host in google.hosts)


def test_every_preset_sends_to_public_https_hosts_only() -> None:
    assert set(PRESETS) == {"openai", "anthropic", "github", "slack", "notion", "stripe", "google"}
    for rule in PRESETS.values():
        assert not rule.allow_private
        assert all(":" not in host for host in rule.hosts)  # port 443


def test_a_rule_object_takes_the_short_injection_form() -> None:
    rules = parse_rules(
        json.dumps(
            {
                "WEATHER_KEY": {
                    "hosts": ["API.Weather.example.", "api.weather.example:8443"],
                    "inject": "query:appid",
                    "max_response_bytes": 65536,
                    "timeout": 5,
                },
                "INTERNAL_TOKEN": {
                    "hosts": ["10.0.0.7:8443", "[FD00::7]"],
                    "inject": {"where": "header", "name": "X-Token"},
                    "allow_private": True,
                },
            }
        )
    )

    weather = rules["WEATHER_KEY"]
    assert weather.hosts == ("api.weather.example", "api.weather.example:8443")
    assert weather.inject == Injection(where="query", name="appid")
    assert (weather.max_response_bytes, weather.timeout) == (65536, 5.0)
    internal = rules["INTERNAL_TOKEN"]
    assert internal.hosts == ("10.0.0.7:8443", "[fd00::7]")
    assert internal.inject.format == "{value}"
    assert internal.allow_private


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("api.example.com", "api.example.com"),
        ("API.EXAMPLE.COM.", "api.example.com"),
        ("api.example.com:443", "api.example.com"),
        ("api.example.com:8443", "api.example.com:8443"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "[::1]"),
        ("[::1]:8443", "[::1]:8443"),
    ],
)
def test_hosts_are_kept_in_one_comparable_form(host: str, canonical: str) -> None:
    assert ApiRule(hosts=(host,), inject=BEARER).hosts == (canonical,)


def test_a_stored_rule_reads_back_as_written() -> None:
    """A local grant stores its rule as JSON; it must come back equal."""
    rule = rule_from_use("api.example.com,uploads.example.com:8443", "query:key")

    assert ApiRule.model_validate_json(rule.model_dump_json()) == rule
    assert ApiRule.model_validate_json(PRESETS["google"].model_dump_json()) == PRESETS["google"]


@pytest.mark.parametrize(
    ("text", "injection"),
    [
        ("Authorization: Bearer {value}", BEARER),
        ("X-Api-Key: {value}", Injection(where="header", name="X-Api-Key")),
        ("X-Api-Key:{value}", Injection(where="header", name="X-Api-Key")),
        ("query:key", Injection(where="query", name="key")),
        ("query: api_key", Injection(where="query", name="api_key")),
        (
            "Authorization: token {value}",
            Injection(where="header", name="Authorization", format="token {value}"),
        ),
    ],
)
def test_the_short_injection_form(text: str, injection: Injection) -> None:
    assert parse_injection(text) == injection


@pytest.mark.parametrize(
    ("use", "inject", "hosts", "injected"),
    [
        ("openai", None, ("api.openai.com",), "Authorization: Bearer {value}"),
        ("OpenAI", None, ("api.openai.com",), "Authorization: Bearer {value}"),
        ("api.example.com", None, ("api.example.com",), "Authorization: Bearer {value}"),
        (
            "api.example.com, other.example.com:8443",
            "X-Api-Key: {value}",
            ("api.example.com", "other.example.com:8443"),
            "X-Api-Key: {value}",
        ),
        ("api.example.com", "query:key", ("api.example.com",), "query:key"),
        ("anthropic", "X-Other: {value}", ("api.anthropic.com",), "X-Other: {value}"),
    ],
)
def test_use_and_inject_from_the_command_line(
    use: str, inject: str | None, hosts: tuple[str, ...], injected: str
) -> None:
    rule = rule_from_use(use, inject)

    assert (rule.hosts, str(rule.inject)) == (hosts, injected)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "PIPER_MCP_API_RULES is not JSON"),
        ('["openai"]', "PIPER_MCP_API_RULES must be a JSON object"),
        ('{"KEY": "opnai"}', "names 'opnai', which is no preset; use one of openai, anthropic"),
        ('{"KEY": 3}', "must be a preset name"),
        ('{"KEY": {"inject": "query:key"}}', "'hosts' is missing"),
        ('{"KEY": {"hosts": [], "inject": "query:key"}}', "'hosts'"),
        ('{"KEY": {"hosts": ["https://api.example.com"], "inject": "query:key"}}', "is not a host"),
        ('{"KEY": {"hosts": ["api.example.com/v1"], "inject": "query:key"}}', "is not a host"),
        ('{"KEY": {"hosts": ["user@api.example.com"], "inject": "query:key"}}', "is not a host"),
        ('{"KEY": {"hosts": ["api.example.com:0"], "inject": "query:key"}}', "is not a host"),
        ('{"KEY": {"hosts": ["api.example.com:99999"], "inject": "query:key"}}', "is not a host"),
        ('{"KEY": {"hosts": ["a..b"], "inject": "query:key"}}', "is not a host"),
        (
            '{"KEY": {"hosts": ["a.example"], "inject": "X-Key"}}',
            "does not say where the credential goes",
        ),
        ('{"KEY": {"hosts": ["a.example"], "inject": "X-Key: {value} {value}"}}', "exactly once"),
        (
            '{"KEY": {"hosts": ["a.example"], "inject": "Host: {value}"}}',
            "cannot go in the Host header",
        ),
        (
            '{"KEY": {"hosts": ["a.example"], "inject": "Proxy-Authorization: {value}"}}',
            "cannot go in",
        ),
        ('{"KEY": {"hosts": ["a.example"], "inject": "X Key: {value}"}}', "is not a header name"),
        (
            '{"KEY": {"hosts": ["a.example"], "inject": "query:a&b"}}',
            "is not a query parameter name",
        ),
        ('{"KEY": {"hosts": ["a.example"], "inject": "X-Key: \\u001b{value}"}}', "plain ASCII"),
        (
            '{"KEY": {"hosts": ["a.example"], "inject": "query:key", "verify": false}}',
            "'verify' is not a rule field",
        ),
        ('{"KEY": {"hosts": ["a.example"], "inject": "query:key", "timeout": 0}}', "'timeout'"),
        (
            '{"KEY": {"hosts": ["a.example"], "inject": "query:key", "credential": "raw"}}',
            "'credential'",
        ),
    ],
)
def test_a_wrong_rule_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(RuleError) as wrong:
        parse_rules(text)

    assert says in str(wrong.value)


@pytest.mark.parametrize(
    ("use", "inject", "says"),
    [
        ("opnai", None, "'opnai' is neither a preset (openai, anthropic"),
        ("api.example.com", "X-Api-Key", 'write a header as "X-Api-Key: {value}"'),
        ("api.example.com,", "Content-Length: {value}", "cannot go in the Content-Length header"),
        ("https://api.example.com", None, "is not a host"),
    ],
)
def test_a_wrong_use_says_what_is_wrong(use: str, inject: str | None, says: str) -> None:
    with pytest.raises(RuleError) as wrong:
        rule_from_use(use, inject)

    assert says in str(wrong.value)


def test_a_single_host_may_be_written_without_a_list() -> None:
    rules = parse_rules('{"KEY": {"hosts": "api.example.com", "inject": "query:key"}}')

    assert rules["KEY"].hosts == ("api.example.com",)


def test_no_rules_is_an_empty_setting() -> None:
    assert parse_rules("") == parse_rules("  ") == parse_rules("{}") == {}


def test_the_docs_and_the_grant_help_name_every_preset_as_it_is() -> None:
    """docs/out-of-the-model.md's table and `local grant --help` list the presets by hand."""
    docs = (Path(__file__).parents[2] / "docs" / "out-of-the-model.md").read_text()
    table = docs.split("<!-- presets:begin -->")[1].split("<!-- presets:end -->")[0]
    rows = {row.split("|")[1].strip(" `"): row for row in table.splitlines()[3:]}
    assert set(rows) == set(PRESETS)
    for name, rule in PRESETS.items():
        assert all(f"`{host}`" in rows[name] for host in rule.hosts)
        assert f"`{rule.inject}`" in rows[name]
    shown = subprocess.run(
        [sys.executable, "-m", "piper_mcp", "local", "grant", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(name in " ".join(shown.split()) for name in PRESETS)
