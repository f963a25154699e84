"""Typed nodes, edges and provenance of the knowledge graph.

Nodes and edges are pydantic models validated on construction; the graph itself is a
``networkx.MultiDiGraph`` whose node attribute ``node`` holds the :class:`Node` and whose edge
attribute ``edge`` holds the :class:`Edge`. Every edge carries the provenance (source and
version) of the file that declared it.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]*$")


class NodeType(StrEnum):
    """Kinds of node. Findings and diseases are the clinically retrievable ones."""

    FINDING = "finding"
    DISEASE = "disease"
    ANATOMY = "anatomy"
    MODALITY = "modality"
    VIEW = "view"
    IMAGING_SIGN = "imaging_sign"
    TISSUE_PATTERN = "tissue_pattern"
    VISUAL_ATTRIBUTE = "visual_attribute"
    GROUP = "group"


class EdgeType(StrEnum):
    """Kinds of typed, directed edge (source → target)."""

    IS_A = "is_a"
    LOCATED_IN = "located_in"
    SEEN_ON = "seen_on"
    HAS_VISUAL_ATTRIBUTE = "has_visual_attribute"
    SUGGESTS = "suggests"
    DIFFERENTIAL_OF = "differential_of"
    ASSOCIATED_WITH = "associated_with"


class Provenance(BaseModel):
    """Where a statement comes from.

    Attributes:
        source: a short source name (``medvlm-curated``, ``radlabels``, ``hpo``, ``icd10cm``).
        version: the source's version string.
        validated: False for sources whose curation is undocumented.
    """

    model_config = ConfigDict(frozen=True)

    source: str = Field(min_length=1)
    version: str = Field(min_length=1)
    validated: bool = True

    def label(self) -> str:
        """Return ``source@version`` (with ``, unvalidated`` when not validated)."""
        text = f"{self.source}@{self.version}"
        return text if self.validated else f"{text}, unvalidated"


class Node(BaseModel):
    """One concept.

    Attributes:
        id: stable lower-case identifier (``pleural_effusion``).
        type: the node kind.
        name: preferred human-readable name.
        definition: one or two sentences; required by ``kg validate``.
        synonyms: alternative names, lay terms included.
        abbreviations: short forms (``PTX``), matched case-insensitively as whole tokens.
        visual: free-text visual description; the decomposition is in ``has_visual_attribute``
            edges.
        kind: for visual attributes, which axis (shape, density, margin, distribution, ...).
        xrefs: cross-references such as ``{"icd10cm": "J90", "hpo": "HP:0002202"}``.
        provenance: source of the node itself.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    type: NodeType
    name: str = Field(min_length=1)
    definition: str = ""
    synonyms: tuple[str, ...] = ()
    abbreviations: tuple[str, ...] = ()
    visual: str = ""
    kind: str = ""
    xrefs: dict[str, str] = Field(default_factory=dict)
    provenance: Provenance

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"node id {value!r} must be lower-case letters, digits, _ . : -")
        return value

    def surface_forms(self) -> tuple[str, ...]:
        """Return the name, synonyms and abbreviations (the strings entity linking matches)."""
        return (self.name, *self.synonyms, *self.abbreviations)

    def embedding_text(self) -> str:
        """Return the text embedded for dense retrieval: name, synonyms, definition, visual."""
        parts = [self.name]
        if self.synonyms:
            parts.append("(" + ", ".join(self.synonyms[:6]) + ")")
        parts.append(self.definition)
        if self.visual:
            parts.append(self.visual)
        return " ".join(p for p in parts if p)


class Edge(BaseModel):
    """A typed, directed statement ``source --type--> target`` with its provenance."""

    model_config = ConfigDict(frozen=True)

    source: str
    target: str
    type: EdgeType
    provenance: Provenance
    note: str = ""


class KgError(Exception):
    """Raised when knowledge-graph files cannot be read or built into a graph."""


RETRIEVABLE_TYPES: frozenset[NodeType] = frozenset(
    {NodeType.FINDING, NodeType.DISEASE, NodeType.IMAGING_SIGN, NodeType.TISSUE_PATTERN}
)
