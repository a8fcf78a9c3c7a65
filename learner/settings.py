"""Learner settings, read from the environment (prefix ``BUDGET_ROUTER_LEARNER_``) at startup."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPIC = "budget-router.events"
DEFAULT_DEAD_LETTER_TOPIC = "budget-router.dead-letter"


class LearnerSettings(BaseSettings):
    """Everything the learner needs: broker, join window, rewards, allocator, checkpoints."""

    model_config = SettingsConfigDict(env_prefix="BUDGET_ROUTER_LEARNER_", extra="forbid")

    data_dir: Path = Path("./var")
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = DEFAULT_TOPIC
    dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC
    group_id: str = "budget-router-learner"
    model_path: Path | None = Field(
        None, description="a VW model file to start from; without it, the router's prior"
    )

    # Join (event time, from each event's occurred_at).
    join_window_seconds: float = Field(300.0, gt=0)
    task_close_wait_seconds: float = Field(
        60.0, ge=0, description="how long a joined step waits for its task's result"
    )
    dedupe_window_seconds: float = Field(600.0, gt=0)

    # Reward shaping.
    task_credit_weight: float = Field(0.5, ge=0, le=1)
    reference_task_dollars: float = Field(
        1.0, gt=0, description="normalises cost when the task's total_dollars is unknown"
    )
    correction_high_reward: float = 1.0
    correction_low_reward: float = 0.0

    # Importance weights: explored actions logged at p=0.005 would weigh 200 times a normal
    # update and drag the model around; clipping trades a little bias for much less variance.
    propensity_floor: float = Field(0.05, ge=0, le=1)

    # Budget-constrained allocator (dual variable per trust domain).
    lambda_initial: float = Field(1.0, ge=0)
    lambda_step: float = Field(0.5, ge=0)
    spend_target_ratio: float = Field(0.8, gt=0, le=1)

    # DuckDB's buffer pool caches table blocks up to 80% of the machine's memory by default,
    # so a long-running learner's RSS would grow with the file; queries spill past the cap.
    feature_store_memory_limit: str = Field(
        "256MB", description="DuckDB memory_limit of the learner's feature store, e.g. 1GB"
    )

    # Checkpoints, status and model publication.
    checkpoint_every_events: int = Field(50_000, gt=0)
    checkpoint_every_seconds: float = Field(5.0, gt=0)
    status_every_seconds: float = Field(1.0, gt=0)
    publish_interval_seconds: float = Field(1.0, ge=0)

    # Kafka consumer.
    poll_timeout_ms: int = Field(200, gt=0)
    max_poll_records: int = Field(2_000, gt=0)
    session_timeout_ms: int = Field(10_000, gt=0)
    heartbeat_interval_ms: int = Field(1_000, gt=0)
    max_poll_interval_ms: int = Field(30_000, gt=0)
    request_timeout_ms: int = Field(30_000, gt=0)
    check_crcs: bool = Field(
        False,
        description="verify record CRC32Cs; kafka-python does it in pure Python (about 85% of "
        "consume time) unless the crc32c package is installed",
    )

    @model_validator(mode="after")
    def _kafka_relations(self) -> LearnerSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be less than "
                f"session_timeout_ms ({self.session_timeout_ms})"
            )
        if self.request_timeout_ms <= self.poll_timeout_ms:
            raise ValueError(
                f"request_timeout_ms ({self.request_timeout_ms}) must be greater than "
                f"poll_timeout_ms ({self.poll_timeout_ms})"
            )
        return self

    @property
    def checkpoint_path(self) -> Path:
        return self.data_dir / "learner_checkpoint.json"

    @property
    def status_path(self) -> Path:
        return self.data_dir / "learner_status.json"

    @property
    def feature_store_path(self) -> Path:
        return self.data_dir / "features.duckdb"


class LearnerError(Exception):
    """Root of every error the learner raises on purpose."""

    retriable: ClassVar[bool] = False


class BrokerUnavailable(LearnerError):
    """The Kafka broker cannot be reached or refused a request; retrying may help."""

    retriable = True


class CheckpointError(LearnerError):
    """A checkpoint file is unreadable or was written by an incompatible version."""
