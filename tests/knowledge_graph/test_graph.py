"""The packaged graph: valid, big enough, complete per finding, with provenance on every edge."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from knowledge_graph.graph import KnowledgeGraph, read_raw
from knowledge_graph.schema import EdgeType, NodeType
from knowledge_graph.validate import validate_raw

CATALOGUE = Path(__file__).resolve().parents[2] / "data_prep" / "phantoms" / "catalogue.yaml"
# The ids the synthetic-study catalogue was agreed to use (issue 6).
AGREED_IDS = [
    "normal",
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "lung_nodule",
    "lung_mass",
    "consolidation",
    "atelectasis",
    "pulmonary_edema",
    "endotracheal_tube",
    "central_venous_catheter",
    "intracranial_hemorrhage",
    "cerebral_infarct",
    "normal_tissue",
    "tumor",
    "necrosis",
    "inflammation",
    "mitosis",
]


def test_packaged_files_validate_clean() -> None:
    assert validate_raw(read_raw()) == []


def test_at_least_150_findings_and_diseases_fully_described(graph: KnowledgeGraph) -> None:
    clinical = list(graph.nodes([NodeType.FINDING, NodeType.DISEASE]))
    assert len(clinical) >= 150
    incomplete = []
    for n in clinical:
        kinds = {e.type for e in graph.out_edges(n.id)}
        needed = {EdgeType.HAS_VISUAL_ATTRIBUTE, EdgeType.LOCATED_IN, EdgeType.DIFFERENTIAL_OF}
        if not (n.definition and n.synonyms and n.visual and needed <= kinds):
            incomplete.append(n.id)
    assert incomplete == []


def test_findings_cover_every_attribute_axis(graph: KnowledgeGraph) -> None:
    axes = {
        graph.node(e.target).kind
        for n in graph.nodes([NodeType.FINDING])
        for e in graph.out_edges(n.id)
        if e.type is EdgeType.HAS_VISUAL_ATTRIBUTE and graph.node(e.target).type is NodeType.VISUAL_ATTRIBUTE
    }
    assert {"shape", "density", "margin", "distribution"} <= axes


@pytest.mark.parametrize("node_id", AGREED_IDS)
def test_agreed_catalogue_ids_are_findings(graph: KnowledgeGraph, node_id: str) -> None:
    assert graph.node(node_id).type is NodeType.FINDING


def test_every_catalogue_id_is_a_node(graph: KnowledgeGraph) -> None:
    assert CATALOGUE.is_file(), f"{CATALOGUE} is missing: the shared finding ids cannot be checked"
    doc = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    ids = [f["id"] for f in doc["findings"]]
    assert ids, "catalogue lists no findings"
    assert [i for i in ids if i not in graph] == []


def test_every_edge_has_provenance_and_sources_are_recorded(graph: KnowledgeGraph) -> None:
    sources = {e.provenance.source for e in graph.edges()}
    assert all(e.provenance.source and e.provenance.version for e in graph.edges())
    assert "medvlm-curated" in sources
    assert "radlabels" in sources  # imported is_a edges from the radlabels taxonomy


def test_imported_icd10_labels_present(graph: KnowledgeGraph) -> None:
    effusion = graph.node("pleural_effusion")
    assert effusion.xrefs["icd10cm"] == "J90"
    assert "pleural effusion" in effusion.xrefs["icd10cm_label"].lower()
    assert effusion.xrefs["icd10cm_source"].startswith("simple-icd-10-cm@")


def test_stats_counts_match_graph(graph: KnowledgeGraph) -> None:
    stats = graph.stats()
    assert stats["nodes"] == len(graph)
    assert sum(stats["node_types"].values()) == stats["nodes"]
    assert sum(stats["edge_types"].values()) == stats["edges"]
