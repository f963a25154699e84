"""Shared fixtures: the packaged graph, a fast deterministic embedder, a MiniLM retriever."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from knowledge_graph.graph import KnowledgeGraph, load_graph
from knowledge_graph.text import tokens


class HashingEmbedder:
    """Bag of hashed word tokens: deterministic, instant, for tests that need no semantics."""

    name = "hashing-test-embedder"
    dim = 64

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for t in tokens(text):
                out[i, int(hashlib.md5(t.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


@pytest.fixture(scope="session")
def graph() -> KnowledgeGraph:
    return load_graph()


@pytest.fixture(scope="session")
def hashing_embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="session")
def minilm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index directory built once per session with the real MiniLM embedder."""
    from knowledge_graph.index import MiniLMEmbedder
    from knowledge_graph.retriever import ensure_index

    cache = tmp_path_factory.mktemp("kg-index")
    ensure_index(load_graph(), MiniLMEmbedder(), cache)
    return cache
