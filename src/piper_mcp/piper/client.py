"""`AsyncPiperClient`: a credential for a logical variable name, from Piper or a fallback.

The order is the published SDK's: Piper (Link → agent token → resolve →
scoped STS token → raw exchange when asked), then, if Piper failed, an
environment variable, then a local JSON file. The client composes the parts
that each do one of these jobs: `PiperFunctions` (the calls), `StsTokenCache`,
`SingleFlight`, `PiperLink` and the fallback tiers.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx
from pydantic import ValidationError
from pydantic_settings import SettingsError

from piper_mcp.piper import fallback, protocol_names, secret_manager, wire
from piper_mcp.piper.errors import (
    PiperAuthError,
    PiperConfigError,
    PiperError,
    PiperGrantNeededError,
)
from piper_mcp.piper.functions import PiperFunctions
from piper_mcp.piper.link import PiperLink
from piper_mcp.piper.names import checked_variable_name, normalize_variable_name
from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.retry import RetryPolicy, within_deadline
from piper_mcp.piper.settings import PiperSettings, fields_from_keywords
from piper_mcp.piper.single_flight import SingleFlight
from piper_mcp.piper.sts_cache import StsTokenCache
from piper_mcp.validation import setting_problems, unparsable_setting

logger = logging.getLogger(__name__)


def settings_error(error: ValidationError) -> PiperConfigError:
    """A settings validation failure, said in terms of the settings a person sets."""
    return PiperConfigError(
        "Invalid Piper configuration: " + "; ".join(setting_problems(error, PiperSettings)) + ".",
        advice="Fix the setting (see docs/configuration.md) and start again.",
    )


def load_settings(**overrides: Any) -> PiperSettings:
    """Settings from `PIPER_*` environment variables (and overrides), or a `PiperConfigError`."""
    try:
        return PiperSettings(**overrides)
    except ValidationError as error:
        raise settings_error(error) from None
    except SettingsError as error:
        # pydantic-settings could not even parse a value (e.g. PIPER_ENV_MAP that is not JSON).
        setting = unparsable_setting(error, PiperSettings)
        raise PiperConfigError(
            f"Invalid Piper configuration: {setting} could not be parsed.",
            advice='Give it as JSON, e.g. PIPER_ENV_MAP=\'{"My API Key": "MY_ENV_VAR"}\'.',
        ) from None


def _own_copy(error: PiperError) -> PiperError:
    """`error` for one caller: concurrent callers share one failed round trip, and each
    adds only what its own fallback tiers tried."""
    mine = type(error).__new__(type(error))
    mine.__dict__.update(error.__dict__)
    mine.args = error.args
    mine.attempts = list(error.attempts)
    return mine


@dataclass(frozen=True)
class VariableSource:
    """Where a variable would come from: `piper`, `environment`, `local_file` or `missing`."""

    variable_name: str
    source: Literal["piper", "environment", "local_file", "missing"]
    credential_id: str | None = None
    env_var_name: str | None = None
    config_file_path: str | None = None
    piper_problem: PiperError | None = None


class AsyncPiperClient:
    """Piper's credential flow over one pooled `httpx.AsyncClient`.

    Takes the published SDK's keyword arguments; whatever is not given comes
    from `PIPER_*` environment variables (the configuration table in docs/configuration.md), so the
    same code runs against the Piper cloud or a local backend.
    `AsyncPiperClient.from_settings()` takes a `PiperSettings` instead.
    Nothing touches the network until the first `get_secret`.
    """

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | None = None,
        *,
        client_secret_name: str | None = None,
        project_id: str | None = None,
        region: str | None = None,
        token_url: str | None = None,
        resolve_mapping_url: str | None = None,
        get_scoped_url: str | None = None,
        exchange_secret_url: str | None = None,
        piper_link_service_url: str | None = None,
        piper_link_instance_id: str | None = None,
        secret_manager_endpoint: str | None = None,
        enable_env_fallback: bool | None = None,
        env_variable_prefix: str | None = None,
        env_variable_map: dict[str, str] | None = None,
        local_config_file_path: str | Path | None = None,
        piper_ui_grant_page_url: str | None = None,
        ca_bundle: str | Path | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        overrides = fields_from_keywords(
            {
                "client_id": client_id,
                "client_secret": client_secret,
                "client_secret_name": client_secret_name,
                "project_id": project_id,
                "region": region,
                "token_url": token_url,
                "resolve_mapping_url": resolve_mapping_url,
                "get_scoped_url": get_scoped_url,
                "exchange_secret_url": exchange_secret_url,
                "piper_link_service_url": piper_link_service_url,
                "piper_link_instance_id": piper_link_instance_id,
                "secret_manager_endpoint": secret_manager_endpoint,
                "enable_env_fallback": enable_env_fallback,
                "env_variable_prefix": env_variable_prefix,
                "env_variable_map": env_variable_map,
                "local_config_file_path": local_config_file_path,
                "piper_ui_grant_page_url": piper_ui_grant_page_url,
                "ca_bundle": ca_bundle,
            }
        )
        if client_secret is not None or client_secret_name is not None:
            # One way of giving the secret, stated explicitly, replaces the other from the env.
            overrides.setdefault("client_secret", None)
            overrides.setdefault("client_secret_name", None)
        self._setup(load_settings(**overrides), http_client)

    @classmethod
    def from_settings(
        cls, settings: PiperSettings | None = None, *, http_client: httpx.AsyncClient | None = None
    ) -> AsyncPiperClient:
        """A client configured by `settings`, or by `PIPER_*` environment variables."""
        client = cls.__new__(cls)
        client._setup(settings or load_settings(), http_client)
        return client

    def _setup(self, settings: PiperSettings, http_client: httpx.AsyncClient | None) -> None:
        self.settings = settings
        # Called with every secret value, token and client secret this client handles,
        # so an embedding application can scrub them from its logs (piper-mcp does).
        self.on_sensitive: Callable[[str], None] = lambda _: None
        self._owns_http = http_client is None
        ca_bundle = str(settings.ca_bundle) if settings.ca_bundle else None
        self._http = http_client or wire.new_http_client(ca_bundle)
        self._retry = RetryPolicy(attempts=settings.retry_attempts)
        self.link = PiperLink(
            settings.link_url, self._http, settings.instance_id, timeout=settings.link_timeout
        )
        self.functions = PiperFunctions(
            settings,
            self._http,
            self.link,
            retry=self._retry,
            report=lambda value: self.on_sensitive(value),
        )
        self.tokens = self.functions.tokens
        self.sts_tokens = StsTokenCache(settings.revocation_window)
        self._credentials: SingleFlight[SecretResult] = SingleFlight()
        self._resolves: SingleFlight[str] = SingleFlight()

    # --- SDK-compatible attributes ---

    @property
    def client_id(self) -> str | None:
        return self.settings.client_id

    @property
    def env_variable_prefix(self) -> str:
        return self.settings.env_prefix

    @property
    def env_variable_map(self) -> dict[str, str]:
        return self.settings.env_map

    @property
    def protocol_version(self) -> int:
        return self.settings.protocol_version

    # --- lifecycle ---

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncPiperClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- the public flow ---

    async def get_secret(
        self,
        variable_name: str,
        enable_env_fallback_for_this_call: bool | None = None,
        fallback_env_var_name: str | None = None,
        fetch_raw_secret: bool = False,
    ) -> SecretResult:
        """A credential for `variable_name`: Piper's STS token, or a raw value when asked.

        Raises `PiperVariableNameError` for a bad name before anything is sent;
        when every tier fails, raises Piper's error with `attempts` naming
        what the fallback tiers tried.
        """
        name = checked_variable_name(variable_name)
        try:
            return await self.get_from_piper(name, fetch_raw_secret=fetch_raw_secret)
        except PiperError as error:
            piper_error = _own_copy(error)
        logger.info("Piper did not provide %r: %s", name, piper_error.message)
        use_env = self.settings.env_fallback
        if enable_env_fallback_for_this_call is not None:
            use_env = enable_env_fallback_for_this_call
        found, tried = fallback.first_fallback(
            name, self.settings, use_env=use_env, override_env_name=fallback_env_var_name
        )
        if found is not None:
            return self._reported(found)
        piper_error.attempts.extend(tried)
        raise piper_error

    async def get_from_piper(
        self, variable_name: str, *, fetch_raw_secret: bool = False
    ) -> SecretResult:
        """Piper's credential for `variable_name`, asking no fallback tier; a `PiperError` if
        Piper does not provide it.

        Within PIPER_RETRY_DEADLINE; one Piper round trip for concurrent callers
        asking the same thing, and an STS token reused within the revocation window.
        """
        name = checked_variable_name(variable_name)
        if not fetch_raw_secret:
            cached = self.sts_tokens.get(name)
            if cached is not None:
                return self._reported(cached)
        key = ("raw" if fetch_raw_secret else "sts", normalize_variable_name(name))
        return self._reported(
            await self._credentials.run(
                key, lambda: self._from_piper_in_time(name, fetch_raw_secret)
            )
        )

    async def _from_piper_in_time(self, name: str, fetch_raw_secret: bool) -> SecretResult:
        self.sts_tokens.discard(name)
        async with within_deadline(self.settings.retry_deadline):
            try:
                result = await self.functions.credential(name, fetch_raw_secret)
            except PiperAuthError as error:
                # A discovered instanceId the backend no longer knows: ask Link again, once.
                if error.error_code != protocol_names.INVALID_REQUEST or not self.link.forget():
                    raise
                logger.info("Piper rejected the user context; asking Piper Link again.")
                self.tokens.clear()
                result = await self.functions.credential(name, fetch_raw_secret)
        if result.source == "piper_sts":
            self.sts_tokens.put(name, result)
        return result

    def _reported(self, result: SecretResult) -> SecretResult:
        value = result.value
        self.on_sensitive(value if isinstance(value, str) else json.dumps(value))
        return result

    async def locate(self, variable_name: str) -> VariableSource:
        """Where `variable_name` would come from now, without fetching a credential.

        Asks Piper only to resolve the mapping (no STS token is minted), within
        PIPER_RETRY_DEADLINE and once for all concurrent callers of one
        variable; for the fallback tiers it only looks whether a value exists.
        Never raises for a tier that fails: `piper_problem` says why Piper did
        not answer.
        """
        name = checked_variable_name(variable_name)
        try:
            credential_id = await self._resolves.run(
                normalize_variable_name(name), lambda: self._resolve_in_time(name)
            )
        except PiperError as error:
            return self.locate_fallback(name, error)
        return VariableSource(name, "piper", credential_id=credential_id)

    async def _resolve_in_time(self, name: str) -> str:
        async with within_deadline(self.settings.retry_deadline):
            return await self.functions.resolve(name, await self.functions.user_context())

    def locate_fallback(
        self, variable_name: str, piper_problem: PiperError | None = None
    ) -> VariableSource:
        """Where `variable_name` would come from if Piper does not provide it; asks no one.

        `environment`, `local_file` or `missing`, carrying `piper_problem` (why
        Piper did not provide it, when the caller knows).
        """
        name = checked_variable_name(variable_name)
        found, _ = fallback.first_fallback(name, self.settings, use_env=self.settings.env_fallback)
        if found is None:
            return VariableSource(name, "missing", piper_problem=piper_problem)
        if found.source == "environment_variable":
            return VariableSource(
                name, "environment", env_var_name=found.env_var_name, piper_problem=piper_problem
            )
        return VariableSource(
            name,
            "local_file",
            config_file_path=found.config_file_path,
            piper_problem=piper_problem,
        )

    async def check_agent(self) -> None:
        """Raise the `PiperError` that keeps this agent from asking Piper anything, if any.

        v1: fetches an agent token (proves the client secret); v2: resolves a
        name nobody grants (any answer but `mapping_not_found` is a problem).
        """
        async with within_deadline(self.settings.retry_deadline):
            instance_id = await self.functions.user_context()
            if self.protocol_version == 1:
                await self.functions.agent_token(
                    protocol_names.RESOLVE_MAPPING_FUNCTION, instance_id
                )
                return
            with contextlib.suppress(PiperGrantNeededError):
                await self.functions.resolve("piper_mcp_agent_check", instance_id)

    async def read_secret_value(self, result: SecretResult) -> str:
        """The secret itself: for `piper_sts`, read from Secret Manager with the STS token.

        Within PIPER_RETRY_DEADLINE. A token Secret Manager no longer accepts
        (expired, or dropped by the backend) is forgotten, and the read made once
        more with a fresh token for the same variable.
        """
        if result.source != "piper_sts":
            return result.value if isinstance(result.value, str) else str(result.value)
        assert isinstance(result.value, str) and result.piper_credential_id
        async with within_deadline(self.settings.retry_deadline, waiting_for="Secret Manager"):
            try:
                value = await self._read_with_token(result.piper_credential_id, result.value)
            except secret_manager.TokenRejected as rejected:
                if not result.variable_name:
                    raise rejected.error from None
                logger.info("Secret Manager refused the STS token; asking Piper for a new one.")
                self.sts_tokens.forget(result.variable_name, result.value)
                fresh = await self.get_from_piper(result.variable_name)
                assert isinstance(fresh.value, str) and fresh.piper_credential_id
                try:
                    value = await self._read_with_token(fresh.piper_credential_id, fresh.value)
                except secret_manager.TokenRejected as again:
                    raise again.error from None
        self.on_sensitive(value)
        return value

    async def _read_with_token(self, credential_id: str, token: str) -> str:
        return await secret_manager.read_with_token(
            self._http,
            secret_manager.secret_version_name(self.settings.project_id, credential_id),
            token,
            endpoint=self.settings.secret_manager_endpoint,
            attempt_timeout=self.settings.retry_deadline,
            retry=self._retry,
        )
