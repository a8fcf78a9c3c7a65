"""Hands-off model lifecycle: the learner registers versions on a schedule and gates them.

A *round* starts when the learner registers its current online model as a version (alias
``challenger``). Its evaluation window is the steps *decided after* that registration, which
neither it nor the older champion has learned from. The round ends when the window holds
``register_every_steps`` steps with outcomes, or ``register_every_seconds`` have passed with at
least one outcome learned: then the pending challenger goes through the promotion gate
(:mod:`learner.promotion`) on the window (its first ``max_window_steps`` steps, so a round's
replays stay bounded at any event rate), and the next round begins with a new registration.

Day one: with an empty registry the learner's first publication registers the router's prior
(version 1), which has learned from no logged step, so its window is every step logged so far;
while there is no champion a round needs only ``min_steps`` steps (the sanity gate has no
comparison to make tighter). The first champion is therefore in place as soon as ``min_steps``
outcomes are in, even when they all arrived before the learner caught up. With a registry that
already holds versions, the first publication registers the learner's current model instead.

A champion the gate promotes was registered from the learner's own model, so the learner keeps
learning from where it is and only relabels its snapshots. A champion moved from outside (an
operator's promote or rollback) drops the pending challenger (tagged ``superseded``) and the
learner continues from that champion. A pinned champion is never moved by the gate.
Rounds run on a background thread, so the learner never stops polling for them; registry or
store trouble never stops learning either: the round is retried ``RETRY_SECONDS`` later.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_store.errors import FeatureStoreError
from feature_store.store import DuckDBFeatureStore
from learner.model_bundle import BundleError, ModelBundle
from learner.promotion import GateConfig, GateDecision, maybe_promote
from learner.registry import CHALLENGER, CHAMPION, ModelRegistry, RegistryError
from learner.service import initial_model
from learner.settings import LearnerSettings
from router_service.policy import exploration_spec
from router_service.settings import Settings

if TYPE_CHECKING:
    from learner.lifecycle import LoggedData

log = logging.getLogger(__name__)
LEARNER_SOURCE = "budget-router learner"
LEARNED_TAG = "learner.learned_steps"
WINDOW_TAG = "learner.window_start"  # ISO 8601, or "all" for a model that learned no logged step
EVERY_STEP = "all"
RETRY_SECONDS = 30.0
GATE_THRESHOLDS = [f for f in dataclasses.fields(GateConfig) if f.name != "enabled"]


class LifecycleSettings(BaseSettings):
    """Schedule and gate of the automatic lifecycle (prefix ``BUDGET_ROUTER_LIFECYCLE_``)."""

    model_config = SettingsConfigDict(env_prefix="BUDGET_ROUTER_LIFECYCLE_", extra="forbid")

    auto_register: bool = Field(True, description="register versions on the schedule")
    auto_promote: bool = Field(True, description="let the gate move the champion alias")
    register_every_steps: int = Field(1_000, gt=0, description="outcomes learned per round")
    register_every_seconds: float = Field(900.0, gt=0, description="longest round")
    min_round_seconds: float = Field(
        60.0,
        ge=0,
        description="shortest round once there is a champion: at high event rates, rounds of "
        "register_every_steps would each cost replays and MLflow writes every few seconds",
    )
    # The gate's thresholds default to GateConfig's, which holds them in one place.
    margin: float = Field(
        GateConfig.margin, description="reward gain's lower bound must reach this"
    )
    min_steps: int = Field(GateConfig.min_steps, ge=0, description="logged steps the gate needs")
    min_ess: float = Field(
        GateConfig.min_ess, ge=0, description="effective sample size of both policies"
    )
    confidence: float = Field(
        GateConfig.confidence, gt=0, lt=1, description="of the gate's intervals"
    )
    quality_tolerance: float = Field(
        GateConfig.quality_tolerance, ge=0, description="quality drop allowed"
    )
    max_spend_ratio: float = Field(
        GateConfig.max_spend_ratio, gt=0, description="spend per task / mean task cap"
    )
    max_defer_seconds: float = Field(
        300.0,
        ge=0,
        description="how long a due round may wait while the learner is behind the stream: "
        "catching up (a fresher served policy) goes first, the round's replays and MLflow "
        "writes after",
    )
    max_window_steps: int = Field(
        20_000,
        gt=0,
        description="logged steps a round's gate replays at most, the first of its window: at "
        "high event rates a round's window would hold millions, each replayed by two models",
    )
    lambda_per_dollar: float = Field(10.0, ge=0, description="reward = quality - this x dollars")
    task_cap: float = Field(1.0, gt=0, description="dollar cap of tasks whose cap is unknown")

    def gate_config(self) -> GateConfig:
        thresholds = {f.name: getattr(self, f.name) for f in GATE_THRESHOLDS}
        return GateConfig(enabled=self.auto_promote, **thresholds)


class ChampionLineage(Protocol):
    """What the promoter needs of the learner's lineage: which champion it descends from."""

    champion: str | None

    def adopt(self, version: str) -> None: ...


@dataclass(frozen=True)
class Pending:
    """The challenger of the current round: its version, where its evaluation window starts
    (None: every logged step) and after how many learned outcomes it was registered."""

    version: str
    window_start: datetime | None
    learned_steps: int


class BundleCache:
    """Registered bundles by version (a version never changes): each is downloaded once, and
    the few versions a round compares (its challenger, the champion) are kept."""

    def __init__(self, keep: int = 3) -> None:
        self._keep = keep
        self._bundles: dict[str, ModelBundle] = {}

    def get(self, registry: ModelRegistry, version: str) -> ModelBundle:
        """The bundle of ``version``, downloaded from ``registry`` if it is not kept."""
        bundle = self._bundles.get(version)
        if bundle is None:
            bundle = registry.load_bundle(version)
        self.put(version, bundle)
        return bundle

    def put(self, version: str, bundle: ModelBundle) -> None:
        """Keep ``bundle`` as the most recently used; forget the least recently used."""
        self._bundles.pop(version, None)
        self._bundles[version] = bundle
        while len(self._bundles) > self._keep:
            del self._bundles[next(iter(self._bundles))]


class AutoPromoter:
    """Runs the rounds; ``tick`` is called after each model publication of the learner."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: LifecycleSettings,
        store: DuckDBFeatureStore,
        lineage: ChampionLineage,
        open_registry: Callable[[], ModelRegistry],
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.config = lifecycle.gate_config()
        self._store = store
        self._lineage = lineage
        self._open_registry = open_registry
        self._registry: ModelRegistry | None = None  # opened by the first round, not at startup
        self._bundles = BundleCache()
        self._clock = clock
        self._background = background
        self._worker: threading.Thread | None = None
        self._retry_at = 0.0
        self._day_one = False
        self.pending: Pending | None = None
        self._first = True
        self._round_learned = 0
        self._round_started = clock()
        self._deferred_since: float | None = None

    def _open(self) -> ModelRegistry:
        """Open (on day one, create) the registry and resume the round a restart interrupted;
        seconds of MLflow start-up, so it runs in the first round, not when the learner starts."""
        registry = self._open_registry()
        self._registry = registry
        self.pending = self._restore(registry)
        if self.pending is not None:
            self._start_round(self.pending.learned_steps)
        return registry

    def _restore(self, registry: ModelRegistry) -> Pending | None:
        """The challenger this learner registered and the gate has not decided yet, if any."""
        version = registry.get_alias_version(CHALLENGER)
        if version is None:  # nothing was ever registered: start from the prior
            self._day_one = self.settings.policy_model_path is None
            return None
        tags = registry.version_tags(version)
        complete = {WINDOW_TAG, LEARNED_TAG} <= set(tags)
        mine = tags.get("source") == LEARNER_SOURCE and complete
        if not mine or "gate.outcome" in tags:
            return None  # someone else's, decided, or its registration did not finish
        start = tags[WINDOW_TAG]
        window_start = None if start == EVERY_STEP else datetime.fromisoformat(start)
        return Pending(version, window_start, int(tags[LEARNED_TAG]))

    def due(self, learned: int, behind: bool = False) -> bool:
        """Whether the round may end now (``learned`` is the learner's learned-steps counter);
        cheap: the window, never larger than what was learned since, is counted by ``tick``.

        While the learner is ``behind`` the stream, a round that could end waits, up to
        ``max_defer_seconds``: catching up goes first.
        """
        return self._may_end(learned) and not self._defer(behind)

    def _may_end(self, learned: int) -> bool:
        if not self.lifecycle.auto_register or self._clock() < self._retry_at:
            return False
        new = learned - self._round_learned
        if self._first:
            return new > 0
        if new >= self._round_size():
            return self._lineage.champion is None or self._elapsed() >= (
                self.lifecycle.min_round_seconds
            )
        return new > 0 and self._expired()

    def _round_size(self) -> int:
        """Window steps that end a round: ``min_steps`` for the first champion, else the
        schedule's ``register_every_steps``."""
        if self._lineage.champion is None:
            return max(1, self.lifecycle.min_steps)
        return self.lifecycle.register_every_steps

    def _elapsed(self) -> float:
        return self._clock() - self._round_started

    def _expired(self) -> bool:
        return self._elapsed() >= self.lifecycle.register_every_seconds

    @property
    def busy(self) -> bool:
        """Whether a round is being worked on in the background right now."""
        return self._worker is not None and self._worker.is_alive()

    def tick(
        self,
        get_bytes: Callable[[], bytes],
        allocator: dict[str, Any],
        learned: int,
        behind: bool = False,
    ) -> None:
        """End the round if it is due: gate the pending challenger, register the next one.

        The work (replays, MLflow writes: seconds) runs on a background thread with a copy of
        the model, so the learner keeps polling its consumer group meanwhile.
        """
        if self.busy or not self.due(learned, behind):
            return
        self._deferred_since = None  # the next round's wait, if any, starts afresh
        model, allocator = get_bytes(), dict(allocator)
        if not self._background:
            self._round(model, allocator, learned)
            return
        self._worker = threading.Thread(
            target=self._round, args=(model, allocator, learned), name="model-lifecycle"
        )
        self._worker.daemon = True
        self._worker.start()

    def _defer(self, behind: bool) -> bool:
        """Whether a round that could end waits for the learner to catch up (not too long)."""
        if not behind:
            self._deferred_since = None
            return False
        if self._deferred_since is None:
            self._deferred_since = self._clock()
        return self._clock() - self._deferred_since < self.lifecycle.max_defer_seconds

    def _round(self, model: bytes, allocator: dict[str, Any], learned: int) -> None:
        # learner.lifecycle brings scipy and pyarrow: imported here, off the learner's start-up
        from learner.lifecycle import LifecycleError, logged_from_store

        try:
            registry = self._registry
            if registry is None:
                registry = self._open()
                if self.pending is not None:
                    return  # a restart resumed its round: it goes on from here
            if self._day_one:
                self.pending = self._register(registry, self._prior(), allocator, 0, day_one=True)
                self._day_one = False
                self._start_round(learned)
            if self.pending is not None:
                since = self.pending.window_start
                steps = self._store.logged_step_count(since)
                if steps < self._round_size() and not self._expired():
                    return  # outcomes learned so far were of steps decided before the round
                window = logged_from_store(
                    self._store,
                    "the learner's feature store",
                    since=since,
                    limit=self.lifecycle.max_window_steps,
                )
                if not self._gate(registry, self.pending, window):
                    return  # the champion moved from outside: champion_moved comes next
                self.pending = None
            self.pending = self._register(registry, model, allocator, learned)
        except (RegistryError, LifecycleError, BundleError, FeatureStoreError, OSError) as exc:
            self._retry_later(f"{type(exc).__name__}: {exc}")
            return
        except Exception:  # an unforeseen MLflow or DuckDB error must not stop the learning
            log.exception("model lifecycle round failed unexpectedly")
            self._retry_later("unexpected error (logged)")
            return
        self._start_round(learned)

    def _start_round(self, learned: int) -> None:
        self._first = False
        self._round_learned, self._round_started = learned, self._clock()

    def _prior(self) -> bytes:
        """The model the router serves on day one: its prior, fitted to synthetic steps only."""
        model = initial_model(
            LearnerSettings(data_dir=self.settings.data_dir, model_path=None), self.settings
        )
        try:
            return model.to_bytes()
        finally:
            model.close()

    def _retry_later(self, why: str) -> None:
        self._retry_at = self._clock() + RETRY_SECONDS
        log.warning("model lifecycle round failed, retrying in %.0f s: %s", RETRY_SECONDS, why)

    def champion_moved(self, learned: int) -> None:
        """An operator moved the champion: drop the pending challenger, start a new round."""
        if self.pending is not None and self._registry is not None:
            try:
                self._registry.tag_version(
                    self.pending.version,
                    {"gate.outcome": "superseded: the champion was moved by an operator"},
                )
            except RegistryError as exc:
                log.warning("could not mark version %s superseded: %s", self.pending.version, exc)
            self.pending = None
        self._day_one = False
        self._start_round(learned)

    def _gate(self, registry: ModelRegistry, pending: Pending, data: LoggedData) -> bool:
        """Gate ``pending`` on ``data``; False (nothing decided) if the champion is not the
        one the learner descends from, i.e. it was moved from outside since it last looked."""
        from learner.lifecycle import compare_versions
        from learner.ope import EvaluationError

        champion = registry.get_alias_version(CHAMPION)
        if champion != self._lineage.champion:
            return False
        try:
            decision = compare_versions(
                pending.version,
                champion,
                data,
                self.lifecycle.lambda_per_dollar,
                self.config,
                bundle=functools.partial(self._bundles.get, registry),
                task_cap=self.lifecycle.task_cap,
            ).decision
        except EvaluationError as exc:  # e.g. an invalid pmf: the sanity gate refuses it
            decision = GateDecision(False, [f"FAIL sanity: {exc}"])
        promoted = maybe_promote(registry, pending.version, decision, self.config)
        log.info(
            "gate on version %s vs champion %s: %s",
            pending.version,
            champion,
            "promoted" if promoted else "; ".join(decision.reasons),
        )
        if promoted:
            self._lineage.adopt(pending.version)
        return True

    def _register(
        self,
        registry: ModelRegistry,
        model: bytes,
        allocator: dict[str, Any],
        learned: int,
        day_one: bool = False,
    ) -> Pending:
        at = datetime.now(UTC)
        window_start = None if day_one else at
        bundle = ModelBundle(
            vw_model_bytes=model,
            allocator_state=dict(allocator),
            feature_schema_version=1,
            exploration=dataclasses.asdict(exploration_spec(self.settings)),
            metadata={"learned_steps": learned, "day_one": day_one},
        )
        version = registry.register(
            bundle,
            {"learned_steps": float(learned)},
            {"learned_steps": learned, "descends_from": self._lineage.champion or "none"},
            ("learner", at),
            LEARNER_SOURCE,
        )
        self._bundles.put(version, bundle)  # the gate compares it next round: no download
        start = EVERY_STEP if window_start is None else window_start.isoformat()
        registry.tag_version(version, {LEARNED_TAG: str(learned), WINDOW_TAG: start})
        what = "the prior" if day_one else f"after {learned} learned steps"
        log.info("registered version %s, %s (challenger)", version, what)
        return Pending(version, window_start, learned)


def open_promoter(
    settings: Settings, store: DuckDBFeatureStore, lineage: ChampionLineage
) -> AutoPromoter:
    """The promoter for the deployed learner, on the configured (or embedded) registry."""

    def open_registry() -> ModelRegistry:
        from learner.lifecycle import registry_for

        return registry_for(settings)

    return AutoPromoter(settings, LifecycleSettings(), store, lineage, open_registry)
