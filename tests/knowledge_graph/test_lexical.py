"""Derivational stems, derived-form linking and the lexical score of the retriever."""

from __future__ import annotations

import pytest

from knowledge_graph.graph import KnowledgeGraph
from knowledge_graph.linking import EntityLinker
from knowledge_graph.retriever import LexicalIndex, Retriever
from knowledge_graph.schema import Node, NodeType, Provenance
from knowledge_graph.text import stem, stems


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("haemorrhagic", "haemorrhage"),
        ("nodular", "nodules"),
        ("necrotic", "necrosis"),
        ("emphysematous", "emphysema"),
        ("calcified", "calcification"),
        ("dilated", "dilatation"),
        ("bleeding", "bleed"),
        ("metastatic", "metastasis"),
        ("fibroses", "fibrosis"),
    ],
)
def test_derived_forms_share_a_stem(a: str, b: str) -> None:
    assert stems(a) == stems(b)


@pytest.mark.parametrize(("a", "b"), [("lung", "liver"), ("cyst", "cystitis"), ("nodule", "node")])
def test_unrelated_words_keep_distinct_stems(a: str, b: str) -> None:
    assert stem(a) != stem(b)


def _node(node_id: str, name: str, definition: str, synonyms: tuple[str, ...] = ()) -> Node:
    prov = Provenance(source="test", version="1")
    return Node(
        id=node_id,
        type=NodeType.FINDING,
        name=name,
        definition=definition,
        synonyms=synonyms,
        provenance=prov,
    )


def test_derived_form_links_to_its_alias_and_is_flagged() -> None:
    linker = EntityLinker([_node("zz_gliosis", "zorbosis", "Made-up finding for the test.")])
    entities = linker.link("zorbotic change")
    assert [(e.node, e.fuzzy) for e in entities] == [("zz_gliosis", True)]


def test_a_word_already_in_an_alias_is_not_rewritten() -> None:
    nodes = [_node("a", "zorbotic", "First."), _node("b", "zorbosis", "Second.")]
    assert [e.node for e in EntityLinker(nodes).link("zorbotic")] == ["a"]


def test_lexical_score_prefers_the_node_with_more_rare_query_words() -> None:
    index = LexicalIndex(
        [
            _node("plain", "quorb", "A cell in division."),
            _node("odd", "odd quorb", "A cell in division with three poles, tripolar."),
            _node("other", "flint", "Unrelated thing."),
        ]
    )
    scores = index.score(stems("tripolar quorb division"))
    assert scores["odd"] > scores["plain"] > 0
    assert "other" not in scores
    assert all(0 < s <= 1 for s in scores.values())
    assert index.score(stems("nothing known here")) == {}


def test_lexical_score_finds_a_specific_node_the_linker_missed(graph: KnowledgeGraph) -> None:
    on = Retriever(graph, None, None, dense="never")
    off = Retriever(graph, None, None, dense="never", lexical=0.0)
    # words of atypical mitosis's own definition, not an alias; linking alone finds plain mitosis
    text = "mitotic figure with lagging chromosomes"
    ranked_on = [r.node for r in on.retrieve(text, k=20).results]
    ranked_off = [r.node for r in off.retrieve(text, k=20).results]
    assert "atypical_mitosis" in ranked_on
    assert "atypical_mitosis" not in ranked_off


def test_negated_words_give_no_lexical_evidence(graph: KnowledgeGraph) -> None:
    r = Retriever(graph, None, None, dense="never")
    nodes = [x.node for x in r.retrieve("No pleural effusion.").results]
    assert "pleural_effusion" not in nodes
    assert "malignant_pleural_effusion" not in nodes
