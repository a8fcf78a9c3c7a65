"""What a step asks: prompt text, client features and embeddings as VW namespaces."""

from __future__ import annotations

import math
import re
import zlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from learner.vw_model import INTERACTIONS, ExplorationSpec, VWPolicyModel, example_lines
from router_service.app import create_app
from router_service.decider import decide
from router_service.features import (
    CONTENT_BUCKETS,
    CONTENT_CHARS,
    content_features,
    shared_features,
)
from router_service.schemas import DecideRequest, Signals, Step
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, budget, step

PROMPT = "Write a Python function that reverses a linked list. Explain the complexity."


def _shared(**request: Any) -> dict[str, Any]:
    return shared_features(
        Step(kind="execution", type="drafting", input_tokens=100, expected_output_tokens=50),
        Signals(),
        trust_domain="eng",
        task_type="coding",
        tags={},
        context={},
        **request,
    )


def test_prompt_becomes_normalised_counts_in_a_few_buckets() -> None:
    features = content_features("Sort the list. sort THE list!")
    assert features == content_features("sort the list sort the list")
    assert sum(v * v for v in features.values()) == pytest.approx(1.0)
    assert content_features("") == {}
    long_prompt = " ".join(f"word{i}" for i in range(400))
    assert 0 < len(content_features(long_prompt)) <= CONTENT_BUCKETS
    assert all(re.fullmatch(r"b\d\d", key) for key in content_features(long_prompt))


def test_word_and_bigram_buckets_follow_crc32() -> None:
    # "alpha alpha": the word twice, the bigram (alpha, alpha) once.
    crc = zlib.crc32(b"alpha")
    word = crc % CONTENT_BUCKETS
    bigram = ((crc * 0x9E3779B1 ^ crc) & 0xFFFFFFFF) % CONTENT_BUCKETS
    expected = {word: 2.0, bigram: 1.0} if word != bigram else {word: 3.0}
    norm = math.sqrt(sum(c * c for c in expected.values()))
    assert content_features("alpha alpha") == pytest.approx(
        {f"b{k:02d}": c / norm for k, c in expected.items()}
    )


def test_only_the_prompts_tail_is_read() -> None:
    head = "alpha " * 500
    assert content_features(head + PROMPT) == content_features((head + PROMPT)[-CONTENT_CHARS:])
    assert content_features(head + PROMPT) != content_features(head + "something else")


def test_request_namespaces_appear_only_when_sent() -> None:
    assert {"content", "client", "embedding"}.isdisjoint(_shared())
    shared = _shared(prompt=PROMPT, client_features={"difficulty": 0.7}, embedding=[0.1, -0.2])
    assert shared["client"] == {"difficulty": 0.7}
    assert shared["embedding"] == {"e0": 0.1, "e1": -0.2}
    assert shared["content"] == content_features(PROMPT)


def test_content_namespace_is_crossed_with_the_model_namespace() -> None:
    assert {"wm", "fm", "em"} <= set(INTERACTIONS)
    line = example_lines(_shared(prompt=PROMPT), [{"model": {"id": "a"}}])[0]
    assert "|w " in line and "|s " in line
    model = VWPolicyModel.create(ExplorationSpec("epsilon", 0.0), seed=1)
    actions = [{"model": {"id": "cheap"}}, {"model": {"id": "strong"}}]
    code, chat = _shared(prompt="write python code for a parser"), _shared(prompt="hello there")
    for _ in range(40):  # the strong model is right on code, the cheap one on chat
        model.learn(code, actions, 1, -1.0, 0.5)
        model.learn(code, actions, 0, 0.0, 0.5)
        model.learn(chat, actions, 0, -1.0, 0.5)
        model.learn(chat, actions, 1, 0.0, 0.5)
    assert model.predict(code, actions)[1] == 1.0
    assert model.predict(chat, actions)[0] == 1.0
    model.close()


BAD_REQUEST_FIELDS = [
    ({"prompt": ""}, "prompt"),
    ({"prompt": 12}, "prompt"),
    ({"prompt": "x" * 200_001}, "prompt"),
    ({"features": {}}, "features"),
    ({"features": {"ok": "high"}}, "features.ok"),
    ({"features": {"bad name": 1.0}}, "features"),
    ({"features": {f"f{i}": 1.0 for i in range(65)}}, "features"),
    ({"embedding": []}, "embedding"),
    ({"embedding": [0.1] * 1_025}, "embedding"),
    ({"embedding": [0.1, "x"]}, "embedding.1"),
]


@pytest.fixture
def app_client(settings: Settings) -> Any:
    with TestClient(create_app(settings), headers=ADMIN_HEADERS) as test_client:
        response = test_client.post(
            "/v1/tasks",
            json={"task_id": "t1", "task_type": "coding", "budget": budget()},
        )
        assert response.status_code == 201, response.text
        yield test_client


@pytest.mark.parametrize(("override", "field"), BAD_REQUEST_FIELDS)
def test_bad_prompt_features_or_embedding_are_422_naming_the_field(
    app_client: TestClient, override: dict[str, Any], field: str
) -> None:
    response = app_client.post("/v1/decide", json={"task_id": "t1", "step": step(), **override})
    assert response.status_code == 422, response.text
    fields = [f["field"] for f in response.json()["error"]["fields"]]
    assert any(f.startswith(field) for f in fields), fields


def test_non_finite_numbers_are_refused() -> None:
    for body in ({"features": {"a": float("nan")}}, {"embedding": [float("inf")]}):
        with pytest.raises(ValueError, match="finite"):
            DecideRequest(task_id="t1", step=Step(**step()), **body)  # type: ignore[arg-type]


def test_decide_accepts_a_prompt_and_the_event_carries_hashes_not_text(
    app_client: TestClient,
) -> None:
    body = {"task_id": "t1", "step": step(), "prompt": PROMPT, "features": {"hard": 1.0}}
    response = app_client.post("/v1/decide", json=body)
    assert response.status_code == 200, response.text
    assert "reverses" not in response.text
    state = app_client.app.state.router  # type: ignore[attr-defined]
    request = DecideRequest.model_validate(body)
    _, event = decide(request, state.tasks.get("t1").task, state)
    assert event is not None
    assert event.shared_features["content"] == content_features(PROMPT)
    assert event.shared_features["client"] == {"hard": 1.0}
    assert event.prompt is None
    assert "linked" not in event.model_dump_json()


def test_operators_may_log_prompts(settings: Settings) -> None:
    logging = settings.model_copy(update={"log_prompts": True})
    with TestClient(create_app(logging), headers=ADMIN_HEADERS) as test_client:
        test_client.post(
            "/v1/tasks",
            json={"task_id": "t2", "task_type": "coding", "budget": budget()},
        )
        state = test_client.app.state.router  # type: ignore[attr-defined]
        request = DecideRequest(task_id="t2", step=Step(**step()), prompt=PROMPT)
        _, event = decide(request, state.tasks.get("t2").task, state)
    assert event is not None and event.prompt == PROMPT
