"""Routing features: what VW sees of a step (shared) and of each candidate model (action).

A step may carry what its prompt asks: the text (turned here into word uni- and bigrams hashed
into a few buckets, namespace ``content``, and, when a local model is configured, its
embedding ``p0``, ``p1``... in namespace ``embedding``), a client's own named features
(``client``) or the client's embedding (``e0``, ``e1``... in ``embedding``). VW crosses each
with the model namespace, so it learns which model suits which kind of request. Only bucket
counts and embeddings reach the events, never the words.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence

from learner.vw_model import Namespaces, log_cost_text, namespace_text
from router_service.catalog import ModelSpec
from router_service.prompt_embedding import PromptEmbedder
from router_service.schemas import Signals, Step

_UNPRICED_TEXT = namespace_text({"cost": {"unpriced": True}})

# The ask of a prompt usually comes last (after system text and examples): keep its tail.
CONTENT_CHARS = 1_000
# Word uni- and bigrams share this many hash buckets. Few buckets generalise: with one weight
# per (n-gram, model), a few thousand logged outcomes memorise prompts instead (measured in
# docs/benchmarks/routing_quality.md), and 32 features cost a tenth of a few hundred to score.
CONTENT_BUCKETS = 32
_BUCKET_NAMES = tuple(f"b{i:02d}" for i in range(CONTENT_BUCKETS))
_WORD = re.compile(r"[a-z0-9]+")
_BIGRAM_MIX = 0x9E3779B1
_BIGRAM_BUCKETS = tuple(
    tuple((a * _BIGRAM_MIX ^ b) % CONTENT_BUCKETS for b in range(CONTENT_BUCKETS))
    for a in range(CONTENT_BUCKETS)
)


def content_features(prompt: str) -> dict[str, float]:
    """Word uni- and bigrams of the prompt's last ``CONTENT_CHARS``, hashed into
    ``CONTENT_BUCKETS`` counts, L2-normalised.

    A word's bucket is its CRC-32 modulo the (power of two) bucket count; a bigram's is that
    of ``crc(a) * mix ^ crc(b)``, which the words' buckets alone determine.
    """
    buckets = [_word_bucket(w) for w in _WORD.findall(prompt[-CONTENT_CHARS:].lower())]
    counts = Counter(buckets)
    counts.update(_BIGRAM_BUCKETS[a][b] for a, b in itertools.pairwise(buckets))
    if not counts:
        return {}
    norm = 1.0 / math.sqrt(sum(c * c for c in counts.values()))
    return {_BUCKET_NAMES[k]: c * norm for k, c in sorted(counts.items())}


@functools.lru_cache(maxsize=65_536)
def _word_bucket(word: str) -> int:
    return zlib.crc32(word.encode()) % CONTENT_BUCKETS


def request_features(
    prompt: str | None,
    client_features: Mapping[str, float] | None,
    embedding: Sequence[float] | None,
    embedder: PromptEmbedder | None = None,
) -> dict[str, dict[str, float | str | bool]]:
    """The namespaces of what the step asks, for those of the three the client sent.

    With an ``embedder`` the prompt's embedding joins the client's in ``embedding``.
    """
    namespaces: dict[str, dict[str, float | str | bool]] = {}
    if prompt:
        namespaces["content"] = dict(content_features(prompt))
    if client_features:
        namespaces["client"] = dict(client_features)
    vectors: dict[str, float | str | bool] = {}
    if embedder is not None and prompt:
        vectors.update(embedder.features(prompt))
    if embedding:
        vectors.update({f"e{i}": float(v) for i, v in enumerate(embedding)})
    if vectors:
        namespaces["embedding"] = vectors
    return namespaces


def shared_features(
    step: Step,
    signals: Signals,
    *,
    trust_domain: str,
    task_type: str,
    tags: dict[str, str],
    context: dict[str, float | str],
    prompt: str | None = None,
    client_features: Mapping[str, float] | None = None,
    embedding: Sequence[float] | None = None,
    embedder: PromptEmbedder | None = None,
) -> dict[str, dict[str, float | str | bool]]:
    """Features of the step, the task and its state, shared by every candidate."""
    confidence = 0.5 if signals.prior_confidence is None else signals.prior_confidence
    return {
        "step": {
            "kind": step.kind,
            "type": step.type.lower(),
            "optional": step.optional,
            "log_in": math.log1p(step.input_tokens) / 10,
            "log_out": math.log1p(step.expected_output_tokens) / 10,
        },
        "task": {
            "domain": trust_domain,
            "task_type": task_type,
            **{f"tag_{key}": value for key, value in tags.items()},
        },
        "signals": {
            "retries": min(signals.retries, 10) / 10,
            "low_confidence": 1.0 - confidence,
            "malformed": min(signals.malformed_tool_args, 5) / 5,
            "loop": signals.loop_detected,
            "self_corrections": min(signals.self_corrections, 5) / 5,
            "context_pressure": signals.context_pressure,
        },
        "context": dict(context),
        **request_features(prompt, client_features, embedding, embedder),
    }


def action_features(model: ModelSpec, estimated_cost: float | None) -> Namespaces:
    """Features of one candidate model, including its estimated cost for this step."""
    return {"model": model_features(model), "cost": cost_features(estimated_cost)}


def model_features(model: ModelSpec) -> dict[str, float | str | bool]:
    """A candidate's catalog facts (namespace ``model``): the same at every step."""
    features: dict[str, float | str | bool] = {
        "id": model.id,
        "tier": model.tier,
        "provider": model.provider,
        "self_hosted": model.self_hosted,
    }
    for tag in model.tags:
        features[f"can_{tag}"] = True
    return features


def cost_features(estimated_cost: float | None) -> dict[str, float | str | bool]:
    """A candidate's estimated cost for this step (namespace ``cost``)."""
    if estimated_cost is None:
        return {"unpriced": True}
    return {"log_cost": _log_cost(estimated_cost)}


def cost_text(estimated_cost: float | None) -> str:
    """``namespace_text({"cost": cost_features(estimated_cost)})``, without building either
    (it is rendered for every candidate at every decision)."""
    if estimated_cost is None:
        return _UNPRICED_TEXT
    return log_cost_text(_log_cost(estimated_cost))


def _log_cost(estimated_cost: float) -> float:
    return math.log10(estimated_cost + 1e-6) / 6
