"""Trust-domain policies from a versioned TOML file, reloadable without losing the old one."""

from __future__ import annotations

import threading
import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router_service.errors import ConfigError
from router_service.settings import TIERS, Tier

DEFAULT_DOMAIN = "default"


class DomainPolicy(BaseModel):
    """What one trust domain allows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_models: list[str] = Field(default_factory=list)
    min_tier: dict[str, Tier] = Field(default_factory=dict)
    max_exploration: float = Field(0.1, ge=0, le=1)
    cost_weight: float = Field(1.0, gt=0)
    confirmation_share: float = Field(0.5, gt=0, le=1)

    def allows(self, model_id: str) -> bool:
        return not self.allowed_models or model_id in self.allowed_models

    def min_tier_rank(self, step_kind: str) -> int:
        tier = self.min_tier.get(step_kind)
        return 0 if tier is None else TIERS.index(tier)


class TrustPolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    domains: dict[str, DomainPolicy]


class ResolvedDomain(BaseModel):
    """The policy applied to a decision and whether it came from the default fallback."""

    name: str
    policy: DomainPolicy
    fallback: bool
    version: str


class TrustPolicies:
    """The policy file in force; ``reload`` swaps it only when the new file is valid."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file = self._read()

    @property
    def version(self) -> str:
        return self._file.version

    def _read(self) -> TrustPolicyFile:
        where = str(self.path) if self.path else "the default trust policy"
        try:
            if self.path is None:
                text = resources.files("router_service").joinpath("data/trust_domains.toml")
                raw = tomllib.loads(text.read_text())
            else:
                raw = tomllib.loads(self.path.read_text())
            parsed = TrustPolicyFile.model_validate(raw)
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{where}: {problems}") from exc
        if DEFAULT_DOMAIN not in parsed.domains:
            raise ConfigError(f"{where}: a [domains.{DEFAULT_DOMAIN}] section is required")
        return parsed

    def reload(self) -> str:
        """Re-read the file; on any error keep the old policy and raise ConfigError."""
        with self._lock:
            self._file = self._read()
            return self._file.version

    def resolve(self, domain: str) -> ResolvedDomain:
        current = self._file
        policy = current.domains.get(domain)
        if policy is not None:
            return ResolvedDomain(
                name=domain, policy=policy, fallback=False, version=current.version
            )
        return ResolvedDomain(
            name=DEFAULT_DOMAIN,
            policy=current.domains[DEFAULT_DOMAIN],
            fallback=True,
            version=current.version,
        )
