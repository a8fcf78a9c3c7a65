"""A prompt's embedding from a small local model, for the ``embedding`` namespace.

The ``embed`` extra installs wordllama, whose wheel ships its token vectors (Llama 2's
vocabulary, 256 Matryoshka dimensions, so a prefix is an embedding too) and its tokenizer.
Both are read from the package's own folder with downloads disabled: nothing is fetched at
run time. An embedding is wordllama's: the mean of the tail's token vectors, L2-normalised.
It is computed word by word, each whitespace-separated word's token vectors summed once and
cached, which is what makes it cheap enough for the decision path (measured in
docs/benchmarks/routing_quality_variants.md). Whitespace itself is dropped, which wordllama's
tokenizer would embed too: on RouterBench's prompts the cosine to wordllama's own embedding
is above 0.999, on indented code about 0.98.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from router_service.errors import ConfigError

# The same tail the hashed n-grams read: a prompt's ask usually comes last.
EMBEDDING_CHARS = 1_000
EMBEDDING_DIMS = (64, 128, 256)
# Distinct words whose vectors are kept; past it the cache starts over (64 dims: 16 MB).
CACHED_WORDS = 65_536
FEATURE_PREFIX = "p"


class PromptEmbedder:
    """Embeds prompt text with a table of token vectors and a tokenizer of single words."""

    def __init__(
        self,
        token_vectors: np.ndarray,
        tokenize: Callable[[str], list[int]],
        cached_words: int = CACHED_WORDS,
    ) -> None:
        self.dims = int(token_vectors.shape[1])
        self._token_vectors = np.ascontiguousarray(token_vectors, dtype=np.float32)
        self._tokenize = tokenize
        self._word_vectors = np.zeros((cached_words, self.dims), dtype=np.float32)
        self._rows: dict[str, int] = {}
        self._lock = threading.Lock()
        self._names = tuple(f"{FEATURE_PREFIX}{i}" for i in range(self.dims))

    @classmethod
    def wordllama(cls, dims: int) -> PromptEmbedder:
        """wordllama's ``l2_supercat`` vectors cut to ``dims``, from the installed package."""
        if dims not in EMBEDDING_DIMS:
            raise ConfigError(f"prompt_embedding_dims: {dims}; expected one of {EMBEDDING_DIMS}")
        package = _import_wordllama()
        model = package.WordLlama.load(
            trunc_dim=dims,
            disable_download=True,
            # The package's own folder as the cache: 0.4.0.post1 looks for its tokenizer under
            # ``tokenizer/`` in the package (the wheel ships it in ``tokenizers/``) and would
            # download it, but under ``tokenizers/`` in a cache folder.
            cache_dir=Path(package.__file__).parent,
        )
        tokenizer = model.tokenizer
        return cls(
            model.embedding,
            lambda word: tokenizer.encode(word, add_special_tokens=False).ids,
        )

    def embed(self, prompt: str) -> np.ndarray | None:
        """The unit-length mean token vector of the prompt's tail; None if it has no words."""
        words = prompt[-EMBEDDING_CHARS:].split()
        if not words:
            return None
        with self._lock:
            if len(self._rows) + len(words) > len(self._word_vectors):
                self._rows.clear()
            rows = [self._row(word) for word in words]
            total = self._word_vectors[rows].sum(axis=0)
        norm = float(np.sqrt(total @ total))
        return None if norm == 0.0 else total / norm

    def features(self, prompt: str) -> dict[str, float]:
        """The embedding as the ``embedding`` namespace's features ``p0``, ``p1``, ..."""
        vector = self.embed(prompt)
        if vector is None:
            return {}
        return dict(zip(self._names, vector.tolist(), strict=True))

    def _row(self, word: str) -> int:
        row = self._rows.get(word)
        if row is None:
            row = len(self._rows)
            ids = self._tokenize(word)
            self._word_vectors[row] = self._token_vectors[ids].sum(axis=0) if ids else 0.0
            self._rows[word] = row
        return row


def prompt_embedder(kind: str, dims: int) -> PromptEmbedder | None:
    """The embedder a ``prompt_embedding`` setting names; None for ``none``."""
    if kind == "none":
        return None
    if kind == "wordllama":
        return PromptEmbedder.wordllama(dims)
    raise ConfigError(f"prompt_embedding: {kind!r}; expected 'none' or 'wordllama'")


def _import_wordllama() -> ModuleType:
    """wordllama, imported without the root logging handler its ``__init__`` installs."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    except ImportError as exc:
        raise ConfigError(
            "prompt_embedding=wordllama (BUDGET_ROUTER_PROMPT_EMBEDDING) needs the wordllama "
            "package: install budget-router[embed]"
        ) from exc
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return wordllama
