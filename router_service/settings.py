"""Service settings, read from the environment (prefix ``BUDGET_ROUTER_``) at startup."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from router_service.ledger_store import check_ledger_uri
from router_service.prompt_embedding import EMBEDDING_DIMS

Tier = Literal["small", "medium", "large", "frontier"]
TIERS: tuple[Tier, ...] = ("small", "medium", "large", "frontier")

DEFAULT_TIER_PREFERENCES: dict[str, Tier] = {
    "control": "large",
    "execution": "medium",
    "verification": "medium",
    "presentation": "small",
    "final_synthesis": "large",
    "handoff": "medium",
}


class ExplorationSettings(BaseModel):
    """How the bandit explores: VW's epsilon-greedy, softmax or SquareCB."""

    algorithm: Literal["epsilon", "softmax", "squarecb"] = "epsilon"
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    softmax_lambda: float = Field(10.0, gt=0.0)
    squarecb_gamma_scale: float = Field(10.0, gt=0.0)


class GovernorSettings(BaseModel):
    """Thresholds of the governor's rules."""

    burn_margin: float = Field(0.15, ge=0, description="spent share ahead of plan that downgrades")
    tight_fraction: float = Field(0.25, ge=0, le=1, description="left share that skips optional")
    output_grant_factor: float = Field(1.5, ge=1, description="grant = expected output x this")
    recovery_confidence: float = Field(0.4, ge=0, le=1, description="below this, upgrade")
    context_crowding: float = Field(0.8, gt=0, le=1, description="window share that compresses")
    reservation_ttl_seconds: float = Field(900.0, gt=0)
    unpriced_step_cost: float = Field(0.01, ge=0, description="reserve for unobserved unpriced")


class KafkaSettings(BaseModel):
    """Where events go: the brokers (None = the embedded one), topics and consumer group."""

    bootstrap_servers: str | None = None
    events_topic: str = Field("budget-router.events", min_length=1)
    dead_letter_topic: str = Field("budget-router.dead-letter", min_length=1)
    partitions: int = Field(1, ge=1)
    consumer_group: str = Field("budget-router-learner", min_length=1)


class ProviderEndpoint(BaseModel):
    """An OpenAI-compatible endpoint the proxy forwards a provider's models to."""

    base_url: str = Field(pattern=r"^https?://", description="e.g. https://HOST/v1")
    api_key: SecretStr | None = None
    model_names: dict[str, str] = Field(
        default_factory=dict, description="catalog id -> the provider's model name, if different"
    )
    token_limit_field: Literal["max_completion_tokens", "max_tokens"] = Field(
        "max_completion_tokens", description="the output cap sent when the request names none"
    )


class ProxySettings(BaseModel):
    """How ``POST /v1/chat/completions`` calls providers and books what it cannot measure."""

    timeout_seconds: float = Field(120.0, gt=0, description="read timeout per provider call")
    connect_timeout_seconds: float = Field(10.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10, description="on connect errors, 429 and 5xx")
    backoff_seconds: float = Field(0.5, ge=0, description="first retry wait; doubles, capped")
    max_backoff_seconds: float = Field(8.0, ge=0)
    default_output_tokens: int = Field(512, ge=1, description="expected output if none is named")
    neutral_quality: float = Field(0.5, ge=0, le=1, description="quality booked for a success")


class Settings(BaseSettings):
    """Everything the router service needs, built once at startup."""

    model_config = SettingsConfigDict(
        env_prefix="BUDGET_ROUTER_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    catalog_path: Path | None = None
    policy_model_path: Path | None = None
    seed: int = 0
    exploration: ExplorationSettings = ExplorationSettings()
    tier_preferences: dict[str, Tier] = Field(
        default_factory=lambda: dict(DEFAULT_TIER_PREFERENCES)
    )
    trust_policy_path: Path | None = None
    admin_key: SecretStr | None = Field(
        None, description="fixes the admin API key (else one is generated and printed once)"
    )
    kafka: KafkaSettings = KafkaSettings()
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///<data_dir>/mlflow.db"
    )
    model_poll_seconds: float = Field(1.0, gt=0, description="how often to look for new models")
    governor: GovernorSettings = GovernorSettings()
    expiry_sweep_seconds: float = Field(5.0, gt=0)
    closed_task_retention_seconds: float = Field(
        300.0, ge=0, description="how long a closed task stays readable (late outcomes settle)"
    )
    prior_examples_per_kind: int = Field(30, ge=0)
    cpu_latency_us: int | None = Field(
        None,
        ge=0,
        description="hold /dev/cpu_dma_latency at this bound while serving (0: idle CPUs poll "
        "instead of halting; decisions then run on warm caches); unset: leave the system alone",
    )
    realtime_priority: int | None = Field(
        None,
        ge=1,
        le=99,
        description="run the router's threads under SCHED_FIFO at this priority (1-99), ahead "
        "of the learner and other processes on the same CPUs; unset: the normal policy",
    )
    ledger_uri: str | None = Field(
        None,
        description="the budget ledger: sqlite:///PATH (default <data_dir>/ledger.sqlite3), "
        "postgresql://USER@HOST/DB (shared by router replicas) or memory://",
    )

    providers: dict[str, ProviderEndpoint] = Field(
        default_factory=dict,
        description="catalog provider name -> its OpenAI-compatible endpoint (for the proxy)",
    )
    proxy: ProxySettings = ProxySettings()

    log_prompts: bool = Field(
        False, description="put the step's prompt text in decision events (else only hashes)"
    )
    prompt_embedding: Literal["none", "wordllama"] = Field(
        "none",
        description="embed the step's prompt with a local model into the embedding namespace "
        "(wordllama: the embed extra, its weights ship in the package)",
    )
    prompt_embedding_dims: int = Field(
        64, description="the prompt embedding's dimensions: 64, 128 or 256 (wordllama's prefixes)"
    )

    @field_validator("ledger_uri")
    @classmethod
    def _known_store(cls, uri: str | None) -> str | None:
        return None if uri is None else check_ledger_uri(uri)

    @field_validator("prompt_embedding")
    @classmethod
    def _embedder_installed(cls, kind: str) -> str:
        if kind == "wordllama" and find_spec("wordllama") is None:
            raise ValueError("wordllama is not installed (install budget-router[embed])")
        return kind

    @field_validator("prompt_embedding_dims")
    @classmethod
    def _embedding_dims(cls, dims: int) -> int:
        if dims not in EMBEDDING_DIMS:
            raise ValueError(f"expected one of {EMBEDDING_DIMS}, got {dims}")
        return dims

    @field_validator("catalog_path", "policy_model_path", "trust_policy_path")
    @classmethod
    def _must_exist(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path
