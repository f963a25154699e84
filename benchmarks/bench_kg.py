"""Knowledge-graph retriever benchmark (run by hand; not a test).

    .venv/bin/python benchmarks/bench_kg.py                 # core graph + 100k-node scale test
    .venv/bin/python benchmarks/bench_kg.py --scale-nodes 0 # core graph only
    .venv/bin/python benchmarks/bench_kg.py --scale-nodes 0 \
        --queries knowledge_graph/eval/queries_heldout.yaml         # held-out query set

Core graph: model load time, index build time (fresh directory), recall@5 / negation accuracy on
the labelled query set (``--queries``: the tuning set ``queries.yaml`` by default, or the held-out
``queries_heldout.yaml``), and per-query latency (p50/p95 over the query set, after a warm-up),
split into linking and query embedding.

Scale test: a synthetic graph of N nodes (default 100,000) whose names are drawn from a 3,000-word
pseudo-vocabulary (so names are unique but the token vocabulary stays realistic), three edges per
node, and **random unit vectors instead of MiniLM node embeddings** (embedding 100k texts on two
shared cores would take most of an hour). Queries are still embedded by the real MiniLM model, so
the query latency includes the real encoder, linking over the 100k-node alias dictionary, faiss
search over 100k vectors and k-hop expansion.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from knowledge_graph.graph import KnowledgeGraph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50 and p95 in milliseconds."""
    arr = np.asarray(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
    }


def bench_core(repeats: int, quantize: bool, queries_path: Path | None = None) -> dict[str, object]:
    """Build, evaluate and time the packaged graph on one query file (the tuning set when None)."""
    from knowledge_graph.evaluation import DEFAULT_QUERIES, evaluate, load_queries
    from knowledge_graph.graph import load_graph
    from knowledge_graph.index import MiniLMEmbedder
    from knowledge_graph.retriever import Retriever, ensure_index

    t0 = time.perf_counter()
    graph = load_graph()
    load_graph_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedder = MiniLMEmbedder(quantize=quantize)
    model_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = ensure_index(graph, embedder, Path(tmp))
        build_s = time.perf_counter() - t0
    retriever = Retriever(graph, index, embedder)
    queries_path = queries_path or DEFAULT_QUERIES
    queries = load_queries(queries_path)
    report = evaluate(retriever, queries, k=5)
    by_mode = {}
    for mode in ("fallback", "never"):
        other = Retriever(graph, index, embedder, dense=mode)
        rep = evaluate(other, queries, k=5)
        lat = []
        for t in [q.q for q in queries]:
            a = time.perf_counter()
            other.retrieve(t, k=5)
            lat.append(time.perf_counter() - a)
        by_mode[mode] = {
            "recall_at_5": round(rep.recall, 4),
            "negation_accuracy": round(rep.negation_accuracy, 4),
            "query_latency": percentiles(lat),
        }
    texts = [q.q for q in queries]
    for t in texts[:10]:
        retriever.retrieve(t)
    total, link, embed = [], [], []
    for _ in range(repeats):
        for t in texts:
            a = time.perf_counter()
            retriever.linker.link(t)
            b = time.perf_counter()
            embedder.encode([t])
            c = time.perf_counter()
            retriever.retrieve(t, k=5)
            d = time.perf_counter()
            link.append(b - a)
            embed.append(c - b)
            total.append(d - c)
    return {
        "embedder": embedder.name,
        "graph_nodes": len(graph),
        "indexed_nodes": len(index.node_ids),
        "graph_load_s": round(load_graph_s, 2),
        "model_load_s": round(model_s, 2),
        "index_build_s": round(build_s, 2),
        "queries_file": str(queries_path),
        "queries": report.n,
        "recall_at_5": round(report.recall, 4),
        "negation_accuracy": round(report.negation_accuracy, 4),
        "false_negation_rate": round(report.false_negation_rate, 4),
        "uncertainty_accuracy": round(report.uncertainty_accuracy, 4),
        "misses": [f["q"] for f in report.failures],
        "query_latency": percentiles(total),
        "dense_modes": by_mode,
        "linking_latency": percentiles(link),
        "query_embedding_latency": percentiles(embed),
        "samples": len(total),
    }


def synthetic_graph(n: int, seed: int) -> tuple[KnowledgeGraph, list[str]]:
    """A graph of ``n`` finding nodes with names from a pseudo-vocabulary and 3 edges each."""
    from knowledge_graph.graph import KnowledgeGraph
    from knowledge_graph.schema import Edge, EdgeType, Node, NodeType, Provenance

    rng = random.Random(seed)
    letters = "abcdefghiklmnoprstuvz"
    vocab = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(5, 11))) for _ in range(3000)})
    prov = Provenance(source="synthetic", version="1")
    names: set[str] = set()
    nodes = [
        Node(
            id=f"anat{i}", type=NodeType.ANATOMY, name=f"anatomy {vocab[i]}", definition="x", provenance=prov
        )
        for i in range(50)
    ]
    while len(names) < n:
        names.add(" ".join(rng.choice(vocab) for _ in range(rng.randint(2, 3))))
    ordered = sorted(names)
    rng.shuffle(ordered)
    for i, name in enumerate(ordered):
        words = name.split()
        nodes.append(
            Node(
                id=f"syn{i}",
                type=NodeType.FINDING,
                name=name,
                definition=f"Synthetic finding {i}.",
                synonyms=(" ".join(reversed(words)),) if " ".join(reversed(words)) not in names else (),
                provenance=prov,
            )
        )
    edges = []
    for i in range(n):
        edges.append(
            Edge(
                source=f"syn{i}", target=f"anat{rng.randrange(50)}", type=EdgeType.LOCATED_IN, provenance=prov
            )
        )
        edges.append(
            Edge(
                source=f"syn{i}",
                target=f"syn{rng.randrange(n)}",
                type=EdgeType.DIFFERENTIAL_OF,
                provenance=prov,
            )
        )
        edges.append(
            Edge(source=f"syn{i}", target=f"syn{rng.randrange(n)}", type=EdgeType.SUGGESTS, provenance=prov)
        )
    # synonyms may still collide across nodes (reversed names); the linker keeps the first owner
    return KnowledgeGraph(nodes, [e for e in edges if e.source != e.target]), ordered


def bench_scale(n: int, repeats: int, seed: int, quantize: bool) -> dict[str, object]:
    """Latency on a synthetic n-node graph with random unit vectors as node embeddings."""
    from knowledge_graph.index import DenseIndex, MiniLMEmbedder
    from knowledge_graph.retriever import Retriever
    from knowledge_graph.schema import RETRIEVABLE_TYPES

    t0 = time.perf_counter()
    graph, names = synthetic_graph(n, seed)
    graph_s = time.perf_counter() - t0
    ids = sorted(x.id for x in graph.nodes(RETRIEVABLE_TYPES))
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(ids), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    t0 = time.perf_counter()
    index = DenseIndex.from_vectors(vectors, ids, "synthetic", "random-unit-vectors")
    index_s = time.perf_counter() - t0
    embedder = MiniLMEmbedder(quantize=quantize)
    t0 = time.perf_counter()
    retriever = Retriever(graph, index, embedder)
    linker_s = time.perf_counter() - t0
    pyrng = random.Random(seed + 1)
    texts = []
    for i in range(100):
        name = pyrng.choice(names)
        style = i % 4
        if style == 0:
            texts.append(f"Is there {name} on this study?")
        elif style == 1:
            texts.append(f"No {name}. Possible {pyrng.choice(names)}.")
        elif style == 2:  # one-letter typo
            j = pyrng.randrange(len(name))
            texts.append(f"findings of {name[:j]}{name[j + 1 :]} in the left lung")
        else:
            texts.append("what does a typical case of this look like on a radiograph")
    for t in texts[:10]:
        retriever.retrieve(t)
    total = []
    for _ in range(repeats):
        for t in texts:
            a = time.perf_counter()
            retriever.retrieve(t, k=5)
            total.append(time.perf_counter() - a)
    return {
        "nodes": len(graph),
        "node_vectors": "random unit vectors (384-d), not MiniLM",
        "graph_build_s": round(graph_s, 2),
        "faiss_index_s": round(index_s, 2),
        "linker_build_s": round(linker_s, 2),
        "aliases": len(retriever.linker.aliases),
        "query_latency": percentiles(total),
        "samples": len(total),
    }


def main() -> int:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes over the query set (default 3)")
    parser.add_argument("--scale-nodes", type=int, default=100_000, help="synthetic graph size; 0 skips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--fp32", action="store_true", help="use the fp32 encoder instead of int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--queries",
        type=Path,
        default=None,
        help="labelled query YAML (default: the tuning set knowledge_graph/eval/queries.yaml)",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    out: dict[str, object] = {
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    out["core"] = bench_core(args.repeats, quantize=not args.fp32, queries_path=args.queries)
    if args.scale_nodes:
        out["scale"] = bench_scale(
            args.scale_nodes, max(1, args.repeats - 1), args.seed, quantize=not args.fp32
        )
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
