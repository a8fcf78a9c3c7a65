"""The prompt embedder: wordllama's shipped vectors, offline, into the embedding namespace."""

from __future__ import annotations

import builtins
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from router_service.app import create_app
from router_service.decider import decide
from router_service.errors import ConfigError
from router_service.features import content_features, request_features
from router_service.prompt_embedding import (
    EMBEDDING_CHARS,
    PromptEmbedder,
    prompt_embedder,
)
from router_service.schemas import DecideRequest
from router_service.settings import Settings
from tests.conftest import ADMIN_HEADERS, budget, step

wordllama = pytest.importorskip("wordllama")
PROMPT = "Write a Python function that reverses a linked list. Explain the complexity."


@pytest.fixture(scope="module")
def embedder() -> PromptEmbedder:
    return PromptEmbedder.wordllama(64)


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("the embedder tried to use the network")


def test_loads_from_the_package_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = PromptEmbedder.wordllama(128)
    assert loaded.dims == 128
    assert len(loaded.features(PROMPT)) == 128


def test_import_leaves_the_root_logger_alone() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    PromptEmbedder.wordllama(64)
    assert root.handlers == handlers and root.level == level


def test_embedding_is_deterministic_unit_length_and_named(embedder: PromptEmbedder) -> None:
    features = embedder.features(PROMPT)
    assert list(features) == [f"p{i}" for i in range(64)]
    assert sum(v * v for v in features.values()) == pytest.approx(1.0, abs=1e-5)
    assert PromptEmbedder.wordllama(64).features(PROMPT) == features
    assert embedder.features("   \n ") == {}


def test_it_is_wordllamas_own_embedding(embedder: PromptEmbedder) -> None:
    package_dir = Path(wordllama.__file__).parent
    model = wordllama.WordLlama.load(trunc_dim=64, disable_download=True, cache_dir=package_dir)
    # Whitespace is dropped: wordllama's own tokenizer also embeds newlines and indentation.
    for prompt, cosine in [
        (PROMPT, 0.999),
        ("What is the capital of France?", 0.999),
        ("def f(x):\n    return x * 2  # double", 0.97),
    ]:
        expected = model.embed(prompt, norm=True)[0]
        assert float(embedder.embed(prompt) @ expected) > cosine


def test_related_prompts_are_closer_than_unrelated_ones(embedder: PromptEmbedder) -> None:
    code = embedder.embed("Write a Python function that sorts a list of integers.")
    more_code = embedder.embed("Implement a Python function to reverse a string.")
    cooking = embedder.embed("How long should I boil an egg for a soft yolk?")
    assert code is not None and more_code is not None and cooking is not None
    assert float(code @ more_code) > float(code @ cooking) + 0.1


def test_only_the_tail_is_read(embedder: PromptEmbedder) -> None:
    head = "alpha " * 500
    assert embedder.features(head + PROMPT) == embedder.features((head + PROMPT)[-EMBEDDING_CHARS:])


def test_a_full_word_cache_starts_over_with_the_same_embeddings() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 4)).astype(np.float32)
    small = PromptEmbedder(vectors, lambda word: [len(word) % 50, ord(word[0]) % 50], 3)
    large = PromptEmbedder(vectors, lambda word: [len(word) % 50, ord(word[0]) % 50])
    for text in ("a bb ccc", "dddd a eeeee", "bb ffffff a", "ggggggg a a"):
        assert np.allclose(small.embed(text), large.embed(text))


def test_namespace_joins_the_clients_embedding(embedder: PromptEmbedder) -> None:
    namespaces = request_features(PROMPT, None, [0.5], embedder)
    assert namespaces["embedding"] == {**embedder.features(PROMPT), "e0": 0.5}
    assert namespaces["content"] == content_features(PROMPT)
    assert request_features(None, None, None, embedder) == {}


@pytest.mark.parametrize(
    ("kind", "dims", "match"),
    [("wordllama", 100, "prompt_embedding_dims: 100"), ("bert", 64, "prompt_embedding: 'bert'")],
)
def test_bad_settings_name_the_setting(kind: str, dims: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prompt_embedder(kind, dims)


def test_none_means_no_embedder() -> None:
    assert prompt_embedder("none", 64) is None


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without_wordllama(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "wordllama":
            raise ImportError("No module named 'wordllama'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_wordllama)
    with pytest.raises(ConfigError, match=r"BUDGET_ROUTER_PROMPT_EMBEDDING.*\[embed\]"):
        prompt_embedder("wordllama", 64)


def test_settings_refuse_the_setting_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("router_service.settings.find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"prompt_embedding[\s\S]*install budget-router\[embed\]"):
        Settings(prompt_embedding="wordllama")
    assert Settings().prompt_embedding == "none"


def test_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGET_ROUTER_PROMPT_EMBEDDING", "wordllama")
    monkeypatch.setenv("BUDGET_ROUTER_PROMPT_EMBEDDING_DIMS", "128")
    settings = Settings()
    assert (settings.prompt_embedding, settings.prompt_embedding_dims) == ("wordllama", 128)
    assert Settings.model_fields["prompt_embedding"].default == "none"
    monkeypatch.setenv("BUDGET_ROUTER_PROMPT_EMBEDDING_DIMS", "100")
    with pytest.raises(ValueError, match=r"prompt_embedding_dims[\s\S]*one of \(64, 128, 256\)"):
        Settings()


def test_decide_with_the_setting_on_embeds_the_prompt_and_logs_no_text(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    embedding_on = settings.model_copy(update={"prompt_embedding": "wordllama"})
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(embedding_on), headers=ADMIN_HEADERS) as client:
        created = client.post(
            "/v1/tasks", json={"task_id": "t1", "task_type": "coding", "budget": budget()}
        )
        assert created.status_code == 201, created.text
        body = {"task_id": "t1", "step": step(), "prompt": PROMPT}
        response = client.post("/v1/decide", json=body)
        assert response.status_code == 200, response.text
        state = client.app.state.router  # type: ignore[attr-defined]
        _, event = decide(DecideRequest.model_validate(body), state.tasks.get("t1").task, state)
    assert event is not None
    assert event.shared_features["embedding"] == state.prompt_embedder.features(PROMPT)
    assert len(event.shared_features["embedding"]) == 64
    assert event.prompt is None
    assert "linked" not in event.model_dump_json()
    assert "linked" not in response.text
    assert all("linked" not in record.getMessage() for record in caplog.records)
