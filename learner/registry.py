"""The router model's lifecycle in MLflow: register a bundle, move aliases, audit every move.

Versions are plain MLflow model versions of one registered model (``budget-router``); the only
lifecycle markers are aliases (``challenger``, ``champion``), never the deprecated stages.

Audit log: every alias move is stored as one tag on the registered model, key
``audit.alias_move.<unix ns, 20 digits>.<8 hex>`` and value a JSON object with ``alias``,
``action`` (register, set, promote, rollback, pin, unpin), ``from_version``, ``to_version``,
``actor``, ``reason`` and ``at`` (ISO 8601, UTC). Keys sort by time, so
:meth:`ModelRegistry.history` needs one read; the log lives in the registry itself and survives
with it. The previous champion is not stored separately: it is replayed from that log
(promotions push, rollbacks pop), so rolling back twice walks back two promotions. Moves are not
transactional; the learner is expected to be the only automatic writer.

Pin: an operator can pin the champion (tag ``lifecycle.pin``, a JSON object with ``actor``,
``reason``, ``at`` and the ``version`` pinned). While it is set the automatic gate moves no
alias; operators still promote and roll back by hand. Pin and unpin are audited like moves
(``from_version`` = ``to_version`` = the champion at the time).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import httpx
import mlflow.artifacts
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from learner.model_bundle import BundleError, ModelBundle, load_pyfunc_bundle, save_pyfunc

DEFAULT_MODEL_NAME = "budget-router"
CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_TAG_PREFIX = "audit.alias_move."
PIN_TAG = "lifecycle.pin"
EMBEDDED_DATABASE = "mlflow.db"
MODEL_ARTIFACT_PATH = "model"
Action = Literal["register", "set", "promote", "rollback", "pin", "unpin"]
_UNAVAILABLE_CODES = {
    "TEMPORARILY_UNAVAILABLE",
    "INTERNAL_ERROR",
    "REQUEST_LIMIT_EXCEEDED",
    "DEADLINE_EXCEEDED",
}
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


class RegistryError(Exception):
    """Root of the registry's errors; ``retriable`` says whether trying again may help."""

    retriable: ClassVar[bool] = False


class RegistryUnavailable(RegistryError):
    """The tracking server or its database cannot be reached right now."""

    retriable = True


class RegistryNotFound(RegistryError):
    """The model, version or alias asked for does not exist."""


class NoPreviousChampion(RegistryError):
    """Rollback was asked for but no earlier champion is on record."""


class InvalidBundle(RegistryError):
    """A registered version's artifacts are not a readable bundle."""


class _TimedRecord:
    """JSON of a frozen dataclass whose ``at`` field is a datetime (ISO 8601 in the JSON)."""

    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``at`` as ISO 8601."""
        assert is_dataclass(self)
        return {**asdict(self), "at": self.at.isoformat()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        data = json.loads(text)
        return cls(**{**data, "at": datetime.fromisoformat(data["at"])})


@dataclass(frozen=True)
class AliasMove(_TimedRecord):
    """One audited alias move: which alias, from and to which version, who, why and when."""

    alias: str
    action: Action
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class Pin(_TimedRecord):
    """An operator's hold on the champion: the automatic gate moves nothing while it is set."""

    version: str
    actor: str
    reason: str
    at: datetime


class ModelRegistry:
    """Registers bundles as MLflow model versions and moves the serving aliases."""

    def __init__(
        self,
        tracking_uri: str,
        registry_uri: str | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        *,
        artifact_location: str | None = None,
        experiment_name: str = DEFAULT_MODEL_NAME,
        probe_timeout: float = 2.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.model_name = model_name
        self.artifact_location = artifact_location
        self.experiment_name = experiment_name
        self.probe_timeout = probe_timeout
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)
        self._experiment_id: str | None = None

    @classmethod
    def embedded(cls, data_dir: Path, model_name: str = DEFAULT_MODEL_NAME) -> ModelRegistry:
        """The local default: ``<data_dir>/mlflow.db``, artifacts under ``<data_dir>/mlruns``.

        A new database is created complete under a temporary name and then linked into place,
        so another process (a router following the champion) never sees half a schema.
        """
        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        database = data_dir / EMBEDDED_DATABASE
        if not database.exists():
            _create_database(database)
        return cls(
            f"sqlite:///{database}",
            model_name=model_name,
            artifact_location=(data_dir / "mlruns").as_uri(),
        )

    def register(
        self,
        bundle: ModelBundle,
        metrics: Mapping[str, float],
        params: Mapping[str, Any],
        data_window: tuple[datetime | str, datetime | str],
        source: str,
    ) -> str:
        """Log a run with ``bundle`` as its model, register it and point ``challenger`` at it."""
        start, end = (_iso(value) for value in data_window)
        window = {"data_window_start": start, "data_window_end": end}
        for key in window:
            if key in params:
                raise ValueError(f"params[{key!r}] is reserved for data_window")
        for key, value in metrics.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"metrics[{key!r}] must be a finite number, got {value!r}")
        run_params = {
            **{key: str(value) for key, value in params.items()},
            **window,
            "feature_schema_version": str(bundle.feature_schema_version),
        }
        with self._translated("register a model version"):
            run = self._client.create_run(
                self._ensure_experiment(),
                run_name=f"{self.model_name}-{bundle.digest}",
                tags={"source": source, "bundle_digest": bundle.digest, **window},
            )
            run_id = run.info.run_id
            try:
                now_ms = int(time.time() * 1000)
                self._client.log_batch(
                    run_id,
                    metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()],
                    params=[Param(k, v) for k, v in run_params.items()],
                )
                with tempfile.TemporaryDirectory() as folder:
                    model_dir = Path(folder) / MODEL_ARTIFACT_PATH
                    save_pyfunc(bundle, model_dir)
                    self._client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
            except BaseException:
                self._client.set_terminated(run_id, "FAILED")
                raise
            self._client.set_terminated(run_id)
            self._ensure_registered_model()
            version = self._client.create_model_version(
                self.model_name,
                source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
                run_id=run_id,
                tags={"source": source, "bundle_digest": bundle.digest, **window},
            ).version
        self._move(CHALLENGER, str(version), source, f"registered from {source}", "register")
        return str(version)

    def get_alias_version(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None when the alias (or the model) is unset."""
        with self._translated(f"read alias {alias!r}"):
            try:
                return str(self._client.get_model_version_by_alias(self.model_name, alias).version)
            except MlflowException as exc:
                if _is_not_found(exc):
                    return None
                raise

    def load_bundle(self, version_or_alias: str) -> ModelBundle:
        """Download and read the bundle of a version number or an alias."""
        version = self._resolve(version_or_alias)
        with self._translated(f"download version {version}"):
            uri = self._client.get_model_version_download_uri(self.model_name, version)
            with tempfile.TemporaryDirectory() as folder:
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=folder, tracking_uri=self.tracking_uri
                )
                try:
                    return load_pyfunc_bundle(Path(local))
                except BundleError as exc:
                    raise InvalidBundle(
                        f"version {version} of {self.model_name!r} is not a bundle: {exc}"
                    ) from exc

    def set_alias(self, alias: str, version: str, actor: str, reason: str) -> AliasMove:
        """Point ``alias`` at ``version`` and record who did it and why."""
        return self._move(alias, version, actor, reason, "set")

    def promote(self, version: str, actor: str, reason: str) -> AliasMove:
        """Make ``version`` the champion; the one it replaces becomes the rollback target."""
        return self._move(CHAMPION, version, actor, reason, "promote")

    def rollback(self, actor: str, reason: str) -> AliasMove:
        """Point ``champion`` back at the champion before the current one."""
        previous = self.previous_champion()
        if previous is None:
            raise NoPreviousChampion(
                f"no previous champion of {self.model_name!r} to roll back to "
                f"(champion is {self.get_alias_version(CHAMPION)!r})"
            )
        return self._move(CHAMPION, previous, actor, reason, "rollback")

    def previous_champion(self) -> str | None:
        """The version a rollback would restore, replayed from the audit log."""
        stack: list[str] = []
        for move in self.history():
            if move.alias != CHAMPION:
                continue
            if move.action == "rollback":
                if stack:
                    stack.pop()
            elif move.action in ("pin", "unpin"):
                continue
            elif move.from_version is not None and move.from_version != move.to_version:
                stack.append(move.from_version)
        return stack[-1] if stack else None

    def pin(self) -> Pin | None:
        """The operator's pin on the champion, or None when automatic moves are allowed."""
        text = self._model_tags().get(PIN_TAG)
        return Pin.from_json(text) if text else None

    def set_pin(self, actor: str, reason: str) -> Pin:
        """Stop automatic champion moves until :meth:`clear_pin`; audited."""
        champion = self.get_alias_version(CHAMPION)
        if champion is None:
            raise RegistryNotFound(f"model {self.model_name!r} has no champion to pin")
        pin = Pin(champion, actor, reason, datetime.now(UTC))
        self._audit(AliasMove(CHAMPION, "pin", champion, champion, actor, reason, pin.at))
        with self._translated("pin the champion"):
            self._client.set_registered_model_tag(self.model_name, PIN_TAG, pin.to_json())
        return pin

    def clear_pin(self, actor: str, reason: str) -> AliasMove:
        """Allow automatic champion moves again; audited."""
        if self.pin() is None:
            raise RegistryNotFound(f"the champion of {self.model_name!r} is not pinned")
        champion = self.get_alias_version(CHAMPION) or ""
        move = AliasMove(CHAMPION, "unpin", champion, champion, actor, reason, datetime.now(UTC))
        with self._translated("unpin the champion"):
            self._client.delete_registered_model_tag(self.model_name, PIN_TAG)
        self._audit(move)
        return move

    def history(self) -> list[AliasMove]:
        """Every recorded alias move, oldest first."""
        tags = self._model_tags()
        return [
            AliasMove.from_json(tags[key])
            for key in sorted(tags)
            if key.startswith(AUDIT_TAG_PREFIX)
        ]

    def tag_version(self, version: str, tags: Mapping[str, str]) -> None:
        """Attach tags (e.g. a gate decision) to a model version."""
        with self._translated(f"tag version {version}"):
            for key, value in tags.items():
                self._client.set_model_version_tag(self.model_name, version, key, value)

    def version_tags(self, version: str) -> dict[str, str]:
        """The tags of a model version."""
        with self._translated(f"read version {version}"):
            return dict(self._client.get_model_version(self.model_name, version).tags)

    def _model_tags(self) -> dict[str, str]:
        with self._translated("read the registered model"):
            try:
                return dict(self._client.get_registered_model(self.model_name).tags)
            except MlflowException as exc:
                if _is_not_found(exc):
                    return {}
                raise

    def _audit(self, move: AliasMove) -> None:
        if not move.actor or not move.reason:
            raise ValueError(f"actor and reason are required, got actor={move.actor!r}")
        key = f"{AUDIT_TAG_PREFIX}{time.time_ns():020d}.{secrets.token_hex(4)}"
        with self._translated(f"record the {move.action} of {move.alias!r}"):
            self._client.set_registered_model_tag(self.model_name, key, move.to_json())

    def _move(self, alias: str, version: str, actor: str, reason: str, action: Action) -> AliasMove:
        if not alias or alias.isdigit():
            raise ValueError(f"alias must be a non-numeric name, got {alias!r}")
        if not actor or not reason:
            raise ValueError(f"actor and reason are required for an alias move, got {actor=!r}")
        previous = self.get_alias_version(alias)
        move = AliasMove(alias, action, previous, version, actor, reason, datetime.now(UTC))
        with self._translated(f"move alias {alias!r} to version {version}"):
            self._client.get_model_version(self.model_name, version)  # NotFound before moving
            self._client.set_registered_model_alias(self.model_name, alias, version)
        self._audit(move)
        return move

    def _resolve(self, version_or_alias: str) -> str:
        if version_or_alias.isdigit():
            return version_or_alias
        version = self.get_alias_version(version_or_alias)
        if version is None:
            raise RegistryNotFound(
                f"alias {version_or_alias!r} of model {self.model_name!r} is not set"
            )
        return version

    def _ensure_experiment(self) -> str:
        if self._experiment_id is None:
            experiment = self._client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
            else:
                self._experiment_id = self._client.create_experiment(
                    self.experiment_name, artifact_location=self.artifact_location
                )
        return self._experiment_id

    def _ensure_registered_model(self) -> None:
        try:
            self._client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if not _is_not_found(exc):
                raise
            self._client.create_registered_model(self.model_name)

    def _probe(self) -> None:
        """Fail fast on an unreachable server instead of MLflow's minutes of HTTP retries."""
        for uri in {self.tracking_uri, self.registry_uri}:
            if not uri.startswith(("http://", "https://")):
                continue
            try:
                response = httpx.get(f"{uri.rstrip('/')}/health", timeout=self.probe_timeout)
            except httpx.HTTPError as exc:
                raise RegistryUnavailable(f"MLflow server {uri} is unreachable: {exc}") from exc
            if response.status_code >= 500:
                raise RegistryUnavailable(
                    f"MLflow server {uri} is unhealthy: HTTP {response.status_code}"
                )

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Run MLflow calls, turning their exceptions into registry errors."""
        self._probe()
        try:
            yield
        except MlflowException as exc:
            raise _from_mlflow(exc, f"{action} for model {self.model_name!r}") from exc
        except OSError as exc:  # requests' errors are OSErrors too
            raise RegistryUnavailable(f"could not {action}: {exc}") from exc


def _create_database(database: Path) -> None:
    """Create MLflow's tracking and registry tables at ``database`` unless it appears first."""
    staging = database.with_name(f".{database.name}.{secrets.token_hex(4)}")
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{staging}")
        client.search_experiments(max_results=1)  # runs the tracking store's migrations
        client.search_registered_models(max_results=1)  # and the registry's
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile
            os.link(staging, database)
    except MlflowException as exc:
        raise RegistryError(f"could not create the MLflow database {database}: {exc}") from exc
    finally:
        staging.unlink(missing_ok=True)


def _is_not_found(exc: MlflowException) -> bool:
    # A missing alias comes back as INVALID_PARAMETER_VALUE "Registered model alias x not found."
    message = exc.message.lower()
    return exc.error_code in _NOT_FOUND_CODES or (
        exc.error_code == "INVALID_PARAMETER_VALUE"
        and "alias" in message
        and "not found" in message
    )


def _from_mlflow(exc: MlflowException, action: str) -> RegistryError:
    message = f"could not {action}: {exc.message}"
    if exc.error_code in _UNAVAILABLE_CODES or "database is locked" in exc.message:
        return RegistryUnavailable(message)
    if _is_not_found(exc):
        return RegistryNotFound(message)
    return RegistryError(message)


def _iso(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
