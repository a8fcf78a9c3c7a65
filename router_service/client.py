"""A typed HTTP client for budget-router, sync and async, with retries and a task scope."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypedDict, TypeVar, Unpack

import httpx
from pydantic import BaseModel

from router_service.schemas import Budget, Decision, OutcomeAccepted, Signals, Step, Task

T = TypeVar("T")
Body = BaseModel | Mapping[str, Any]
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
log = logging.getLogger("budget_router.client")


class ClientError(Exception):
    """The service refused a request; carries its status, error code, field and message."""

    retriable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "client_error",
        field: str | None = None,
        fields: list[dict[str, Any]] | None = None,
    ) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"{status or 'no response'} {code}: {message}{where}")
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.fields = fields or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        """Read ``{"error": {"code", "message", "field"?, "fields"?}}``; else the raw text."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return cls(
                str(error.get("message", "")),
                status=response.status_code,
                code=str(error.get("code", f"http_{response.status_code}")),
                field=error.get("field"),
                fields=error.get("fields"),
            )
        detail = body.get("detail") if isinstance(body, dict) else response.text[:200]
        return cls(str(detail), status=response.status_code, code=f"http_{response.status_code}")


class TransientError(ClientError):
    """Unreachable, or 429/502/503/504 through every attempt; trying later may succeed."""

    retriable = True


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try a request and how long to back off (full jitter, capped)."""

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 2.0

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based); honours Retry-After."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One API call: request, how to parse the answer, and whether a resend is safe."""

    method: str
    path: str
    parse: Callable[[Any], T]
    body: dict[str, Any] | None = None
    idempotent: bool = False
    recover: _Call[T] | None = None


class _Attempts(Generic[T]):
    """The retry decisions for one call, shared by the sync and the async client."""

    def __init__(self, call: _Call[T], policy: RetryPolicy, rng: random.Random) -> None:
        self.call, self.policy, self.rng = call, policy, rng
        self.retries = 0
        self.maybe_applied = False

    def after_transport_error(self, exc: httpx.TransportError) -> float:
        """The delay before resending, or raise when a resend could apply the call twice."""
        what = f"{self.call.method} {self.call.path}: {type(exc).__name__}: {exc}"
        if not isinstance(exc, _NOT_SENT):
            if not self.call.idempotent:
                raise TransientError(f"{what}; it may have been applied, so it was not resent")
            self.maybe_applied = True
        return self._next(TransientError(what), None)

    def after_response(self, response: httpx.Response) -> float | None:
        """A delay when the response asks for a retry, None when it is final."""
        if response.status_code not in RETRY_STATUSES:
            return None
        error = ClientError.from_response(response)
        transient = TransientError(
            error.message, status=error.status, code=error.code, field=error.field
        )
        return self._next(transient, _retry_after(response))

    def should_recover(self, response: httpx.Response) -> bool:
        """A 409 after a resend of a call that may have landed: read the state instead."""
        return response.status_code == 409 and self.maybe_applied and self.call.recover is not None

    def result(self, response: httpx.Response) -> T:
        if not response.is_success:
            raise ClientError.from_response(response)
        return self.call.parse(response.json())

    def _next(self, error: TransientError, retry_after: float | None) -> float:
        if self.retries + 1 >= self.policy.attempts:
            raise error
        delay = self.policy.delay(self.retries, self.rng, retry_after)
        self.retries += 1
        log.info("retrying", extra={"path": self.call.path, "error": str(error), "delay": delay})
        return delay


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _dump(value: Body) -> dict[str, Any]:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)


class OutcomeDetails(TypedDict, total=False):
    """The optional fields of an outcome report."""

    reasoning_tokens: int
    cached_input_tokens: int
    cost_dollars: float
    latency_ms: float
    error: str


def _get_task(task_id: str) -> _Call[Task]:
    return _Call("GET", f"/v1/tasks/{task_id}", Task.model_validate, idempotent=True)


def _open_task(
    task_type: str,
    budget: Budget | Mapping[str, Any],
    trust_domain: str,
    task_id: str | None,
    planned_steps: int | None,
    tags: Mapping[str, str] | None,
) -> _Call[Task]:
    # An id chosen here makes a resend after a lost answer detectable (409, then read it back).
    task_id = task_id or f"task_{uuid.uuid4().hex}"
    body: dict[str, Any] = {
        "task_id": task_id,
        "task_type": task_type,
        "trust_domain": trust_domain,
        "budget": _dump(budget),
        "tags": dict(tags or {}),
    }
    if planned_steps is not None:
        body["planned_steps"] = planned_steps
    return _Call("POST", "/v1/tasks", Task.model_validate, body, True, _get_task(task_id))


def _decide(
    task_id: str,
    step: Step | Mapping[str, Any],
    signals: Signals | Mapping[str, Any] | None,
    context: Mapping[str, float | str] | None,
    candidates: list[str] | None,
    confirmed: bool,
    prompt: str | None = None,
) -> _Call[Decision]:
    body: dict[str, Any] = {"task_id": task_id, "step": _dump(step), "confirmed": confirmed}
    if prompt is not None:
        body["prompt"] = prompt
    if signals is not None:
        body["signals"] = _dump(signals)
    if context is not None:
        body["context"] = dict(context)
    if candidates is not None:
        body["candidates"] = list(candidates)
    return _Call("POST", "/v1/decide", Decision.model_validate, body)


def _report(
    decision_id: str,
    success: bool,
    quality: float,
    input_tokens: int,
    output_tokens: int,
    details: OutcomeDetails,
) -> _Call[OutcomeAccepted]:
    body = {
        "decision_id": decision_id,
        "success": success,
        "quality": quality,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        **details,
    }
    return _Call("POST", "/v1/outcomes", OutcomeAccepted.model_validate, body)


def _correct(**fields: Any) -> _Call[dict[str, Any]]:
    body = {k: v for k, v in fields.items() if v is not None}
    return _Call("POST", "/v1/corrections", dict, body)


def _close(task_id: str, success: bool, quality: float) -> _Call[Task]:
    body = {"success": success, "quality": quality}
    return _Call(
        "POST", f"/v1/tasks/{task_id}/close", Task.model_validate, body, True, _get_task(task_id)
    )


class _ClientBase:
    def __init__(self, api_key: str | None, retry: RetryPolicy, seed: int | None) -> None:
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry = retry
        self.rng = random.Random(seed)


class BudgetRouterClient(_ClientBase):
    """Blocking client; pass ``http=`` (e.g. a TestClient) or ``transport=`` to inject one."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(api_key, retry, seed)
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> BudgetRouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def disconnect(self) -> None:
        """Close the HTTP connections this client opened (not an injected ``http``)."""
        if self._owns_http:
            self.http.close()

    def _run(self, call: _Call[T]) -> T:
        attempts = _Attempts(call, self.retry, self.rng)
        while True:
            try:
                response = self.http.request(
                    call.method, call.path, json=call.body, headers=self.headers
                )
            except httpx.TransportError as exc:
                time.sleep(attempts.after_transport_error(exc))
                continue
            delay = attempts.after_response(response)
            if delay is not None:
                time.sleep(delay)
            elif call.recover is not None and attempts.should_recover(response):
                return self._run(call.recover)
            else:
                return attempts.result(response)

    def open_task(
        self,
        task_type: str,
        budget: Budget | Mapping[str, Any],
        trust_domain: str = "default",
        task_id: str | None = None,
        planned_steps: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Task:
        """Open a task with its budget; the id is generated here when not given."""
        return self._run(_open_task(task_type, budget, trust_domain, task_id, planned_steps, tags))

    def get_task(self, task_id: str) -> Task:
        return self._run(_get_task(task_id))

    def decide(
        self,
        task_id: str,
        step: Step | Mapping[str, Any],
        signals: Signals | Mapping[str, Any] | None = None,
        context: Mapping[str, float | str] | None = None,
        candidates: list[str] | None = None,
        confirmed: bool = False,
        prompt: str | None = None,
    ) -> Decision:
        """Ask which model runs the next step; never resent once it may have been applied.

        ``prompt`` (the step's prompt text) lets the policy see what the step asks.
        """
        return self._run(_decide(task_id, step, signals, context, candidates, confirmed, prompt))

    def report(
        self,
        decision_id: str,
        success: bool,
        quality: float,
        input_tokens: int,
        output_tokens: int,
        **details: Unpack[OutcomeDetails],
    ) -> OutcomeAccepted:
        """Report what a step cost and how it went."""
        call = _report(decision_id, success, quality, input_tokens, output_tokens, details)
        return self._run(call)

    def correct(
        self,
        decision_id: str | None = None,
        task_id: str | None = None,
        preferred_model: str | None = None,
        rating: Literal["up", "down"] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Send a human verdict on a decision or a task: the better model and/or up/down."""
        return self._run(
            _correct(
                decision_id=decision_id,
                task_id=task_id,
                preferred_model=preferred_model,
                rating=rating,
                note=note,
            )
        )

    def close(self, task_id: str, success: bool, quality: float) -> Task:
        """End the task with its overall result."""
        return self._run(_close(task_id, success, quality))

    @contextmanager
    def task(
        self,
        task_type: str,
        budget: Budget | Mapping[str, Any],
        trust_domain: str = "default",
        task_id: str | None = None,
        planned_steps: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[TaskHandle]:
        """Open a task for a ``with`` block and close it at the end (failed on an exception)."""
        opened = self.open_task(task_type, budget, trust_domain, task_id, planned_steps, tags)
        handle = TaskHandle(self, opened)
        try:
            yield handle
        except BaseException:
            if handle.closed is None:
                try:
                    handle.close(success=False)
                except ClientError as exc:
                    log.warning("could not close failed task", extra={"error": str(exc)})
            raise
        if handle.closed is None:
            handle.close()


class AsyncBudgetRouterClient(_ClientBase):
    """Asyncio client with the same calls; pass ``transport=httpx.ASGITransport(app)``."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(api_key, retry, seed)
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncBudgetRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def disconnect(self) -> None:
        """Close the HTTP connections this client opened (not an injected ``http``)."""
        if self._owns_http:
            await self.http.aclose()

    async def _run(self, call: _Call[T]) -> T:
        attempts = _Attempts(call, self.retry, self.rng)
        while True:
            try:
                response = await self.http.request(
                    call.method, call.path, json=call.body, headers=self.headers
                )
            except httpx.TransportError as exc:
                await asyncio.sleep(attempts.after_transport_error(exc))
                continue
            delay = attempts.after_response(response)
            if delay is not None:
                await asyncio.sleep(delay)
            elif call.recover is not None and attempts.should_recover(response):
                return await self._run(call.recover)
            else:
                return attempts.result(response)

    async def open_task(
        self,
        task_type: str,
        budget: Budget | Mapping[str, Any],
        trust_domain: str = "default",
        task_id: str | None = None,
        planned_steps: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Task:
        """Open a task with its budget; the id is generated here when not given."""
        call = _open_task(task_type, budget, trust_domain, task_id, planned_steps, tags)
        return await self._run(call)

    async def get_task(self, task_id: str) -> Task:
        return await self._run(_get_task(task_id))

    async def decide(
        self,
        task_id: str,
        step: Step | Mapping[str, Any],
        signals: Signals | Mapping[str, Any] | None = None,
        context: Mapping[str, float | str] | None = None,
        candidates: list[str] | None = None,
        confirmed: bool = False,
        prompt: str | None = None,
    ) -> Decision:
        """Ask which model runs the next step; never resent once it may have been applied.

        ``prompt`` (the step's prompt text) lets the policy see what the step asks.
        """
        call = _decide(task_id, step, signals, context, candidates, confirmed, prompt)
        return await self._run(call)

    async def report(
        self,
        decision_id: str,
        success: bool,
        quality: float,
        input_tokens: int,
        output_tokens: int,
        **details: Unpack[OutcomeDetails],
    ) -> OutcomeAccepted:
        """Report what a step cost and how it went."""
        call = _report(decision_id, success, quality, input_tokens, output_tokens, details)
        return await self._run(call)

    async def correct(
        self,
        decision_id: str | None = None,
        task_id: str | None = None,
        preferred_model: str | None = None,
        rating: Literal["up", "down"] | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Send a human verdict on a decision or a task: the better model and/or up/down."""
        return await self._run(
            _correct(
                decision_id=decision_id,
                task_id=task_id,
                preferred_model=preferred_model,
                rating=rating,
                note=note,
            )
        )

    async def close(self, task_id: str, success: bool, quality: float) -> Task:
        """End the task with its overall result."""
        return await self._run(_close(task_id, success, quality))

    @asynccontextmanager
    async def task(
        self,
        task_type: str,
        budget: Budget | Mapping[str, Any],
        trust_domain: str = "default",
        task_id: str | None = None,
        planned_steps: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> AsyncIterator[AsyncTaskHandle]:
        """Open a task for an ``async with`` block and close it at the end."""
        opened = await self.open_task(task_type, budget, trust_domain, task_id, planned_steps, tags)
        handle = AsyncTaskHandle(self, opened)
        try:
            yield handle
        except BaseException:
            if handle.closed is None:
                try:
                    await handle.close(success=False)
                except ClientError as exc:
                    log.warning("could not close failed task", extra={"error": str(exc)})
            raise
        if handle.closed is None:
            await handle.close()


class _HandleBase:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.success = True
        self.quality: float | None = None
        self.closed: Task | None = None
        self.qualities: list[float] = []

    @property
    def task_id(self) -> str:
        return self.task.task_id

    def final(self, success: bool | None, quality: float | None) -> tuple[bool, float]:
        """The task's result: as given, else as set on the handle, else the steps' mean."""
        ok = self.success if success is None else success
        if quality is None:
            quality = self.quality
        if quality is None and ok and self.qualities:
            quality = sum(self.qualities) / len(self.qualities)
        return ok, quality if quality is not None else float(ok)


class TaskHandle(_HandleBase):
    """An open task inside ``client.task(...)``; set ``success``/``quality`` before the end."""

    def __init__(self, client: BudgetRouterClient, task: Task) -> None:
        super().__init__(task)
        self.client = client

    def decide(self, step: Step | Mapping[str, Any], **options: Any) -> Decision:
        """``client.decide`` for this task (``signals``, ``context``, ``candidates``...)."""
        return self.client.decide(self.task_id, step, **options)

    def report(
        self,
        decision: Decision | str,
        success: bool,
        quality: float,
        input_tokens: int,
        output_tokens: int,
        **details: Unpack[OutcomeDetails],
    ) -> OutcomeAccepted:
        """Report a step of this task; its quality feeds the task's default quality."""
        decision_id = decision if isinstance(decision, str) else decision.decision_id
        self.qualities.append(quality)
        return self.client.report(
            decision_id, success, quality, input_tokens, output_tokens, **details
        )

    def close(self, success: bool | None = None, quality: float | None = None) -> Task:
        """Close now instead of at the end of the block."""
        self.closed = self.client.close(self.task_id, *self.final(success, quality))
        return self.closed


class AsyncTaskHandle(_HandleBase):
    """An open task inside ``async with client.task(...)``."""

    def __init__(self, client: AsyncBudgetRouterClient, task: Task) -> None:
        super().__init__(task)
        self.client = client

    async def decide(self, step: Step | Mapping[str, Any], **options: Any) -> Decision:
        """``client.decide`` for this task (``signals``, ``context``, ``candidates``...)."""
        return await self.client.decide(self.task_id, step, **options)

    async def report(
        self,
        decision: Decision | str,
        success: bool,
        quality: float,
        input_tokens: int,
        output_tokens: int,
        **details: Unpack[OutcomeDetails],
    ) -> OutcomeAccepted:
        """Report a step of this task; its quality feeds the task's default quality."""
        decision_id = decision if isinstance(decision, str) else decision.decision_id
        self.qualities.append(quality)
        return await self.client.report(
            decision_id, success, quality, input_tokens, output_tokens, **details
        )

    async def close(self, success: bool | None = None, quality: float | None = None) -> Task:
        """Close now instead of at the end of the block."""
        self.closed = await self.client.close(self.task_id, *self.final(success, quality))
        return self.closed
