"""examples/langgraph_proxy.py: each node's headers route through the proxy as its step kind.

LangGraph itself is not a dependency; the example imports it only to build the graph, so this
test loads the example and sends each node's call as the example's ``ChatOpenAI`` would.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from fastapi.testclient import TestClient

from router_service.schemas import Budget
from tests.router_service.fake_provider import FakeProvider
from tests.router_service.test_proxy import MESSAGES, fake, provider_server, proxy

__all__ = ["fake", "provider_server", "proxy"]  # fixtures shared with test_proxy
EXAMPLE = Path(__file__).parents[2] / "examples" / "langgraph_proxy.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_proxy", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_node_of_the_example_is_routed_as_its_step(
    proxy: TestClient, fake: FakeProvider
) -> None:
    example = load_example()
    budget = Budget.model_validate(example.BUDGET).model_dump()
    opened = proxy.post("/v1/tasks", json={"task_type": "research", "budget": budget})
    task_id = opened.json()["task_id"]
    for _name, kind, step_type, instruction in example.NODES:
        messages = [*MESSAGES, {"role": "user", "content": instruction}]
        response = proxy.post(
            "/v1/chat/completions",
            json={"model": "routed-by-budget-router", "messages": messages, "max_tokens": 1_000},
            headers=example.node_headers(task_id, kind, step_type),
        )
        assert response.status_code == 200, response.text
    decisions = proxy.get(f"/v1/tasks/{task_id}").json()["decisions"]
    steps = [(d["step"]["kind"], d["step"]["type"]) for d in decisions]
    assert steps == [(kind, step_type) for _, kind, step_type, _ in example.NODES]
    assert [r["body"]["model"] for r in fake.requests] == [d["model"] for d in decisions]
