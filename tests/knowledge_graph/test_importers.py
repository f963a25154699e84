"""Importers: mapped onto existing nodes, no synonym clashes, provenance recorded."""

from __future__ import annotations

import pytest

from knowledge_graph.graph import KnowledgeGraph, load_graph
from knowledge_graph.importers import IMPORT_FILES, RADLABELS_MAP, import_hpo, import_icd10, import_radlabels
from knowledge_graph.text import alias_key


def test_radlabels_map_targets_exist(graph: KnowledgeGraph) -> None:
    assert [n for n in RADLABELS_MAP.values() if n is not None and n not in graph] == []


def test_radlabels_import_adds_only_unclaimed_synonyms() -> None:
    base = load_graph(exclude=list(IMPORT_FILES.values()))
    result = import_radlabels(base)
    assert result.doc["provenance"]["source"] == "radlabels"
    assert result.added > 100
    owned = {alias_key(f): n.id for n in base.nodes() for f in n.surface_forms()}
    for item in result.doc["enrich"]:
        for s in item["synonyms"]:
            assert alias_key(s) not in owned, s


def test_icd10_codes_are_all_valid(graph: KnowledgeGraph) -> None:
    result = import_icd10(graph)
    assert result.notes == []  # every curated code exists in ICD-10-CM
    assert result.added == sum(1 for n in graph.nodes() if "icd10cm" in n.xrefs)


@pytest.mark.slow
def test_hpo_import_matches_core_findings(graph: KnowledgeGraph) -> None:
    result = import_hpo(graph)  # loads the whole ontology: about 40-80 s
    nodes = {e["node"]: e for e in result.doc["enrich"]}
    assert nodes["pleural_effusion"]["xrefs"]["hpo"] == "HP:0002202"
