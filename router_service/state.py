"""The resources one router process holds, created in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from router_service.catalog import Catalog
from router_service.policy import RoutingPolicy, build_policy
from router_service.settings import Settings
from router_service.tasks import TaskStore


@dataclass
class RouterState:
    settings: Settings
    catalog: Catalog
    tasks: TaskStore
    policy: RoutingPolicy

    @classmethod
    def build(cls, settings: Settings) -> RouterState:
        catalog = Catalog.from_file(settings.catalog_path)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        policy = build_policy(settings, list(catalog.snapshot().values()))
        return cls(settings=settings, catalog=catalog, tasks=TaskStore(), policy=policy)
