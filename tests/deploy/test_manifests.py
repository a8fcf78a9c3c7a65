"""Static checks of deploy/: YAML parses, objects are well formed, and the settings, probes and
commands the manifests name exist in the code. No Docker engine or cluster is involved."""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel

from learner.settings import LearnerSettings
from router_service.app import create_app
from router_service.cli import build_parser
from router_service.ledger_store import check_ledger_uri
from router_service.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
README = DEPLOY / "README.md"
ENV_NAME = re.compile(r"\bBUDGET_ROUTER_[A-Z0-9_]*[A-Z0-9]\b(?![*_])")
LEARNER_PREFIX = "BUDGET_ROUTER_LEARNER_"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def _documents(path: Path) -> list[Any]:
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _k8s_objects() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in _documents(path)
        if doc.get("kind") != "Kustomization"
    ]


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, obj in _k8s_objects():
        if obj["kind"] in WORKLOADS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]


def _k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, pod in _pod_specs():
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            yield f"{name}/{container['name']}", container


def _compose_services() -> dict[str, dict[str, Any]]:
    return _documents(COMPOSE)[0]["services"]


def _argv(command: Any, args: Any = None) -> list[str]:
    parts: list[str] = []
    for item in (command, args):
        if isinstance(item, str):
            parts += item.split()
        elif item:
            parts += [str(p) for p in item]
    return parts


def _settings_env_names(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """Every env var a pydantic-settings model reads, nested models joined with ``__``."""
    for name, field in model.model_fields.items():
        nested = [
            t
            for t in (field.annotation, *typing.get_args(field.annotation))
            if isinstance(t, type) and not isinstance(t, types.GenericAlias)
        ]
        models = [t for t in nested if issubclass(t, BaseModel)]
        if models:
            yield from _settings_env_names(models[0], f"{prefix}{name.upper()}__")
        else:
            yield f"{prefix}{name.upper()}"


KNOWN_ENV = {
    *_settings_env_names(Settings, "BUDGET_ROUTER_"),
    *_settings_env_names(LearnerSettings, LEARNER_PREFIX),
}


def _manifest_env() -> dict[str, str]:
    """BUDGET_ROUTER_* names set by compose, Kubernetes objects and the Dockerfile -> where."""
    found: dict[str, str] = {}
    for service, spec in _compose_services().items():
        environment = spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        found.update(dict.fromkeys(environment, f"compose.yaml service {service}"))
    for path, obj in _k8s_objects():
        where = f"{path.name} {obj['kind']} {obj['metadata']['name']}"
        if obj["kind"] in ("ConfigMap", "Secret"):
            keys = [*obj.get("data", {}), *obj.get("stringData", {})]
            found.update(dict.fromkeys(keys, where))
    for name, container in _k8s_containers():
        found.update(dict.fromkeys((e["name"] for e in container.get("env", [])), name))
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    found.update(dict.fromkeys(ENV_NAME.findall(dockerfile), "Dockerfile"))
    return {k: v for k, v in found.items() if k.startswith("BUDGET_ROUTER_")}


def _compose_and_k8s_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def test_the_walk_finds_nested_and_learner_settings() -> None:
    assert {
        "BUDGET_ROUTER_KAFKA__BOOTSTRAP_SERVERS",
        "BUDGET_ROUTER_GOVERNOR__BURN_MARGIN",
        "BUDGET_ROUTER_DATA_DIR",
        "BUDGET_ROUTER_LEARNER_JOIN_WINDOW_SECONDS",
    } <= KNOWN_ENV
    assert "BUDGET_ROUTER_KAFKA" not in KNOWN_ENV


@pytest.mark.parametrize("path", _compose_and_k8s_files(), ids=lambda p: p.name)
def test_every_yaml_file_parses(path: Path) -> None:
    assert _documents(path), f"{path} holds no YAML document"


@pytest.mark.parametrize(
    ("path", "obj"),
    _k8s_objects(),
    ids=lambda v: v.name if isinstance(v, Path) else f"{v.get('kind')}",
)
def test_kubernetes_objects_are_well_formed(path: Path, obj: dict[str, Any]) -> None:
    for key in ("apiVersion", "kind"):
        assert obj.get(key), f"{path.name}: an object lacks {key}"
    assert obj.get("metadata", {}).get("name"), f"{path.name}: {obj['kind']} lacks metadata.name"
    if obj["kind"] != "Namespace":
        assert obj["metadata"].get("namespace") == "budget-router", f"{path.name}: namespace"


def test_kustomization_lists_existing_files() -> None:
    kustomization = _documents(K8S / "kustomization.yaml")[0]
    missing = [r for r in kustomization["resources"] if not (K8S / r).is_file()]
    assert missing == []


def test_every_budget_router_env_var_is_a_settings_field() -> None:
    named = dict(_manifest_env())
    named.update(dict.fromkeys(ENV_NAME.findall(README.read_text()), "README.md"))
    unknown = {name: where for name, where in named.items() if name not in KNOWN_ENV}
    assert unknown == {}, f"not a field of Settings or LearnerSettings: {unknown}"
    assert len(named) >= 10


def test_every_env_var_the_manifests_set_is_documented() -> None:
    documented = set(ENV_NAME.findall(README.read_text()))
    assert set(_manifest_env()) - documented == set()


def test_router_probes_point_at_routes_the_app_serves(tmp_path: Path) -> None:
    probes: dict[str, str] = {}
    for name, container in _k8s_containers():
        if _argv(container.get("command"), container.get("args"))[:2] == ["budget-router", "serve"]:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probes[f"{name} {kind}"] = container[kind]["httpGet"]["path"]
    healthcheck = " ".join(_argv(_compose_services()["router"]["healthcheck"]["test"]))
    probes["compose router healthcheck"] = re.findall(r"localhost:8080(/\w*)", healthcheck)[0]
    assert probes["router/router readinessProbe"] == "/readyz"
    assert probes["router/router livenessProbe"] == "/healthz"
    app = create_app(Settings(data_dir=tmp_path / "var", prior_examples_per_kind=2))
    with TestClient(app) as client:  # routes are looked up the way a request is routed
        answers = {where: client.get(path).status_code for where, path in probes.items()}
    assert answers == dict.fromkeys(probes, 200), f"probe paths the app does not serve: {answers}"


def _budget_router_commands() -> list[tuple[str, list[str]]]:
    commands = [
        (f"k8s {name}", _argv(c.get("command"), c.get("args"))) for name, c in _k8s_containers()
    ]
    commands += [
        (f"compose {name}", _argv(spec.get("command")))
        for name, spec in _compose_services().items()
    ]
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("CMD ["):
            commands.append(("Dockerfile CMD", json.loads(line.removeprefix("CMD "))))
    return [(where, argv) for where, argv in commands if argv[:1] == ["budget-router"]]


def test_container_commands_are_real_subcommands() -> None:
    commands = _budget_router_commands()
    assert {argv[1] for _, argv in commands} >= {"serve", "learn"}
    for where, argv in commands:
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"{where}: `{' '.join(argv)}` is not a budget-router command ({exc})")


def test_pods_get_no_service_link_variables() -> None:
    """Service links would set BUDGET_ROUTER_PORT=tcp://... for a Service named budget-router."""
    linked = [name for name, pod in _pod_specs() if pod.get("enableServiceLinks") is not False]
    runs_app = {name.split("/")[0] for name, _ in _budget_router_commands_k8s()}
    assert runs_app and not runs_app & set(linked)


def _budget_router_commands_k8s() -> list[tuple[str, list[str]]]:
    return [
        (name, argv)
        for name, c in _k8s_containers()
        if (argv := _argv(c.get("command"), c.get("args")))[:1] == ["budget-router"]
    ]


def test_one_learner_with_its_own_volume() -> None:
    (learner,) = [o for _, o in _k8s_objects() if o["metadata"]["name"] == "learner"]
    assert learner["spec"]["replicas"] == 1
    assert learner["spec"]["strategy"]["type"] == "Recreate"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in _volumes(learner)
        if "persistentVolumeClaim" in v
    ]
    pvcs = {
        o["metadata"]["name"] for _, o in _k8s_objects() if o["kind"] == "PersistentVolumeClaim"
    }
    assert claims and set(claims) <= pvcs


def _volumes(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"].get("volumes", [])


def test_services_select_pods_and_name_their_ports() -> None:
    pods = [
        (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
        for _, o in _k8s_objects()
        if o["kind"] in WORKLOADS
    ]
    for _, service in [(p, o) for p, o in _k8s_objects() if o["kind"] == "Service"]:
        selector = service["spec"]["selector"]
        matches = [spec for labels, spec in pods if selector.items() <= labels.items()]
        assert matches, f"Service {service['metadata']['name']} selects no pod"
        ports = {p.get("name") for spec in matches for c in spec["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert isinstance(target, int) or target in ports, f"{target} is not a container port"


def _serving(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in services.items()
        if _argv(s.get("command"))[:2] == ["budget-router", "serve"]
    }


def test_compose_runs_several_replicas_on_one_postgres_ledger() -> None:
    routers = _serving(_compose_services())
    assert len(routers) >= 2
    uris = {spec["environment"]["BUDGET_ROUTER_LEDGER_URI"] for spec in routers.values()}
    assert len(uris) == 1 and check_ledger_uri(uris.pop()).startswith("postgresql://")
    volumes = [spec["volumes"][0].split(":")[0] for spec in routers.values()]
    ports = [spec["ports"][0].split(":")[1] for spec in routers.values()]
    assert len(set(volumes)) == len(volumes), "each replica needs its own spool volume"
    assert len(set(ports)) == len(ports)
    postgres = _compose_services()["postgres"]
    assert any(v.endswith(":/docker-entrypoint-initdb.d:ro") for v in postgres["volumes"])
    assert (DEPLOY / "postgres-init" / "10-ledger.sh").is_file()


def test_kubernetes_router_replicas_take_the_ledger_uri_from_a_secret() -> None:
    (router,) = [
        o
        for _, o in _k8s_objects()
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "router"
    ]
    assert router["spec"]["replicas"] > 1
    (container,) = router["spec"]["template"]["spec"]["containers"]
    secrets = {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref}
    holding = [
        o["stringData"]["BUDGET_ROUTER_LEDGER_URI"]
        for _, o in _k8s_objects()
        if o["kind"] == "Secret"
        and o["metadata"]["name"] in secrets
        and "BUDGET_ROUTER_LEDGER_URI" in o.get("stringData", {})
    ]
    assert len(holding) == 1 and check_ledger_uri(holding[0]).startswith("postgresql://")
    configs = [o for _, o in _k8s_objects() if o["kind"] == "ConfigMap"]
    assert all("BUDGET_ROUTER_LEDGER_URI" not in o["data"] for o in configs), "a secret, not config"
