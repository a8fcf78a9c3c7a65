"""The catalog of candidate models: tiers, prices per million tokens, context windows."""

from __future__ import annotations

import json
import threading
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router_service.errors import ConfigError, NotFound
from router_service.settings import TIERS, Tier

PER_MTOK = 1_000_000


class SelfHostedRate(BaseModel):
    """What a self-hosted model costs: GPU time at a price, converted through its throughput."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_second_dollars: float = Field(gt=0, description="what one second of the GPU costs")
    prefill_tokens_per_second: float = Field(gt=0, description="input tokens the GPU reads")
    decode_tokens_per_second: float = Field(gt=0, description="output tokens it writes")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollars for the GPU-seconds a call of this size takes."""
        seconds = (
            input_tokens / self.prefill_tokens_per_second
            + output_tokens / self.decode_tokens_per_second
        )
        return seconds * self.gpu_second_dollars


class ModelSpec(BaseModel):
    """One candidate model. Prices are dollars per million tokens; ``None`` means unpriced."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:/@-]+$")
    provider: str = Field(min_length=1)
    tier: Tier
    input_price_per_mtok: float | None = Field(None, ge=0)
    output_price_per_mtok: float | None = Field(None, ge=0)
    cached_input_price_per_mtok: float | None = Field(None, ge=0)
    context_window: int = Field(gt=0)
    tags: list[str] = Field(default_factory=list)
    self_hosted: bool = False
    self_hosted_rate: SelfHostedRate | None = None

    @property
    def tier_rank(self) -> int:
        return TIERS.index(self.tier)

    @property
    def priced(self) -> bool:
        return self.input_price_per_mtok is not None and self.output_price_per_mtok is not None

    def token_cost(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> float | None:
        """Dollars for a call; cached input tokens are billed at the cached price when known."""
        if not self.priced:
            return None
        assert self.input_price_per_mtok is not None and self.output_price_per_mtok is not None
        cached = min(cached_input_tokens, input_tokens)
        cached_price = self.cached_input_price_per_mtok
        if cached_price is None:
            cached_price = self.input_price_per_mtok
        return (
            (input_tokens - cached) * self.input_price_per_mtok
            + cached * cached_price
            + output_tokens * self.output_price_per_mtok
        ) / PER_MTOK


class ModelUpdate(BaseModel):
    """Body of ``PUT /v1/models/{id}``: a model spec without its id (the path names it)."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1)
    tier: Tier
    input_price_per_mtok: float | None = Field(None, ge=0)
    output_price_per_mtok: float | None = Field(None, ge=0)
    cached_input_price_per_mtok: float | None = Field(None, ge=0)
    context_window: int = Field(gt=0)
    tags: list[str] = Field(default_factory=list)
    self_hosted: bool = False
    self_hosted_rate: SelfHostedRate | None = None


class Catalog:
    """Thread-safe registry of models; readers get an immutable snapshot."""

    def __init__(self, models: list[ModelSpec]) -> None:
        if not models:
            raise ConfigError("the model catalog is empty: at least one model is needed")
        ids = [m.id for m in models]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"the model catalog repeats ids: {', '.join(duplicates)}")
        self._lock = threading.Lock()
        self._models: dict[str, ModelSpec] = {m.id: m for m in models}
        self.revision = 0

    @classmethod
    def from_file(cls, path: Path | None) -> Catalog:
        """Load a catalog file, or the packaged default catalog when ``path`` is None."""
        if path is None:
            text = resources.files("router_service").joinpath("data/catalog.json").read_text()
            where = "the default catalog"
        else:
            text = path.read_text()
            where = str(path)
        try:
            raw = json.loads(text)
            models = [ModelSpec.model_validate(m) for m in raw["models"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: expected a JSON object with a 'models' list") from exc
        except ValidationError as exc:
            raise ConfigError(f"{where}: invalid model entry: {exc}") from exc
        return cls(models)

    def snapshot(self) -> dict[str, ModelSpec]:
        """The current models by id; safe to iterate while others update the catalog."""
        return self._models

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._models[model_id]
        except KeyError:
            raise NotFound(
                f"unknown model {model_id!r}", field="model_id", value=model_id
            ) from None

    def upsert(self, spec: ModelSpec) -> bool:
        """Add or replace a model; returns True when it was new."""
        with self._lock:
            models = dict(self._models)
            created = spec.id not in models
            models[spec.id] = spec
            self._models = models
            self.revision += 1
        return created
