"""Piper's functions, called for one agent: resolve, scoped, exchange, and v1 agent auth.

Protocol v1 sends each call with an agent token for that function (fetched
with the client secret, which may itself be read from Secret Manager by name),
and fetches a new token once if the function rejects it; v2 (secretless)
names the agent in each body. A backend's refusal becomes a `PiperError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import httpx
from pydantic import BaseModel, SecretStr

from piper_mcp.piper import protocol, protocol_names, secret_manager, wire
from piper_mcp.piper.errors import (
    PiperConfigError,
    PiperError,
    PiperForbiddenError,
    PiperLinkNeededError,
    error_for,
)
from piper_mcp.piper.link import PiperLink
from piper_mcp.piper.names import normalize_variable_name
from piper_mcp.piper.result import SecretResult
from piper_mcp.piper.retry import RetryPolicy
from piper_mcp.piper.settings import PiperSettings
from piper_mcp.piper.tokens import AgentTokenCache
from piper_mcp.piper.wire import BackendAnswerError

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=BaseModel)


class PiperFunctions:
    """The calls one agent makes to Piper, over the client's `http` and `link`.

    `report` is given every token and client secret these calls handle.
    """

    def __init__(
        self,
        settings: PiperSettings,
        http: httpx.AsyncClient,
        link: PiperLink,
        *,
        retry: RetryPolicy,
        report: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self._http = http
        self._link = link
        self._retry = retry
        self._report = report
        self.tokens = AgentTokenCache(self._fetch_agent_token)
        self._client_secret: SecretStr | None = settings.client_secret
        self._client_secret_lock = asyncio.Lock()

    async def credential(self, name: str, fetch_raw_secret: bool) -> SecretResult:
        """Piper's answer for `name`: an STS token, or the raw value when asked."""
        instance_id = await self.user_context()
        credential_id = await self.resolve(name, instance_id)
        scoped = await self.scoped(credential_id, instance_id)
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
        exchanged = await self.exchange(name, granted, instance_id)
        return SecretResult(
            source="piper_raw_secret",
            value=exchanged.secret_value,
            piper_credential_id=granted,
            piper_instance_id=instance_id,
            variable_name=name,
        )

    async def user_context(self) -> str:
        """The instanceId Piper calls are made for, or why there is none."""
        if not self.settings.client_id:
            raise PiperConfigError(
                "PIPER_CLIENT_ID is not set, so Piper was not asked.",
                advice="Set PIPER_CLIENT_ID to the agent's client id from the Piper dashboard.",
            )
        instance_id = await self._link.instance_id()
        if not instance_id:
            raise PiperLinkNeededError(
                f"Piper Link did not answer at {self._link.url} and PIPER_INSTANCE_ID is not set."
            )
        return instance_id

    async def resolve(self, name: str, instance_id: str) -> str:
        """The credential id the user mapped `name` to for this agent."""
        normalized = normalize_variable_name(name)
        answer = await self._call(
            protocol_names.RESOLVE_MAPPING_FUNCTION,
            protocol.ResolveResponse,
            instance_id,
            name,
            v1=protocol.ResolveRequestV1(variableName=normalized),
            v2=protocol.ResolveRequestV2(
                variableName=normalized, agentClientId=self._agent(), instanceId=instance_id
            ),
        )
        return answer.credentialId

    async def scoped(self, credential_id: str, instance_id: str) -> protocol.ScopedResponse:
        """An STS token for `credential_id`, granted to this agent."""
        answer = await self._call(
            protocol_names.GET_SCOPED_FUNCTION,
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
                error_code=protocol_names.PERMISSION_DENIED_FOR_ALL_IDS,
            )
        if credential_id not in answer.granted_credential_ids:
            logger.warning("Piper granted other credentials than the one requested.")
        return answer

    async def exchange(
        self, name: str, credential_id: str, instance_id: str
    ) -> protocol.ExchangeResponse:
        """The raw secret value of `credential_id`."""
        return await self._call(
            protocol_names.EXCHANGE_SECRET_FUNCTION,
            protocol.ExchangeResponse,
            instance_id,
            name,
            v1=protocol.ExchangeRequestV1(piper_credential_id=credential_id),
            v2=protocol.ExchangeRequestV2(
                agentClientId=self._agent(), instanceId=instance_id, piperCredentialId=credential_id
            ),
        )

    async def agent_token(self, function: str, instance_id: str) -> str:
        """A v1 agent token for `function` (proves the client secret)."""
        return await self.tokens.get(self.settings.url_for(function), instance_id)

    def _agent(self) -> str:
        assert self.settings.client_id  # checked in user_context
        return self.settings.client_id

    async def _call(
        self,
        function: str,
        answer_model: type[Answer],
        instance_id: str,
        variable: str | None,
        *,
        v1: BaseModel,
        v2: BaseModel,
    ) -> Answer:
        """Call one function; in v1 with an agent token, fetched anew once if it is rejected."""
        try:
            if self.settings.protocol_version == 2:
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

    async def _post(
        self,
        function: str,
        answer_model: type[Answer],
        *,
        json_body: BaseModel | None = None,
        form_body: BaseModel | None = None,
        bearer: str | None = None,
    ) -> Answer:
        return await wire.call(
            self._http,
            function,
            self.settings.url_for(function),
            answer_model,
            attempt_timeout=self.settings.timeout_for(function),
            retry=self._retry,
            json_body=json_body,
            form_body=form_body,
            bearer=bearer,
        )

    def _error_for(self, answer: BackendAnswerError, variable: str | None) -> PiperError:
        return error_for(
            answer,
            variable,
            client_id=self.settings.client_id or "",
            grant_page_url=self.settings.grant_page_url,
        )

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
                protocol_names.TOKEN_FUNCTION, protocol.TokenResponse, form_body=request
            )
        except BackendAnswerError as rejected:
            raise self._error_for(rejected, None) from None
        self._report(answer.access_token)
        return answer

    async def _agent_secret(self) -> str:
        """The agent's client secret: configured, or read once from Secret Manager by name."""
        if self._client_secret is None:
            async with self._client_secret_lock:
                if self._client_secret is None:
                    self._client_secret = SecretStr(await self._read_agent_secret())
        secret = self._client_secret.get_secret_value()
        self._report(secret)
        return secret

    async def _read_agent_secret(self) -> str:
        secret_name = self.settings.client_secret_name
        assert secret_name  # protocol v1 means a secret or its name is configured
        name = (
            secret_name
            if secret_name.startswith("projects/")
            else secret_manager.secret_version_name(self.settings.project_id, secret_name)
        )
        return await secret_manager.read_with_adc(
            self._http,
            name,
            endpoint=self.settings.secret_manager_endpoint,
            attempt_timeout=self.settings.retry_deadline,
            retry=self._retry,
            on_token=self._report,
        )
