"""Retriever: ranking, negated findings kept out of results, facts, citations, index persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge_graph.graph import KnowledgeGraph
from knowledge_graph.index import DenseIndex
from knowledge_graph.retriever import (
    LexicalIndex,
    Retriever,
    ensure_index,
    index_fingerprint,
    load_lay_descriptions,
)
from knowledge_graph.schema import RETRIEVABLE_TYPES, NodeType
from knowledge_graph.text import stems

from .conftest import HashingEmbedder


@pytest.fixture(scope="module")
def retriever(graph: KnowledgeGraph, hashing_embedder: HashingEmbedder) -> Retriever:
    return Retriever(graph, DenseIndex.build(graph, hashing_embedder), hashing_embedder)


def test_linked_finding_ranks_first_with_its_facts(retriever: Retriever) -> None:
    r = retriever.retrieve("Small left pleural effusion.", k=5)
    assert r.results[0].node == "pleural_effusion"
    assert r.results[0].name == "pleural effusion"
    relations = {f.relation for f in r.results[0].facts}
    assert {"definition", "visual", "has_visual_attribute", "located_in", "differential_of"} <= relations
    assert all(f.source for f in r.facts)
    assert len(r.results) == 5
    scores = [x.score for x in r.results]
    assert scores == sorted(scores, reverse=True)


def test_negated_finding_is_never_a_result(retriever: Retriever) -> None:
    r = retriever.retrieve("No pleural effusion. No pneumothorax.", k=10)
    assert {e.node for e in r.entities if e.negated} == {"pleural_effusion", "pneumothorax"}
    assert not {"pleural_effusion", "pneumothorax"} & {x.node for x in r.results}
    assert not {"pleural_effusion", "pneumothorax"} & {f.node for f in r.facts}
    context = r.as_prompt_context()
    assert "Stated absent in the text (not present): pleural effusion, pneumothorax." in context


def test_mentioned_both_ways_counts_as_present(retriever: Retriever) -> None:
    r = retriever.retrieve("No new effusion. Small pleural effusion persists.", k=5)
    assert r.results[0].node == "pleural_effusion"


def test_expansion_reaches_suggested_disease(retriever: Retriever) -> None:
    r = retriever.retrieve("Kerley B lines", k=5)
    nodes = [x.node for x in r.results]
    assert nodes[0] == "sign_kerley_b"
    assert "pulmonary_edema" in nodes  # sign --suggests--> finding, one hop


def test_results_are_only_retrievable_types(retriever: Retriever) -> None:
    r = retriever.retrieve("right lower lobe of the lung on chest x-ray", k=8)
    assert all(retriever.graph.node(x.node).type in RETRIEVABLE_TYPES for x in r.results)


def test_citations_match_prompt_context(retriever: Retriever) -> None:
    r = retriever.retrieve("cardiomegaly", k=2)
    cites = r.citations()
    assert [c.index for c in cites] == list(range(1, len(r.facts) + 1))
    context = r.as_prompt_context(max_facts=3)
    assert context.startswith("Knowledge-graph facts:\n[1] Cardiomegaly: ")
    assert "[3]" in context and "[4]" not in context


def test_json_shape(retriever: Retriever) -> None:
    d = retriever.retrieve("possible pneumonia, no effusion", k=3).to_dict()
    assert set(d) == {"entities", "results"}
    assert set(d["entities"][0]) == {"text", "node", "name", "negated", "uncertain", "source"}
    assert d["entities"][0]["source"] == "alias"
    assert set(d["results"][0]) == {"node", "name", "score", "facts"}
    assert set(d["results"][0]["facts"][0]) >= {"node", "name", "text", "source"}


def test_empty_text_gives_empty_retrieval(retriever: Retriever) -> None:
    r = retriever.retrieve("   ", k=5)
    assert r.entities == [] and r.results == [] and r.as_prompt_context() == ""


def test_index_roundtrip_and_staleness(
    tmp_path: Path, graph: KnowledgeGraph, hashing_embedder: HashingEmbedder
) -> None:
    built = ensure_index(graph, hashing_embedder, tmp_path)
    loaded = DenseIndex.load(tmp_path)
    fingerprint = index_fingerprint(graph, load_lay_descriptions())
    assert loaded.node_ids == built.node_ids and loaded.fingerprint == fingerprint
    q = hashing_embedder.encode(["pleural effusion"])[0]
    assert built.search(q, 3) == loaded.search(q, 3)
    meta = (tmp_path / "index.json").read_text()
    (tmp_path / "index.json").write_text(meta.replace(fingerprint, "0" * 16))
    rebuilt = ensure_index(graph, hashing_embedder, tmp_path)
    assert rebuilt.fingerprint == fingerprint
    # a changed lay description makes the index stale too
    lay = dict(load_lay_descriptions(), pneumothorax="air around the lung")
    stale = ensure_index(graph, hashing_embedder, tmp_path, lay=lay)
    assert stale.fingerprint == index_fingerprint(graph, lay)


def test_every_finding_and_disease_has_a_lay_description(graph: KnowledgeGraph) -> None:
    lay = load_lay_descriptions(extra=())
    wanted = {n.id for n in graph.nodes([NodeType.FINDING, NodeType.DISEASE])}
    assert set(lay) == wanted
    assert all(len(text.split()) >= 3 for text in lay.values())


def test_every_sign_and_pattern_has_a_descriptive_paraphrase(graph: KnowledgeGraph) -> None:
    from knowledge_graph.retriever import SIGN_DESCRIPTIONS_PATH

    signs = load_lay_descriptions(SIGN_DESCRIPTIONS_PATH, extra=())
    wanted = {n.id for n in graph.nodes([NodeType.IMAGING_SIGN, NodeType.TISSUE_PATTERN])}
    assert set(signs) == wanted
    assert all(len(text.split()) >= 8 for text in signs.values())
    # the default load reads both files, so every sign gets a second dense row
    assert set(load_lay_descriptions()) >= wanted


def test_a_node_described_twice_is_refused(tmp_path: Path) -> None:
    from knowledge_graph.schema import KgError

    (tmp_path / "a.yaml").write_text("pneumothorax: air around the lung\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("pneumothorax: a collapsed lung\n", encoding="utf-8")
    with pytest.raises(KgError, match="described twice"):
        load_lay_descriptions(tmp_path / "a.yaml", extra=(tmp_path / "b.yaml",))


def test_index_has_a_lay_row_per_described_node(
    graph: KnowledgeGraph, hashing_embedder: HashingEmbedder
) -> None:
    from knowledge_graph.retriever import build_index

    lay = {"pneumothorax": "a collapsed lung with air around it"}
    index = build_index(graph, hashing_embedder, lay)
    assert index.node_ids.count("pneumothorax") == 2
    assert len(index.node_ids) == len(list(graph.nodes(RETRIEVABLE_TYPES))) + 1


def test_lay_words_count_in_the_lexical_score(graph: KnowledgeGraph) -> None:
    nodes = [n for n in graph.nodes() if n.type in RETRIEVABLE_TYPES]
    words = stems("zzquokka")
    plain = LexicalIndex(nodes).score(words)
    lay = LexicalIndex(nodes, {"pneumothorax": "zzquokka words"}).score(words)
    assert plain == {} and lay["pneumothorax"] > 0


def test_a_node_with_two_rows_keeps_its_best_cosine(graph: KnowledgeGraph) -> None:
    class TwoRows(DenseIndex):
        def __init__(self) -> None:
            super().__init__(None, ["pneumothorax"], "x", "m")

        def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
            return [("pneumothorax", 0.9), ("pleural_effusion", 0.5), ("pneumothorax", 0.1)]

    class One:
        name, dim = "one", 2

        def encode(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)

    r = Retriever(graph, TwoRows(), One(), lexical=0.0, lay={}).retrieve("zzz qqq", k=2)
    assert [x.node for x in r.results] == ["pneumothorax", "pleural_effusion"]


def test_from_vectors_rejects_mismatched_rows() -> None:
    from knowledge_graph.schema import KgError

    with pytest.raises(KgError):
        DenseIndex.from_vectors(np.zeros((2, 4), dtype=np.float32), ["a"], "f", "m")


def test_minilm_retrieval_meets_eval_targets(graph: KnowledgeGraph, minilm_cache: Path) -> None:
    """The acceptance thresholds of issue 6 on the 120-query tuning set, with the real model.

    The linker was adjusted after evaluating this set, so it is a regression target, not a
    held-out figure; the held-out set is checked in the next test.
    """
    from knowledge_graph.evaluation import evaluate, load_queries

    retriever = Retriever.from_default(minilm_cache)
    report = evaluate(retriever, load_queries(), k=5)
    assert report.n >= 100
    assert report.recall >= 0.95, report.failures
    assert report.negation_accuracy >= 0.95
    assert report.false_negation_rate <= 0.05


def test_heldout_queries_are_new_and_their_gold_nodes_retrievable(graph: KnowledgeGraph) -> None:
    from knowledge_graph.evaluation import HELDOUT_QUERIES, load_queries

    heldout = load_queries(HELDOUT_QUERIES)
    tuning = {q.q.casefold() for q in load_queries()}
    assert len(heldout) >= 60
    assert [q.q for q in heldout if q.q.casefold() in tuning] == []
    assert [q.gold for q in heldout if q.gold not in graph] == []
    assert [q.gold for q in heldout if graph.node(q.gold).type not in RETRIEVABLE_TYPES] == []
    kinds = {q.kind for q in heldout}
    assert {"synonym", "abbreviation", "misspelling", "negated", "uncertain", "lay", "report"} <= kinds


def test_minilm_retrieval_on_the_heldout_set(minilm_cache: Path) -> None:
    """Held-out set, evaluated once on 2026-11-26: recall@5 0.935 (87/93), negation accuracy
    1.000 (10/10), false-negation rate 0.000. The thresholds are those figures minus a margin
    (three recall misses, one negation miss) so that a regression fails; they are not targets
    the linker was tuned to.
    """
    from knowledge_graph.evaluation import HELDOUT_QUERIES, evaluate, load_queries

    retriever = Retriever.from_default(minilm_cache)
    report = evaluate(retriever, load_queries(HELDOUT_QUERIES), k=5)
    assert report.recall >= 0.90, report.failures
    assert report.negation_accuracy >= 0.90
    assert report.false_negation_rate <= 0.05


def test_facts_put_every_definition_first(retriever: Retriever) -> None:
    r = retriever.retrieve("pneumothorax", k=3)
    assert [f.relation for f in r.facts[:3]] == ["definition"] * 3
    assert [f.node for f in r.facts[:3]] == [x.node for x in r.results]
    assert r.facts[3].relation == "visual"
    assert sorted(r.facts, key=id) == sorted([f for x in r.results for f in x.facts], key=id)


def test_statement_from_two_sources_is_cited_once(retriever: Retriever) -> None:
    parents = [f for f in retriever.facts("cardiomegaly") if f.relation == "is_a"]
    assert len(parents) == 1
    assert "medvlm-curated" in parents[0].source and "radlabels" in parents[0].source


def test_dense_modes(graph: KnowledgeGraph, hashing_embedder: HashingEmbedder) -> None:
    class CountingEmbedder(HashingEmbedder):
        calls = 0

        def encode(self, texts: list[str]) -> np.ndarray:
            CountingEmbedder.calls += 1
            return super().encode(texts)

    emb = CountingEmbedder()
    index = DenseIndex.build(graph, hashing_embedder)
    calls_after_build = CountingEmbedder.calls
    fallback = Retriever(graph, index, emb, dense="fallback")
    fallback.retrieve("small pleural effusion")
    assert CountingEmbedder.calls == calls_after_build  # linked: no embedding needed
    fallback.retrieve("what does this look like")
    assert CountingEmbedder.calls == calls_after_build + 1
    never = Retriever(graph, index, emb, dense="never")
    assert never.retrieve("what does this look like").results == []
    with pytest.raises(ValueError):
        Retriever(graph, index, emb, dense="sometimes")  # type: ignore[arg-type]


class _OneNodeIndex(DenseIndex):
    """A dense index whose every search answers one node with a fixed cosine."""

    def __init__(self, base: DenseIndex, node: str, sim: float) -> None:
        super().__init__(base.index, base.node_ids, base.fingerprint, base.model)
        self.node, self.sim = node, sim

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        return [(self.node, self.sim)]


def test_dense_span_linking_in_the_retriever(
    graph: KnowledgeGraph, hashing_embedder: HashingEmbedder
) -> None:
    class CountingEmbedder(HashingEmbedder):
        def __init__(self) -> None:
            self.batches: list[list[str]] = []

        def encode(self, texts: list[str]) -> np.ndarray:
            self.batches.append(list(texts))
            return super().encode(texts)

    base = DenseIndex.build(graph, hashing_embedder)
    index = _OneNodeIndex(base, "subarachnoid_hemorrhage", 0.9)
    emb = CountingEmbedder()
    text = "There is no subarachnoid blood."
    r = Retriever(graph, index, emb, dense="always").retrieve(text, k=5)
    assert [(e.node, e.negated, e.source) for e in r.entities] == [("subarachnoid_hemorrhage", True, "dense")]
    assert "subarachnoid_hemorrhage" not in {x.node for x in r.results}  # negated: never a result
    assert "subarachnoid hemorrhage" in r.as_prompt_context()  # listed as stated absent
    assert emb.batches == [[text, "subarachnoid blood"]]  # query and span embedded in one batch
    assert r.to_dict()["entities"][0]["source"] == "dense"
    never = Retriever(graph, index, emb, dense="never").retrieve(text, k=5)
    assert never.entities == []  # no encoder use: no dense span linking
    low = Retriever(graph, _OneNodeIndex(base, "subarachnoid_hemorrhage", 0.3), emb).retrieve(text, k=5)
    assert low.entities == []


def test_dense_span_links_only_findings_diseases_and_signs(
    graph: KnowledgeGraph, hashing_embedder: HashingEmbedder
) -> None:
    pattern = next(n.id for n in graph.nodes() if n.type is NodeType.TISSUE_PATTERN)
    index = _OneNodeIndex(DenseIndex.build(graph, hashing_embedder), pattern, 0.95)
    r = Retriever(graph, index, hashing_embedder).retrieve("There is no subarachnoid blood.", k=5)
    assert r.entities == []
