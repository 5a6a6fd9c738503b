"""`AsyncPiperClient`: a credential for a logical variable name, from Piper or a fallback.

The order is the published SDK's: Piper (Link → agent token → resolve →
scoped STS token → raw exchange when asked), then, if Piper failed, an
environment variable, then a local JSON file. Protocol v1 authenticates with
an agent token per function; v2 (secretless) names the agent in each body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError

from piper_mcp.piper import fallback, protocol, secret_manager, wire
from piper_mcp.piper.errors import (
    PiperAuthError,
    PiperBackendError,
    PiperConfigError,
    PiperError,
    PiperForbiddenError,
    PiperGrantNeededError,
    PiperLinkNeededError,
    PiperRawSecretExchangeError,
)
from piper_mcp.piper.link import PiperLink
from piper_mcp.piper.names import checked_variable_name, normalize_variable_name
from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.retry import RetryPolicy, time_left, within_deadline
from piper_mcp.piper.settings import PiperSettings
from piper_mcp.piper.tokens import EXPIRY_MARGIN_SECONDS, AgentTokenCache
from piper_mcp.piper.wire import BackendAnswerError

logger = logging.getLogger(__name__)

Answer = Any  # a protocol response model
T = TypeVar("T")


def settings_error(error: ValidationError) -> PiperConfigError:
    """A settings validation failure, said in terms of the settings a person sets."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"])
        setting = f"PIPER_{field.upper()}" if field else "settings"
        problems.append(f"{setting}: {item['msg'].removeprefix('Value error, ')}")
    return PiperConfigError(
        "Invalid Piper configuration: " + "; ".join(problems) + ".",
        advice="Fix the setting (see README's configuration table) and start again.",
    )


def load_settings(**overrides: Any) -> PiperSettings:
    """Settings from `PIPER_*` environment variables (and overrides), or a `PiperConfigError`."""
    try:
        return PiperSettings(**overrides)
    except ValidationError as error:
        raise settings_error(error) from None
    except SettingsError as error:
        # pydantic-settings could not even parse a value (e.g. PIPER_ENV_MAP that is not JSON).
        field = re.search(r'field "(\w+)"', str(error))
        setting = f"PIPER_{field.group(1).upper()}" if field else "A PIPER_* setting"
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
    from `PIPER_*` environment variables (README's configuration table), so the
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
        given = {
            "client_id": client_id,
            "client_secret": client_secret,
            "client_secret_name": client_secret_name,
            "project_id": project_id,
            "region": region,
            "token_url": token_url,
            "resolve_mapping_url": resolve_mapping_url,
            "get_scoped_url": get_scoped_url,
            "exchange_secret_url": exchange_secret_url,
            "link_url": piper_link_service_url,
            "instance_id": piper_link_instance_id,
            "secret_manager_endpoint": secret_manager_endpoint,
            "env_fallback": enable_env_fallback,
            "env_prefix": env_variable_prefix,
            "env_map": env_variable_map,
            "local_config_file": local_config_file_path,
            "grant_page_url": piper_ui_grant_page_url,
            "ca_bundle": ca_bundle,
        }
        overrides: dict[str, Any] = {
            key: value for key, value in given.items() if value is not None
        }
        if client_secret is not None or client_secret_name is not None:
            # One way of giving the secret, stated explicitly, replaces the other from the env.
            overrides.setdefault("client_secret", None)
            overrides.setdefault("client_secret_name", None)
        settings = load_settings(**overrides)
        self._setup(settings, http_client)

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
        self._ca_bundle = str(settings.ca_bundle) if settings.ca_bundle else None
        self._http = http_client or wire.new_http_client(self._ca_bundle)
        self.link = PiperLink(
            settings.link_url, self._http, settings.instance_id, timeout=settings.link_timeout
        )
        self._retry = RetryPolicy(attempts=settings.retry_attempts)
        self._in_flight: dict[tuple[str, ...], asyncio.Task[Any]] = {}
        self._sts_cache: dict[str, tuple[SecretResult, float]] = {}
        self.tokens = AgentTokenCache(self._fetch_agent_token)
        self._client_secret: SecretStr | None = settings.client_secret
        self._client_secret_lock = asyncio.Lock()

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
            return self._reported(await self._shared_from_piper(name, fetch_raw_secret))
        except PiperError as error:
            piper_error = _own_copy(error)
        logger.info("Piper did not provide %r: %s", name, piper_error.message)

        use_env = self.settings.env_fallback
        if enable_env_fallback_for_this_call is not None:
            use_env = enable_env_fallback_for_this_call
        if use_env:
            found = fallback.from_environment(
                name,
                prefix=self.settings.env_prefix,
                env_map=self.settings.env_map,
                override_name=fallback_env_var_name,
            )
            if isinstance(found, SecretResult):
                return self._reported(found)
            piper_error.attempts.append(found)
        if self.settings.local_config_file:
            found = fallback.from_local_file(name, self.settings.local_config_file)
            if isinstance(found, SecretResult):
                return self._reported(found)
            piper_error.attempts.append(found)
        raise piper_error

    async def _shared_from_piper(self, name: str, fetch_raw_secret: bool) -> SecretResult:
        """One Piper round trip for concurrent callers asking for the same thing (single-flight),
        and an STS token reused within the revocation window."""
        if not fetch_raw_secret:
            cached = self._cached_sts(name)
            if cached is not None:
                return cached
        key = ("raw" if fetch_raw_secret else "sts", normalize_variable_name(name))
        return await self._single_flight(
            key, lambda: self._from_piper_in_time(name, fetch_raw_secret)
        )

    async def _single_flight(
        self, key: tuple[str, ...], work: Callable[[], Coroutine[Any, Any, T]]
    ) -> T:
        """One run of `work` for all concurrent callers with the same `key`."""
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._in_flight[key] = task
            task.add_done_callback(lambda _: self._in_flight.pop(key, None))
        # shield: one caller giving up must not cancel the others' answer.
        answer: T = await asyncio.shield(task)
        return answer

    def _cached_sts(self, name: str) -> SecretResult | None:
        entry = self._sts_cache.get(normalize_variable_name(name))
        if entry is None:
            return None
        result, fetched_at = entry
        age = time.monotonic() - fetched_at
        left = None if result.expires_in is None else result.expires_in - age
        if age >= self.settings.revocation_window or (
            left is not None and left < EXPIRY_MARGIN_SECONDS
        ):
            return None
        return result.model_copy(
            update={"expires_in": None if left is None else int(left), "variable_name": name}
        )

    async def _from_piper_in_time(self, name: str, fetch_raw_secret: bool) -> SecretResult:
        key = normalize_variable_name(name)
        self._sts_cache.pop(key, None)
        async with within_deadline(self.settings.retry_deadline):
            try:
                result = await self._from_piper(name, fetch_raw_secret)
            except PiperAuthError as error:
                # A discovered instanceId the backend no longer knows: ask Link again, once.
                if error.error_code != protocol.INVALID_REQUEST or not self.link.forget():
                    raise
                logger.info("Piper rejected the user context; asking Piper Link again.")
                self.tokens.clear()
                result = await self._from_piper(name, fetch_raw_secret)
        if result.source == "piper_sts" and self.settings.revocation_window > 0:
            self._sts_cache[key] = (result, time.monotonic())
        return result

    def _forget_sts(self, name: str, token: str) -> None:
        """Drop the cached STS token for `name` if it is `token` (a reader was refused)."""
        key = normalize_variable_name(name)
        entry = self._sts_cache.get(key)
        if entry is not None and entry[0].value == token:
            del self._sts_cache[key]

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
            credential_id = await self._single_flight(
                ("resolve", normalize_variable_name(name)), lambda: self._resolve_in_time(name)
            )
        except PiperError as error:
            return self.locate_fallback(name, error)
        return VariableSource(name, "piper", credential_id=credential_id)

    async def _resolve_in_time(self, name: str) -> str:
        async with within_deadline(self.settings.retry_deadline):
            return await self._resolve(name, await self._user_context())

    def locate_fallback(
        self, variable_name: str, piper_problem: PiperError | None = None
    ) -> VariableSource:
        """Where `variable_name` would come from if Piper does not provide it; asks no one.

        `environment`, `local_file` or `missing`, carrying `piper_problem` (why
        Piper did not provide it, when the caller knows).
        """
        name = checked_variable_name(variable_name)
        if self.settings.env_fallback:
            found = fallback.from_environment(
                name, prefix=self.settings.env_prefix, env_map=self.settings.env_map
            )
            if isinstance(found, SecretResult):
                return VariableSource(
                    name,
                    "environment",
                    env_var_name=found.env_var_name,
                    piper_problem=piper_problem,
                )
        if self.settings.local_config_file:
            found = fallback.from_local_file(name, self.settings.local_config_file)
            if isinstance(found, SecretResult):
                return VariableSource(
                    name,
                    "local_file",
                    config_file_path=found.config_file_path,
                    piper_problem=piper_problem,
                )
        return VariableSource(name, "missing", piper_problem=piper_problem)

    async def check_agent(self) -> None:
        """Raise the `PiperError` that keeps this agent from asking Piper anything, if any.

        v1: fetches an agent token (proves the client secret); v2: resolves a
        name nobody grants (any answer but `mapping_not_found` is a problem).
        """
        async with within_deadline(self.settings.retry_deadline):
            instance_id = await self._user_context()
            if self.protocol_version == 1:
                url = self.settings.url_for(protocol.RESOLVE_MAPPING_FUNCTION)
                await self.tokens.get(url, instance_id)
                return
            with contextlib.suppress(PiperGrantNeededError):
                await self._resolve("piper_mcp_agent_check", instance_id)

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
                self._forget_sts(result.variable_name, result.value)
                fresh = self._reported(
                    await self._shared_from_piper(result.variable_name, fetch_raw_secret=False)
                )
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

    # --- Piper tier ---

    async def _from_piper(self, name: str, fetch_raw_secret: bool) -> SecretResult:
        instance_id = await self._user_context()
        credential_id = await self._resolve(name, instance_id)
        scoped = await self._scoped(credential_id, instance_id)
        granted = (
            credential_id
            if credential_id in scoped.granted_credential_ids
            else scoped.granted_credential_ids[0]
        )
        if not fetch_raw_secret:
            return SecretResult(
                source="piper_sts",
                value=scoped.access_token,
                token_type="Bearer",
                expires_in=scoped.expires_in,
                piper_credential_id=granted,
                piper_instance_id=instance_id,
                variable_name=name,
            )
        exchanged = await self._exchange(name, granted, instance_id)
        return SecretResult(
            source="piper_raw_secret",
            value=exchanged.secret_value,
            piper_credential_id=granted,
            piper_instance_id=instance_id,
            variable_name=name,
        )

    async def _user_context(self) -> str:
        """The instanceId Piper calls are made for, or why there is none."""
        if not self.settings.client_id:
            raise PiperConfigError(
                "PIPER_CLIENT_ID is not set, so Piper was not asked.",
                advice="Set PIPER_CLIENT_ID to the agent's client id from the Piper dashboard.",
            )
        instance_id = await self.link.instance_id()
        if not instance_id:
            raise PiperLinkNeededError(
                f"Piper Link did not answer at {self.link.url} and PIPER_INSTANCE_ID is not set."
            )
        return instance_id

    async def _resolve(self, name: str, instance_id: str) -> str:
        normalized = normalize_variable_name(name)
        answer: protocol.ResolveResponse = await self._call(
            protocol.RESOLVE_MAPPING_FUNCTION,
            protocol.ResolveResponse,
            instance_id,
            name,
            v1=protocol.ResolveRequestV1(variableName=normalized),
            v2=protocol.ResolveRequestV2(
                variableName=normalized, agentClientId=self._agent(), instanceId=instance_id
            ),
        )
        return answer.credentialId

    async def _scoped(self, credential_id: str, instance_id: str) -> protocol.ScopedResponse:
        answer: protocol.ScopedResponse = await self._call(
            protocol.GET_SCOPED_FUNCTION,
            protocol.ScopedResponse,
            instance_id,
            None,
            v1=protocol.ScopedRequestV1(credentialIds=[credential_id]),
            v2=protocol.ScopedRequestV2(
                credentialIds=[credential_id], agentClientId=self._agent(), instanceId=instance_id
            ),
        )
        if not answer.granted_credential_ids:
            raise PiperForbiddenError(
                f"Piper granted none of the requested credentials ({credential_id}).",
                status_code=200,
                error_code=protocol.PERMISSION_DENIED_FOR_ALL_IDS,
            )
        if credential_id not in answer.granted_credential_ids:
            logger.warning("Piper granted other credentials than the one requested.")
        return answer

    async def _exchange(
        self, name: str, credential_id: str, instance_id: str
    ) -> protocol.ExchangeResponse:
        answer: protocol.ExchangeResponse = await self._call(
            protocol.EXCHANGE_SECRET_FUNCTION,
            protocol.ExchangeResponse,
            instance_id,
            name,
            v1=protocol.ExchangeRequestV1(piper_credential_id=credential_id),
            v2=protocol.ExchangeRequestV2(
                agentClientId=self._agent(), instanceId=instance_id, piperCredentialId=credential_id
            ),
        )
        return answer

    def _agent(self) -> str:
        assert self.settings.client_id  # checked in _from_piper
        return self.settings.client_id

    async def _call(
        self,
        function: str,
        answer_model: type[BaseModel],
        instance_id: str,
        variable: str | None,
        *,
        v1: BaseModel,
        v2: BaseModel,
    ) -> Answer:
        """Call one function; in v1 with an agent token, retried once if it is rejected."""
        try:
            if self.protocol_version == 2:
                return await self._post(function, answer_model, json_body=v2)
            url = self.settings.url_for(function)
            token = await self.tokens.get(url, instance_id)
            try:
                return await self._post(function, answer_model, json_body=v1, bearer=token)
            except BackendAnswerError as answer:
                if not answer.is_invalid_token:
                    raise
                logger.info("Piper's %s rejected the agent token; fetching a new one.", function)
                self.tokens.drop(url, instance_id, token)
            token = await self.tokens.get(url, instance_id)
            return await self._post(function, answer_model, json_body=v1, bearer=token)
        except BackendAnswerError as answer:
            raise self._error_for(answer, variable) from None

    async def _post(self, function: str, answer_model: type[BaseModel], **body: Any) -> Answer:
        return await wire.call(
            self._http,
            function,
            self.settings.url_for(function),
            answer_model,
            attempt_timeout=self.settings.timeout_for(function),
            retry=self._retry,
            **body,
        )

    def _error_for(self, answer: BackendAnswerError, variable: str | None) -> PiperError:
        """The Piper error a backend's 4xx/5xx answer means."""
        said = f"Piper's {answer.function} answered {answer.status_code} {answer.code}"
        fields: dict[str, Any] = {
            "status_code": answer.status_code,
            "error_code": answer.code,
            "error_details": answer.details,
        }
        message = f"{said}: {answer.description}"
        if answer.status_code >= 500:
            return PiperBackendError(message, **fields)
        if answer.function == protocol.EXCHANGE_SECRET_FUNCTION:
            return PiperRawSecretExchangeError(message, **fields)
        if answer.code == protocol.MAPPING_NOT_FOUND and variable is not None:
            return PiperGrantNeededError(
                f"The user has not granted this agent the variable {variable!r}.",
                client_id=self._agent(),
                variable_name=variable,
                grant_page_url=self.settings.grant_page_url,
                **fields,
            )
        if answer.status_code == 403 or answer.code == protocol.PERMISSION_DENIED:
            return PiperForbiddenError(message, **fields)
        if answer.code == protocol.INVALID_REQUEST and answer.function == protocol.TOKEN_FUNCTION:
            return PiperAuthError(
                message,
                advice="Piper did not accept the user context: sign in to Piper Link again, "
                "or check PIPER_INSTANCE_ID.",
                **fields,
            )
        return PiperAuthError(message, **fields)

    # --- agent authentication (v1) ---

    async def _fetch_agent_token(
        self, audience: str, instance_id: str | None
    ) -> protocol.TokenResponse:
        request = protocol.TokenRequest(
            grant_type="client_credentials",
            client_id=self._agent(),
            client_secret=await self._agent_secret(),
            audience=audience,
            piper_link_instance_id=instance_id,
        )
        try:
            answer = await self._post(
                protocol.TOKEN_FUNCTION, protocol.TokenResponse, form_body=request
            )
        except BackendAnswerError as rejected:
            raise self._error_for(rejected, None) from None
        assert isinstance(answer, protocol.TokenResponse)
        self.on_sensitive(answer.access_token)
        return answer

    async def _agent_secret(self) -> str:
        """The agent's client secret: configured, or read once from Secret Manager by name."""
        if self._client_secret is None:
            async with self._client_secret_lock:
                if self._client_secret is None:
                    self._client_secret = SecretStr(await self._read_agent_secret())
        secret = self._client_secret.get_secret_value()
        self.on_sensitive(secret)
        return secret

    async def _read_agent_secret(self) -> str:
        secret_name = self.settings.client_secret_name
        assert secret_name  # protocol v1 means a secret or its name is configured
        name = (
            secret_name
            if secret_name.startswith("projects/")
            else secret_manager.secret_version_name(self.settings.project_id, secret_name)
        )
        # The thread cannot be cancelled at the deadline: give the library what is left of it.
        left = time_left()
        return await asyncio.to_thread(
            secret_manager.read_with_adc,
            name,
            endpoint=self.settings.secret_manager_endpoint,
            ca_bundle=self._ca_bundle,
            timeout=self.settings.retry_deadline if left is None else max(left, 0.1),
        )
