"""`piper-mcp local`: a vault a person can create, fill, grant from and inspect."""

from __future__ import annotations

import base64
import sqlite3
import stat
from pathlib import Path

import pytest

from piper_mcp.local.vault import Vault
from tests.cli.conftest import Cli

SECRET_VALUE = "sk-canary-cli-value-5d1e"


@pytest.fixture
def vault(cli: Cli, piper_home: Path) -> Cli:
    """A vault with one agent, one secret and one grant (made directly, to keep tests fast)."""
    made, _ = Vault.init(piper_home)
    me = made.local_user_id
    made.add_agent("research", None, owner_user_id=me, variables=["openai_api_key", "Database URL"])
    made.put_secret("My OpenAI", SECRET_VALUE, owner_user_id=me)
    made.grant(me, "research", "openai_api_key", "My OpenAI")
    made.close()
    return cli


def contents(piper_home: Path) -> list[str]:
    """Every row of the vault, as SQL."""
    with sqlite3.connect(piper_home / "vault.sqlite3") as db:
        return list(db.iterdump())


def test_the_commands_make_the_vault_the_other_tests_start_from(cli_process: Cli) -> None:
    """As separate `piper-mcp local` processes, stdin a pipe; the other tests run in-process."""
    cli = cli_process
    assert cli("local", "init").code == 0
    assert (
        cli(
            "local",
            "agent",
            "add",
            "research",
            "--variable",
            "openai_api_key",
            "--variable",
            "Database URL",
        ).code
        == 0
    )
    assert cli("local", "secret", "set", "My OpenAI", stdin=SECRET_VALUE + "\n").code == 0
    assert cli("local", "grant", "research", "openai_api_key", "My OpenAI").code == 0
    [grant] = cli("local", "grants", "--json").json()
    assert (grant["agent"], grant["variable"], grant["secret"]) == (
        "research",
        "openai_api_key",
        "My OpenAI",
    )


def test_every_command_that_reads_or_changes_the_vault_names_it(cli: Cli, piper_home: Path) -> None:
    """A host may serve another vault than the shell's (issue 12.2): the output says which."""
    cli("local", "init")
    said = [
        cli("local", "agent", "add", "research", "--variable", "openai_api_key"),
        cli("local", "secret", "set", "My OpenAI", stdin=SECRET_VALUE),
        cli("local", "grant", "research", "openai_api_key", "My OpenAI"),
        *(cli("local", *words) for words in (["grants"], ["secret", "list"], ["agent", "list"])),
        cli("local", "audit"),
        cli("local", "requests"),
        cli("local", "revoke", "research", "openai_api_key"),
        cli("local", "secret", "remove", "My OpenAI"),
        cli("local", "agent", "remove", "research"),
    ]
    for done in said:
        assert done.code == 0, done.err
        assert done.out.endswith(f"Vault: {piper_home}\n"), done.out
    assert "Vault:" not in cli("local", "grants", "--json").out  # JSON stays one document


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_an_owner_only_vault_and_a_separate_key(cli: Cli, piper_home: Path) -> None:
    done = cli("local", "init", "--json")
    assert done.code == 0
    assert done.json()["created"] is True
    assert mode(piper_home) == 0o700
    assert mode(piper_home / "vault.sqlite3") == 0o600
    assert mode(piper_home / "vault.key") == 0o600


def test_init_again_changes_nothing_and_says_so(cli: Cli, piper_home: Path) -> None:
    first = cli("local", "init", "--json").json()
    key = (piper_home / "vault.key").read_bytes()
    again = cli("local", "init")
    assert again.code == 0
    assert "already exists" in again.out and "nothing changed" in again.out
    assert (piper_home / "vault.key").read_bytes() == key
    assert cli("local", "init", "--json").json()["instance_id"] == first["instance_id"]


def test_files_created_later_stay_owner_only(vault: Cli, piper_home: Path) -> None:
    for path in piper_home.iterdir():
        assert mode(path) == 0o600, path


def test_secret_values_and_client_secrets_are_not_in_the_database(
    cli: Cli, piper_home: Path
) -> None:
    cli("local", "init")
    added = cli("local", "agent", "add", "research", "--variable", "x", "--json").json()
    cli("local", "secret", "set", "My OpenAI", stdin=SECRET_VALUE)
    stored = b"".join(path.read_bytes() for path in piper_home.iterdir())
    assert SECRET_VALUE.encode() not in stored
    assert added["client_secret"].encode() not in stored


def test_agent_add_shows_a_generated_secret_once(cli: Cli) -> None:
    cli("local", "init")
    added = cli("local", "agent", "add", "research", "--variable", "openai_api_key")
    assert added.code == 0
    secret = added.out.strip().splitlines()[-1]
    assert len(secret) >= 40
    listed = cli("local", "agent", "list", "--json")
    assert [(a["client_id"], a["variables"]) for a in listed.json()] == [
        ("local-agent", []),  # every vault's default agent, for `serve --local`
        ("research", ["openai_api_key"]),
    ]
    assert secret not in listed.out


def test_agent_add_takes_a_secret_from_stdin(cli: Cli) -> None:
    cli("local", "init")
    added = cli(
        "local",
        "agent",
        "add",
        "ci-bot",
        "--variable",
        "k",
        "--secret-stdin",
        "--json",
        stdin="chosen-secret-of-at-least-32-characters\n",
    )
    assert added.code == 0
    assert "client_secret" not in added.json()


@pytest.mark.parametrize("weak", ["", "   ", "short-secret", "x" * 31])
def test_agent_add_refuses_an_empty_blank_or_short_secret_and_writes_nothing(
    cli: Cli, weak: str
) -> None:
    """Issue 9.7: a guessable client secret is a configuration error (32 characters or more)."""
    cli("local", "init")
    added = cli("local", "agent", "add", "ci-bot", "--variable", "k", "--secret-stdin", stdin=weak)
    assert added.code == 1
    assert added.err.count("\n") == 1 and "Traceback" not in added.err
    assert "32" in added.err or "empty" in added.err
    assert "ci-bot" not in cli("local", "agent", "list").out


def test_secret_list_shows_names_and_ids_never_values(vault: Cli) -> None:
    listed = vault("local", "secret", "list", "--json")
    [entry] = listed.json()
    assert entry["name"] == "My OpenAI"
    assert entry["id"].startswith("cred-")
    assert SECRET_VALUE not in listed.out + vault("local", "secret", "list").out


@pytest.mark.parametrize("typed", [["sk-typed-canary-91f3", "again"], ["-sk-typed-canary-91f3"]])
def test_a_secret_value_is_never_taken_from_the_command_line(vault: Cli, typed: list[str]) -> None:
    """Refused, and never echoed back (argparse would, in "unrecognized arguments", even
    for a value that looks like an option)."""
    done = vault("local", "secret", "set", "Other", *typed)
    assert done.code == 1 and done.out == ""
    assert "sk-typed-canary" not in done.err and "again" not in done.err
    assert "never given on the command line" in done.err and "hidden prompt" in done.err
    assert "quoted if it has spaces (`piper-mcp local secret set 'My OpenAI key'`)" in done.err
    assert "Other" not in vault("local", "secret", "list").out


def test_other_commands_still_name_what_they_do_not_take(vault: Cli) -> None:
    done = vault("local", "grants", "--colour")
    assert done.code == 2 and "unrecognized arguments: --colour" in done.err


def test_setting_a_secret_again_keeps_its_id(vault: Cli) -> None:
    before = vault("local", "secret", "list", "--json").json()[0]["id"]
    assert vault("local", "secret", "set", "My OpenAI", stdin="rotated").code == 0
    assert vault("local", "secret", "list", "--json").json()[0]["id"] == before


def test_a_grant_can_say_where_call_api_may_send_it(vault: Cli) -> None:
    preset = vault("local", "grant", "research", "openai_api_key", "My OpenAI", "--use", "openai")
    assert preset.code == 0, preset.err
    assert "call_api may send it to api.openai.com (Authorization: Bearer {value})" in preset.out
    hosts = vault(
        "local",
        "grant",
        "research",
        "weather_key",
        "My OpenAI",
        "--use",
        "api.weather.example",
        "--inject",
        "query:appid",
    )
    assert hosts.code == 0 and "(query:appid)" in hosts.out
    listed = {g["variable"]: g["call_api_hosts"] for g in vault("local", "grants", "--json").json()}
    assert listed == {"openai_api_key": ["api.openai.com"], "weather_key": ["api.weather.example"]}
    assert "call_api: api.openai.com" in vault("local", "grants").out


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--use", "no-such-preset!"], "no-such-preset!"),
        (["--use", "http://api.example.com"], "api.example.com"),
        (["--inject", "query:key"], "add --use"),
        (["--use", "api.example.com", "--inject", "X-Key: nothing"], "{value}"),
    ],
)
def test_a_grant_with_a_rule_that_cannot_work_changes_nothing(
    vault: Cli, flags: list[str], said: str
) -> None:
    before = vault("local", "grants", "--json").json()
    done = vault("local", "grant", "research", "other_key", "My OpenAI", *flags)
    assert done.code != 0 and said in done.err
    assert len(done.err.strip().splitlines()) == 1 and "Traceback" not in done.err
    assert vault("local", "grants", "--json").json() == before


def test_grants_revoke_and_remove(vault: Cli) -> None:
    assert vault("local", "grants", "--json").json()[0] | {"created": ""} == {
        "agent": "research",
        "variable": "openai_api_key",
        "secret": "My OpenAI",
        "status": "ACTIVE",
        "created": "",
        "call_api_hosts": [],
    }
    assert vault("local", "revoke", "research", "openai_api_key").code == 0
    assert vault("local", "grants", "--json").json() == []
    again = vault("local", "revoke", "research", "openai_api_key")
    assert (again.code, again.err.strip()) == (
        1,
        "piper-mcp local: agent 'research' has no grant of 'openai_api_key'",
    )
    assert vault("local", "grant", "research", "Database URL", "My OpenAI").code == 0
    assert vault("local", "secret", "remove", "My OpenAI").code == 0
    assert vault("local", "grants", "--json").json() == []
    assert vault("local", "agent", "remove", "research").code == 0
    assert [a["client_id"] for a in vault("local", "agent", "list", "--json").json()] == [
        "local-agent"
    ]


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (("agent", "add", "bad\x07id", "--variable", "x"), None, "agent id 'bad\\x07id'"),
        (("agent", "add", "a" * 10_000, "--variable", "x"), None, "1-64 letters"),
        (("agent", "add", "research", "--variable", "x"), None, "already exists"),
        (("agent", "add", "new", "--variable", "bad\x1bvar"), None, "control characters"),
        (("agent", "add", "new", "--variable", "!!!"), None, "no letters or digits"),
        (("secret", "set", "bad\nname"), "v", "control characters"),
        (("secret", "set", "n" * 10_000), "v", "10000 characters long"),
        (("secret", "set", " padded"), "v", "leading or trailing spaces"),
        (("secret", "set", "Empty"), "", "is empty; nothing was written"),
        (("grant", "research", "bad\tvariable", "My OpenAI"), None, "control characters"),
        (("grant", "nobody", "openai_api_key", "My OpenAI"), None, "there is no agent"),
        (("grant", "research", "openai_api_key", "Missing"), None, "there is no secret"),
        (("secret", "remove", "Missing"), None, "there is no secret"),
        (("agent", "remove", "nobody"), None, "there is no agent"),
        (("audit", "--limit", "0"), None, "--limit must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    vault: Cli, piper_home: Path, args: tuple[str, ...], stdin: str | None, says: str
) -> None:
    before = contents(piper_home)
    done = vault("local", *args, stdin=stdin)
    assert done.code == 1
    assert done.err.startswith("piper-mcp local: ") and done.err.count("\n") == 1
    assert says in done.err
    assert contents(piper_home) == before


def test_granting_an_undeclared_variable_declares_it(vault: Cli) -> None:
    done = vault("local", "grant", "research", "Slack Token", "My OpenAI")
    assert done.code == 0
    assert "Declared 'Slack Token' as a variable of 'research'." in done.out
    [agent] = [
        a for a in vault("local", "agent", "list", "--json").json() if a["client_id"] == "research"
    ]
    assert agent["variables"] == ["openai_api_key", "Database URL", "Slack Token"]


def test_commands_without_a_vault_say_how_to_make_one(cli: Cli) -> None:
    done = cli("local", "secret", "list")
    assert done.code == 1
    assert "create one with `piper-mcp local init`" in done.err


def test_a_wrong_or_missing_key_is_clear_and_touches_nothing(vault: Cli, piper_home: Path) -> None:
    database = piper_home / "vault.sqlite3"
    before = database.read_bytes()
    key = piper_home / "vault.key"
    original = key.read_bytes()
    key.write_bytes(base64.b64encode(bytes(range(32))))  # a valid key, not this vault's
    wrong = vault("local", "secret", "set", "New", stdin="v")
    assert wrong.code == 1 and "the key file does not belong to this vault" in wrong.err
    key.unlink()
    missing = vault("local", "grants")
    assert missing.code == 1 and "vault.key is missing" in missing.err
    assert database.read_bytes() == before
    key.write_bytes(original)
    assert vault("local", "secret", "list", "--json").json()[0]["name"] == "My OpenAI"


@pytest.mark.parametrize(
    "command",
    [
        (),
        ("init",),
        ("agent",),
        ("agent", "add"),
        ("agent", "list"),
        ("agent", "remove"),
        ("secret",),
        ("secret", "set"),
        ("secret", "list"),
        ("secret", "remove"),
        ("grant",),
        ("revoke",),
        ("grants",),
        ("serve",),
        ("audit",),
    ],
)
def test_every_command_has_help(cli: Cli, command: tuple[str, ...]) -> None:
    done = cli("local", *command, "--help")
    assert done.code == 0
    assert "usage: piper-mcp local" in done.out


def test_a_mistyped_agent_or_secret_gets_what_there_is_and_the_closest(cli: Cli) -> None:
    """Issue 12.7's neighbours: `local grant` and friends list names, not how to add a typo."""
    cli("local", "init")
    cli("local", "secret", "set", "My OpenAI key", stdin="sk-a-value-long-enough-1234567890")
    agent = cli("local", "grant", "local-agnt", "openai_api_key", "My OpenAI key")
    assert agent.code == 1
    assert agent.err.rstrip().endswith("agents: local-agent. Did you mean 'local-agent'?")
    assert "agent add" not in agent.err
    secret = cli("local", "grant", "local-agent", "openai_api_key", "My OpenAI ky")
    assert secret.err.rstrip().endswith("secrets: 'My OpenAI key'. Did you mean 'My OpenAI key'?")
    new = cli("local", "grant", "local-agent", "slack_token", "Slack bot")
    assert new.err.rstrip().endswith("Store it first: `piper-mcp local secret set 'Slack bot'`")
