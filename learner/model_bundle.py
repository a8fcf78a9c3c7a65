"""What the router serves, as one unit: VW model bytes, allocator state and feature schema version.

A bundle is saved as a directory (``model.vw``, ``allocator.json``, ``bundle.json``) and, for the
registry, wrapped in an MLflow pyfunc model whose only artifact is that directory, so a
registered version loads with ``mlflow.pyfunc.load_model("models:/budget-router@champion")``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from learner.vw_model import ExplorationSpec, VWPolicyModel

with warnings.catch_warnings():
    # MLflow infers schemas for its own agent types on import and warns about their Any fields.
    warnings.filterwarnings(
        "ignore", message=".*Any type hint is inferred as AnyType", category=UserWarning
    )
    import mlflow.pyfunc

BUNDLE_FORMAT = 1
MODEL_FILE = "model.vw"
ALLOCATOR_FILE = "allocator.json"
BUNDLE_FILE = "bundle.json"
# The name of the bundle directory inside the pyfunc model's ``artifacts/`` folder.
PYFUNC_ARTIFACT = "bundle"


class BundleError(Exception):
    """A bundle directory is missing a file or holds a value of the wrong shape."""

    retriable: ClassVar[bool] = False


@dataclass(frozen=True)
class ModelBundle:
    """A routing policy ready to serve: model, allocator lambdas, schema version, exploration."""

    vw_model_bytes: bytes
    allocator_state: dict[str, Any]
    feature_schema_version: int
    exploration: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vw_model_bytes:
            raise BundleError("vw_model_bytes is empty; expected a saved VW model")
        if isinstance(self.feature_schema_version, bool) or not isinstance(
            self.feature_schema_version, int
        ):
            raise BundleError(
                f"feature_schema_version must be an int, got {self.feature_schema_version!r}"
            )
        if self.feature_schema_version < 1:
            raise BundleError(
                f"feature_schema_version must be >= 1, got {self.feature_schema_version}"
            )
        self.exploration_spec()  # fail now, not when the router builds its policy

    @classmethod
    def from_model(
        cls,
        model: VWPolicyModel,
        exploration: ExplorationSpec,
        *,
        allocator_state: Mapping[str, Any],
        feature_schema_version: int = 1,
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelBundle:
        """Snapshot a live VW model into a bundle."""
        return cls(
            vw_model_bytes=model.to_bytes(),
            allocator_state=dict(allocator_state),
            feature_schema_version=feature_schema_version,
            exploration=dataclasses.asdict(exploration),
            metadata=dict(metadata or {}),
        )

    @property
    def digest(self) -> str:
        """A short content hash of the VW model, for policy version strings and logs."""
        return hashlib.sha256(self.vw_model_bytes).hexdigest()[:12]

    def exploration_spec(self) -> ExplorationSpec:
        """The exploration settings as the VW module's spec."""
        try:
            return ExplorationSpec(**self.exploration)
        except TypeError as exc:
            names = [f.name for f in dataclasses.fields(ExplorationSpec)]
            raise BundleError(
                f"exploration has unexpected keys {sorted(self.exploration)}; expected {names}"
            ) from exc

    def policy_model(self) -> VWPolicyModel:
        """A fresh VW workspace loaded from the bundle's model bytes."""
        return VWPolicyModel.from_bytes(self.vw_model_bytes)

    def save_dir(self, path: Path) -> None:
        """Write the three bundle files into ``path`` (created if needed)."""
        path.mkdir(parents=True, exist_ok=True)
        (path / MODEL_FILE).write_bytes(self.vw_model_bytes)
        (path / ALLOCATOR_FILE).write_text(json.dumps(self.allocator_state, sort_keys=True))
        header = {
            "format": BUNDLE_FORMAT,
            "feature_schema_version": self.feature_schema_version,
            "exploration": self.exploration,
            "metadata": self.metadata,
        }
        (path / BUNDLE_FILE).write_text(json.dumps(header, sort_keys=True, indent=1))

    @classmethod
    def load_dir(cls, path: Path) -> ModelBundle:
        """Read a directory written by :meth:`save_dir`."""
        for name in (MODEL_FILE, ALLOCATOR_FILE, BUNDLE_FILE):
            if not (path / name).is_file():
                raise BundleError(f"bundle directory {path} has no {name}")
        try:
            header = json.loads((path / BUNDLE_FILE).read_text())
            allocator = json.loads((path / ALLOCATOR_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"bundle directory {path} holds invalid JSON: {exc}") from exc
        if header.get("format") != BUNDLE_FORMAT:
            raise BundleError(
                f"{BUNDLE_FILE} format is {header.get('format')!r}; expected {BUNDLE_FORMAT}"
            )
        return cls(
            vw_model_bytes=(path / MODEL_FILE).read_bytes(),
            allocator_state=allocator,
            feature_schema_version=header["feature_schema_version"],
            exploration=header["exploration"],
            metadata=header.get("metadata", {}),
        )


class BundlePyfuncModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc face of a bundle: rows of shared/action features in, pmfs out."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.bundle = ModelBundle.load_dir(Path(context.artifacts[PYFUNC_ARTIFACT]))
        self._model = self.bundle.policy_model()
        self._lock = threading.Lock()  # a VW workspace is not thread-safe

    # Typed as a DataFrame so MLflow skips schema inference; lists and dicts pass through as-is.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[list[float]]:
        """One pmf per row of ``shared_features`` and ``action_features`` (JSON or dicts)."""
        pmfs = []
        for row in _rows(model_input):
            shared = _decoded(row, "shared_features")
            actions = _decoded(row, "action_features")
            if not isinstance(shared, dict) or not isinstance(actions, list):
                raise BundleError(
                    "each row needs shared_features as an object and action_features as a list"
                )
            with self._lock:
                pmfs.append(self._model.predict(shared, actions))
        return pmfs


def _rows(model_input: Any) -> Sequence[Mapping[str, Any]]:
    if isinstance(model_input, pd.DataFrame):
        return model_input.to_dict("records")
    if isinstance(model_input, Mapping):  # columns, as MLflow's serving JSON sends them
        return pd.DataFrame(dict(model_input)).to_dict("records")
    return list(model_input)


def _decoded(row: Mapping[str, Any], key: str) -> Any:
    if key not in row:
        raise BundleError(
            f"prediction row has no {key!r}; expected shared_features, action_features"
        )
    value = row[key]
    return json.loads(value) if isinstance(value, str) else value


def save_pyfunc(bundle: ModelBundle, path: Path) -> None:
    """Write ``bundle`` as an MLflow pyfunc model directory at ``path`` (must not exist)."""
    with tempfile.TemporaryDirectory() as folder:
        staging = Path(folder) / PYFUNC_ARTIFACT
        bundle.save_dir(staging)
        mlflow.pyfunc.save_model(
            str(path),
            python_model=BundlePyfuncModel(),
            artifacts={PYFUNC_ARTIFACT: str(staging)},
            # Explicit requirements: MLflow's inference would import-trace the model (slow).
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"vowpalwabbit=={package_version('vowpalwabbit')}",
                f"budget-router=={package_version('budget-router')}",
            ],
        )


def load_pyfunc_bundle(artifact_dir: Path) -> ModelBundle:
    """The bundle inside a downloaded pyfunc ``artifacts/bundle`` directory or a model directory."""
    nested = artifact_dir / "artifacts" / PYFUNC_ARTIFACT
    return ModelBundle.load_dir(nested if nested.is_dir() else artifact_dir)
