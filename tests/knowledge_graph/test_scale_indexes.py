"""Precomputed structures that keep retrieval fast on a large graph, and their equivalence with
the plain computation (behaviour, not timing: the 100k-node timing is benchmarks/bench_kg.py)."""

from __future__ import annotations

import pytest

from knowledge_graph.graph import KnowledgeGraph
from knowledge_graph.index import DenseIndex
from knowledge_graph.retriever import (
    LexicalIndex,
    Retriever,
    build_index,
    compositions_from_graph,
    hypernyms_from_graph,
    locations_from_graph,
    out_edge_table,
    specialisations_from_graph,
)
from knowledge_graph.schema import Node, NodeType, Provenance
from knowledge_graph.text import _lower, stems

QUERIES = [
    "small left effusion with blunting of the costophrenic angle",
    "No pneumothorax. Possible consolidation in the right lower lobe.",
    "findings of pulmonary nodule in the left lung",
    "what does a typical case of this look like on a radiograph",
    "Kidneys: no stones or hydronephrosis.",
    "mitotic figure with lagging chromosomes",
    "the heart is not enlarged; ?subarachnoid blood",
]


def _node(node_id: str, name: str, definition: str) -> Node:
    prov = Provenance(source="test", version="1")
    return Node(id=node_id, type=NodeType.FINDING, name=name, definition=definition, provenance=prov)


def test_score_bounded_scores_exactly_and_bounds_the_rest() -> None:
    nodes = [_node(f"n{i}", f"quorb{i} flint", f"A common finding number {i}.") for i in range(20)]
    nodes.append(_node("rare", "zibble flint", "A rare finding."))
    index = LexicalIndex(nodes, frequent=5)
    assert index.max_weight[stems("flint")[0]] == 1.0
    assert index.max_weight[stems("finding")[0]] == 0.6
    words = stems("zibble finding flint")
    full = index.score(words)
    scored, bound = index.score_bounded(words, extra=["n3"])
    assert set(scored) == {"rare", "n3"}  # the rare word's node and the extra one
    assert all(scored[n] == full[n] for n in scored)  # bit-identical, not approximately
    assert bound > 0
    assert all(full[n] <= bound for n in full if n not in scored)
    # no frequent word: every node sharing a word is scored and there is nothing to bound
    assert index.score_bounded(stems("zibble")) == (index.score(stems("zibble")), 0.0)
    assert LexicalIndex(nodes).score_bounded(words) == (full, 0.0)
    assert index.score_bounded(stems("nothing known")) == ({}, 0.0)


@pytest.mark.parametrize("dense", ["always", "never"])
def test_pruned_lexical_ranking_gives_the_same_results(
    graph: KnowledgeGraph, hashing_embedder: object, dense: str
) -> None:
    index: DenseIndex | None = None
    embedder = None
    if dense == "always":
        embedder = hashing_embedder
        index = build_index(graph, embedder, {})  # type: ignore[arg-type]
    plain = Retriever(graph, index, embedder, dense=dense)  # type: ignore[arg-type]
    pruned = Retriever(graph, index, embedder, dense=dense)  # type: ignore[arg-type]
    pruned.lexical.frequent = 3  # most query words become "frequent" on the packaged graph
    assert plain.lexical.frequent > len(graph)  # the packaged graph never takes the pruned path
    for text in QUERIES:
        for k in (1, 5, 20):
            a = plain.retrieve(text, k=k)
            b = pruned.retrieve(text, k=k)
            assert [(r.node, r.score) for r in a.results] == [(r.node, r.score) for r in b.results]


def test_precomputed_out_edges_build_the_same_linker_tables(graph: KnowledgeGraph) -> None:
    table = out_edge_table(graph)
    assert set(table) == {n.id for n in graph.nodes()}
    assert all(table[n.id] == graph.out_edges(n.id) for n in graph.nodes())
    get = table.__getitem__
    assert compositions_from_graph(graph, get) == compositions_from_graph(graph)
    assert specialisations_from_graph(graph, get) == specialisations_from_graph(graph)
    assert hypernyms_from_graph(graph, get) == hypernyms_from_graph(graph)
    assert locations_from_graph(graph, get) == locations_from_graph(graph)


@pytest.mark.parametrize("text", ["Ground-Glass OPACITY", "İstanbul Σ ΑΣ", "abc", "", "Ünter ß"])
def test_ascii_fast_path_lowers_like_the_character_loop(text: str) -> None:
    loop = "".join(c if len(low := c.lower()) != 1 else low for c in text)
    assert _lower(text) == loop
    assert len(_lower(text)) == len(text)
