"""The resources one router process holds, created in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from router_service.catalog import Catalog
from router_service.ledger import InMemoryLedger, Ledger
from router_service.observed_costs import ObservedCosts
from router_service.policy import RoutingPolicy, build_policy
from router_service.schemas import Task, TaskCreate
from router_service.settings import GovernorSettings, Settings
from router_service.tasks import TaskStore
from router_service.trust import TrustPolicies


@dataclass
class RouterState:
    settings: Settings
    catalog: Catalog
    trust: TrustPolicies
    policy: RoutingPolicy
    ledger: Ledger
    tasks: TaskStore = field(default_factory=TaskStore)
    observed_costs: ObservedCosts = field(default_factory=ObservedCosts)

    @property
    def governor(self) -> GovernorSettings:
        return self.settings.governor

    @classmethod
    def build(cls, settings: Settings) -> RouterState:
        catalog = Catalog.from_file(settings.catalog_path)
        trust = TrustPolicies(settings.trust_policy_path)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        policy = build_policy(settings, list(catalog.snapshot().values()))
        return cls(
            settings=settings,
            catalog=catalog,
            trust=trust,
            policy=policy,
            ledger=InMemoryLedger(),
        )

    def open_task(self, request: TaskCreate) -> Task:
        task = self.tasks.open(request)
        self.ledger.open(task.task_id, task.budget)
        return task
