"""The resources one router process holds, created in the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from feature_store.snapshot import RollingFeature
from router_service.action_cache import ActionCache
from router_service.activity import ActivityLog
from router_service.auth import ApiKeyStore
from router_service.catalog import Catalog
from router_service.ledger import LedgerStore
from router_service.ledger_store import default_ledger_uri, open_ledger_store
from router_service.metrics import RouterMetrics
from router_service.model_facts import SentFacts
from router_service.observed_costs import ObservedCosts
from router_service.policy import RoutingPolicy, build_policy
from router_service.prompt_embedding import PromptEmbedder, prompt_embedder
from router_service.publisher import EventPublisher, KafkaEventPublisher
from router_service.schemas import Task, TaskCreate
from router_service.settings import GovernorSettings, Settings
from router_service.tasks import TaskStore
from router_service.trust import TrustPolicies

if TYPE_CHECKING:
    from router_service.policy_refresh import PolicyRefresher

log = logging.getLogger("budget_router.ledger")
SPOOL_FILE = "spool.sqlite3"
API_KEYS_FILE = "api_keys.json"
T = TypeVar("T")


@dataclass
class RouterState:
    settings: Settings
    catalog: Catalog
    trust: TrustPolicies
    policy: RoutingPolicy
    ledger: LedgerStore
    tasks: TaskStore
    publisher: EventPublisher
    base_version: str
    auth: ApiKeyStore
    observed_costs: ObservedCosts = field(default_factory=ObservedCosts)
    action_cache: ActionCache = field(default_factory=ActionCache)
    sent_facts: SentFacts = field(default_factory=SentFacts)
    rolling: dict[tuple[str, str, str], RollingFeature] = field(default_factory=dict)
    allocator_state: dict[str, Any] = field(default_factory=dict)
    refresher: PolicyRefresher | None = None
    metrics: RouterMetrics = field(default_factory=RouterMetrics)
    activity: ActivityLog = field(default_factory=ActivityLog)
    prompt_embedder: PromptEmbedder | None = None

    @property
    def governor(self) -> GovernorSettings:
        return self.settings.governor

    async def ledger_bound(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``, which waits on the ledger store: on a worker thread when the store
        is across the network, so the event loop serves other requests meanwhile (several
        decisions then overlap their round trips); inline for a local store, which answers
        faster than a hop to a thread."""
        if self.ledger.remote:
            return await asyncio.to_thread(call, *args)
        return call(*args)

    @classmethod
    def build(cls, settings: Settings) -> RouterState:
        embedder = prompt_embedder(settings.prompt_embedding, settings.prompt_embedding_dims)
        catalog = Catalog.from_file(settings.catalog_path)
        trust = TrustPolicies(settings.trust_policy_path)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        policy = build_policy(settings, list(catalog.snapshot().values()))
        ledger = open_ledger_store(settings.ledger_uri or default_ledger_uri(settings.data_dir))
        publisher = KafkaEventPublisher.from_settings(
            settings.kafka, settings.data_dir / SPOOL_FILE
        )
        return cls(
            settings=settings,
            catalog=catalog,
            trust=trust,
            policy=policy,
            ledger=ledger,
            tasks=TaskStore(ledger, settings.closed_task_retention_seconds / 2),
            publisher=publisher,
            base_version=policy.version,
            auth=ApiKeyStore(settings.data_dir / API_KEYS_FILE),
            prompt_embedder=embedder,
        )

    def open_task(self, request: TaskCreate, tenant: str) -> Task:
        return self.tasks.open(request, tenant)

    def system_status(self) -> dict[str, Any]:
        """What the dashboard and /readyz show about models and the learner."""
        from learner.service import read_status

        learner = read_status(self.settings.data_dir) or {}
        refresh = self.refresher.status() if self.refresher else {}
        return {
            **refresh,
            "lambdas": learner.get("lambdas", self.allocator_state.get("lambdas", {})),
            "learner_lag": learner.get("consumer_lag"),
            "learner_events": learner.get("consumed"),
            "spool_depth": self.publisher.depth,
        }

    def sweep(self, now: float | None = None) -> None:
        """Book overdue reservations at their estimate; purge long-closed tasks from the store.

        ``now`` is the ledger's clock (wall-clock seconds), by default its current time.
        """
        for settlement in self.ledger.expire():
            r = settlement.reservation
            log.warning(
                "reservation expired",
                extra={"decision_id": r.decision_id, "task_id": r.task_id, "dollars": r.dollars},
            )
        now = self.ledger.now() if now is None else now
        for task_id in self.ledger.purge_closed(now - self.settings.closed_task_retention_seconds):
            self.tasks.forget(task_id)

    def close(self) -> None:
        self.publisher.close()
        self.ledger.close()
