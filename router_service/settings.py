"""Service settings, read from the environment (prefix ``BUDGET_ROUTER_``) at startup."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    prior_examples_per_kind: int = Field(30, ge=0)

    @field_validator("catalog_path", "policy_model_path")
    @classmethod
    def _must_exist(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path
