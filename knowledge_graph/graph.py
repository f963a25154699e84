"""Load the human-editable YAML files into a validated, typed networkx graph.

File format (one YAML file per domain under ``knowledge_graph/data/``; imported sources under
``knowledge_graph/data/imported/``)::

    provenance: {source: medvlm-curated, version: "1.0"}
    nodes:
      - id: pleural_effusion
        type: finding
        name: pleural effusion
        definition: Fluid in the pleural space.
        synonyms: [hydrothorax]
        abbreviations: []
        visual: Dependent homogeneous opacity with a meniscus.
        attributes: [density_fluid, sign_meniscus]     # has_visual_attribute
        locations: [pleural_space]                      # located_in
        seen_on: [chest_radiograph]                     # seen_on
        differentials: [pleural_thickening]             # differential_of
        is_a: [pleural_abnormality]                     # is_a
        suggests: []                                    # suggests
        associated: []                                  # associated_with
        icd10: J90                                      # xrefs["icd10cm"]
    enrich:              # imported files only: add synonyms / xrefs to existing nodes
      - {node: pneumothorax, synonyms: [...], xrefs: {hpo: "HP:0002107"}}
    edges:               # optional explicit edges
      - [source_id, is_a, target_id]
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import networkx as nx
import yaml
from pydantic import ValidationError

from knowledge_graph.schema import Edge, EdgeType, KgError, Node, NodeType, Provenance

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"

_FIELD_EDGES: Mapping[str, EdgeType] = MappingProxyType(
    {
        "attributes": EdgeType.HAS_VISUAL_ATTRIBUTE,
        "locations": EdgeType.LOCATED_IN,
        "seen_on": EdgeType.SEEN_ON,
        "differentials": EdgeType.DIFFERENTIAL_OF,
        "is_a": EdgeType.IS_A,
        "suggests": EdgeType.SUGGESTS,
        "associated": EdgeType.ASSOCIATED_WITH,
    }
)
_NODE_FIELDS = frozenset(
    {"id", "type", "name", "definition", "synonyms", "abbreviations", "visual", "kind", "xrefs"}
)


@dataclass
class RawGraph:
    """Nodes and edges as read from files, before validation.

    Attributes:
        nodes: every node read, duplicates included (validation reports them).
        edges: every edge read.
        problems: problems found while reading (bad YAML, unknown fields, invalid values).
        files: the files read, in order.
    """

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def data_files(data_dir: Path = DEFAULT_DATA_DIR, exclude: Iterable[Path] = ()) -> list[Path]:
    """List the YAML files of a data directory: curated files first, then ``imported/``.

    Args:
        data_dir: the directory holding ``*.yaml`` files and an optional ``imported/`` folder.
        exclude: files to leave out (an importer regenerating its own file).

    Returns:
        Sorted paths; imported files come after curated ones so that they can enrich them.
    """
    skip = {p.resolve() for p in exclude}
    curated = sorted(data_dir.glob("*.yaml"))
    imported = sorted((data_dir / "imported").glob("*.yaml"))
    return [p for p in curated + imported if p.resolve() not in skip]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _read_node(entry: dict[str, Any], prov: Provenance, where: str, raw: RawGraph) -> None:
    unknown = set(entry) - _NODE_FIELDS - set(_FIELD_EDGES) - {"icd10"}
    if unknown:
        raw.problems.append(f"{where}: unknown field(s) {sorted(unknown)}.")
    fields = {k: v for k, v in entry.items() if k in _NODE_FIELDS}
    fields["synonyms"] = tuple(_as_list(fields.get("synonyms")))
    fields["abbreviations"] = tuple(_as_list(fields.get("abbreviations")))
    xrefs = dict(fields.get("xrefs") or {})
    if entry.get("icd10"):
        xrefs["icd10cm"] = str(entry["icd10"])
    fields["xrefs"] = {str(k): str(v) for k, v in xrefs.items()}
    try:
        node = Node(provenance=prov, **fields)
    except ValidationError as e:
        first = e.errors()[0]
        raw.problems.append(f"{where}: invalid node ({first['loc']}: {first['msg']}).")
        return
    raw.nodes.append(node)
    for key, etype in _FIELD_EDGES.items():
        for target in _as_list(entry.get(key)):
            raw.edges.append(Edge(source=node.id, target=target, type=etype, provenance=prov))


def _read_file(path: Path, raw: RawGraph) -> list[dict[str, Any]]:
    """Read one file's nodes and edges into ``raw``; return its ``enrich`` entries."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raw.problems.append(f"{path.name}: cannot be read as YAML ({e.__class__.__name__}).")
        return []
    try:
        prov = Provenance(**doc.get("provenance", {}))
    except (ValidationError, TypeError):
        raw.problems.append(f"{path.name}: missing or invalid provenance (source and version).")
        return []
    for i, entry in enumerate(doc.get("nodes") or []):
        where = f"{path.name} node {entry.get('id', i) if isinstance(entry, dict) else i}"
        if not isinstance(entry, dict):
            raw.problems.append(f"{where}: is not a mapping.")
            continue
        _read_node(entry, prov, where, raw)
    for i, triple in enumerate(doc.get("edges") or []):
        try:
            src, etype, dst = triple
            raw.edges.append(Edge(source=src, target=dst, type=EdgeType(etype), provenance=prov))
        except (ValueError, TypeError):
            raw.problems.append(f"{path.name} edge {i}: expected [source, edge_type, target].")
    enrich = doc.get("enrich") or []
    return [dict(e, _prov=prov, _file=path.name) for e in enrich if isinstance(e, dict)]


def _apply_enrichment(raw: RawGraph, entries: Iterable[dict[str, Any]]) -> None:
    index = {n.id: i for i, n in enumerate(raw.nodes)}
    for entry in entries:
        node_id = entry.get("node")
        prov: Provenance = entry["_prov"]
        if node_id not in index:
            raw.problems.append(f"{entry['_file']}: enrichment of unknown node {node_id!r}.")
            continue
        node = raw.nodes[index[node_id]]
        synonyms = list(node.synonyms)
        for s in _as_list(entry.get("synonyms")):
            if s.lower() not in {x.lower() for x in (*synonyms, node.name)}:
                synonyms.append(s)
        xrefs = {**node.xrefs, **{str(k): str(v) for k, v in (entry.get("xrefs") or {}).items()}}
        raw.nodes[index[node_id]] = node.model_copy(update={"synonyms": tuple(synonyms), "xrefs": xrefs})
        for key, etype in _FIELD_EDGES.items():
            for target in _as_list(entry.get(key)):
                raw.edges.append(Edge(source=node_id, target=target, type=etype, provenance=prov))


def read_raw(data_dir: Path = DEFAULT_DATA_DIR, exclude: Iterable[Path] = ()) -> RawGraph:
    """Read every YAML file of ``data_dir`` without validating the graph as a whole.

    Args:
        data_dir: directory of curated ``*.yaml`` files (and ``imported/``).
        exclude: files to leave out.

    Returns:
        The raw nodes, edges and per-file problems.

    Raises:
        KgError: if the directory does not exist or holds no YAML file.
    """
    files = data_files(data_dir, exclude)
    if not files:
        raise KgError(f"reading knowledge graph: no YAML files under {data_dir}")
    raw = RawGraph(files=files)
    enrich: list[dict[str, Any]] = []
    for path in files:
        enrich.extend(_read_file(path, raw))
    _apply_enrichment(raw, enrich)
    return raw


class KnowledgeGraph:
    """A validated typed graph (a thin, read-only wrapper over ``networkx.MultiDiGraph``)."""

    def __init__(self, nodes: Iterable[Node], edges: Iterable[Edge]) -> None:
        """Build the graph.

        Args:
            nodes: unique nodes.
            edges: edges whose endpoints are all in ``nodes``.

        Raises:
            KgError: on a duplicate id or a dangling edge.
        """
        self.g: nx.MultiDiGraph = nx.MultiDiGraph()
        for n in nodes:
            if n.id in self.g:
                raise KgError(f"building graph: duplicate node id {n.id!r}")
            self.g.add_node(n.id, node=n)
        for e in edges:
            if e.source not in self.g or e.target not in self.g:
                raise KgError(f"building graph: dangling edge {e.source} -{e.type}-> {e.target}")
            self.g.add_edge(e.source, e.target, key=f"{e.type.value}|{e.provenance.label()}", edge=e)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.g

    def __len__(self) -> int:
        return int(self.g.number_of_nodes())

    def node(self, node_id: str) -> Node:
        """Return the node with this id.

        Raises:
            KeyError: if there is no such node.
        """
        n: Node = self.g.nodes[node_id]["node"]
        return n

    def nodes(self, types: Iterable[NodeType] | None = None) -> Iterator[Node]:
        """Iterate over nodes, optionally only those of the given types."""
        wanted = set(types) if types is not None else None
        for _, data in self.g.nodes(data=True):
            n: Node = data["node"]
            if wanted is None or n.type in wanted:
                yield n

    def out_edges(self, node_id: str) -> list[Edge]:
        """Return the edges leaving ``node_id``."""
        return [d["edge"] for _, _, d in self.g.out_edges(node_id, data=True)]

    def in_edges(self, node_id: str) -> list[Edge]:
        """Return the edges entering ``node_id``."""
        return [d["edge"] for _, _, d in self.g.in_edges(node_id, data=True)]

    def edges(self) -> Iterator[Edge]:
        """Iterate over every edge."""
        for _, _, d in self.g.edges(data=True):
            yield d["edge"]

    def fingerprint(self) -> str:
        """Return a short hash of every node's embedding text (to tell when an index is stale)."""
        h = hashlib.sha256()
        for n in sorted(self.nodes(), key=lambda n: n.id):
            h.update(n.id.encode())
            h.update(n.embedding_text().encode())
        return h.hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        """Return node counts per type, edge counts per type and provenance sources."""
        node_types: dict[str, int] = {}
        for n in self.nodes():
            node_types[n.type.value] = node_types.get(n.type.value, 0) + 1
        edge_types: dict[str, int] = {}
        sources: dict[str, int] = {}
        for e in self.edges():
            edge_types[e.type.value] = edge_types.get(e.type.value, 0) + 1
            sources[e.provenance.label()] = sources.get(e.provenance.label(), 0) + 1
        return {
            "nodes": len(self),
            "edges": int(self.g.number_of_edges()),
            "node_types": dict(sorted(node_types.items())),
            "edge_types": dict(sorted(edge_types.items())),
            "edge_sources": dict(sorted(sources.items())),
            "synonyms": sum(len(n.synonyms) + len(n.abbreviations) for n in self.nodes()),
        }


def load_graph(data_dir: Path = DEFAULT_DATA_DIR, exclude: Iterable[Path] = ()) -> KnowledgeGraph:
    """Read, validate and build the knowledge graph.

    Args:
        data_dir: directory of YAML files.
        exclude: files to leave out (an importer regenerating its own file).

    Returns:
        The validated graph.

    Raises:
        KgError: listing the validation problems if there are any.
    """
    from knowledge_graph.validate import validate_raw

    raw = read_raw(data_dir, exclude)
    problems = validate_raw(raw)
    if problems:
        shown = " ".join(problems[:5])
        raise KgError(f"loading knowledge graph from {data_dir}: {len(problems)} problem(s): {shown}")
    return KnowledgeGraph(raw.nodes, raw.edges)
