"""Calls to providers' OpenAI-compatible chat endpoints: one pooled client, bounded retries."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from router_service.catalog import ModelSpec
from router_service.settings import ProviderEndpoint, ProxySettings

NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
log = logging.getLogger("budget_router.providers")


def retriable(status: int) -> bool:
    """Whether a provider's status may pass on retry: rate limits and server errors, not 4xx."""
    return status == 429 or status >= 500


class ProviderFailure(Exception):
    """A provider call failed after its retries: the status (None: no answer) and error body."""

    def __init__(self, message: str, status: int | None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body

    @property
    def http_status(self) -> int:
        """The status to answer the agent with: the provider's, or 502 when none came back."""
        return self.status if self.status is not None and self.status >= 400 else 502

    def openai_body(self) -> dict[str, Any]:
        """The provider's own OpenAI-style error if it sent one, else one in that shape."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body
        return {
            "error": {
                "message": self.message,
                "type": "provider_error",
                "code": str(self.status) if self.status is not None else "unreachable",
                "param": None,
            }
        }


@dataclass(frozen=True, slots=True)
class Route:
    """Where a catalog model is served: the provider's endpoint and its name for the model."""

    provider: str
    url: str
    api_key: str | None
    model_name: str
    token_limit_field: str


class Providers:
    """The configured provider endpoints and the HTTP client the proxy calls them with."""

    def __init__(
        self,
        endpoints: dict[str, ProviderEndpoint],
        settings: ProxySettings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._settings = settings
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    def serves(self, provider: str) -> bool:
        """Whether ``provider`` has an endpoint configured."""
        return provider in self._endpoints

    def route(self, model: ModelSpec) -> Route:
        """The endpoint and model name a catalog model is called with."""
        endpoint = self._endpoints[model.provider]
        key = endpoint.api_key.get_secret_value() if endpoint.api_key is not None else None
        return Route(
            provider=model.provider,
            url=endpoint.base_url.rstrip("/") + "/chat/completions",
            api_key=key,
            model_name=endpoint.model_names.get(model.id, model.id),
            token_limit_field=endpoint.token_limit_field,
        )

    async def open(self, route: Route, body: dict[str, Any], stream: bool) -> httpx.Response:
        """A 200 response (its body unread when ``stream``); retries what may pass, then fails."""
        headers = {"Authorization": f"Bearer {route.api_key}"} if route.api_key else {}
        attempts = self._settings.max_retries + 1
        for attempt in range(1, attempts + 1):
            request = self._client.build_request("POST", route.url, json=body, headers=headers)
            try:
                response = await self._client.send(request, stream=stream)
            except NOT_SENT as exc:
                if attempt == attempts:
                    raise ProviderFailure(
                        f"{route.provider} unreachable after {attempts} attempts: {exc!r}", None
                    ) from exc
                await self._wait(attempt, None)
                continue
            except httpx.HTTPError as exc:
                raise ProviderFailure(f"{route.provider} call failed: {exc!r}", None) from exc
            if response.status_code == 200:
                return response
            await response.aread()
            await response.aclose()
            if not retriable(response.status_code) or attempt == attempts:
                raise ProviderFailure(
                    f"{route.provider} answered {response.status_code} "
                    f"(attempt {attempt} of {attempts}): {response.text[:160]}",
                    response.status_code,
                    _json_or_none(response),
                )
            await self._wait(attempt, response.headers.get("retry-after"))
        raise AssertionError("unreachable: the loop returns or raises")

    async def _wait(self, attempt: int, retry_after: str | None) -> None:
        """Exponential backoff, or the provider's Retry-After, never above the cap."""
        delay = self._settings.backoff_seconds * 2 ** (attempt - 1)
        if retry_after is not None:
            try:
                delay = float(retry_after)
            except ValueError:
                log.warning("ignored a Retry-After that is not seconds: %r", retry_after)
        await asyncio.sleep(min(max(delay, 0.0), self._settings.max_backoff_seconds))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
