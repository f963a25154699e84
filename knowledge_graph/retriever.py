"""Retrieve cited knowledge-graph facts for a question, report or draft answer.

The method follows KG-LLaVA ("LLaVA Needs More Knowledge"): retrieve facts from a curated graph,
not from patient records, and put them in the prompt with citations. Findings are described by
their visual attributes (shape, density, margin, distribution), as in "Enhancing Abnormality
Grounding for VLMs with Knowledge Descriptions".

Ranking of a node (only findings, diseases, imaging signs and tissue patterns are results):

* ``1.0`` if it is linked in the text and asserted (``0.9`` if linked through a spelling
  correction or dense span linking, see :mod:`knowledge_graph.linking`), ``0.95`` for an
  uncertain mention;
* ``0.8 × cosine`` from the dense MiniLM index;
* ``0.5 × parent score`` for 1-hop neighbours of linked nodes along ``suggests``, ``is_a``,
  ``associated_with`` and ``differential_of`` (k-hop expansion; ``hops`` sets k);
* plus ``0.05 × cosine`` as a tie-breaker;
* plus ``0.3 × lexical`` (:class:`LexicalIndex`): the IDF-weighted share of the query's content
  words (derivational stems, so "haemorrhagic" meets "haemorrhage") found in the node's names,
  definition and visual description. It ranks a specific node above its linked parent when the
  query carries the specific node's words ("tripolar mitotic figure"), and finds descriptive
  phrasings that no alias covers, without the encoder.

**Negated mentions** ("no effusion") are never results and never seeds of expansion: a ruled-out
finding must not be presented as present. They are kept in ``Retrieval.entities`` and listed in the
prompt context under "Stated absent in the text", so the model knows what was excluded.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import yaml

from knowledge_graph.graph import DEFAULT_DATA_DIR, KnowledgeGraph, load_graph
from knowledge_graph.index import DenseIndex, Embedder, default_cache_dir
from knowledge_graph.linking import Entity, EntityLinker, SpanLinker, Specialisation
from knowledge_graph.schema import RETRIEVABLE_TYPES, Edge, EdgeType, KgError, Node, NodeType
from knowledge_graph.text import STOPWORDS, alias_key, stem, stems, token_spans

logger = logging.getLogger(__name__)

DenseMode = Literal["always", "fallback", "never"]
LAY_PATH = Path(__file__).resolve().parent / "resources" / "lay_descriptions.yaml"
SIGN_DESCRIPTIONS_PATH = Path(__file__).resolve().parent / "resources" / "sign_descriptions.yaml"
"""Descriptive paraphrases of every imaging sign and tissue pattern, read with the lay texts."""
"""Plain-language description of every finding and disease (``node id: text``)."""
SPAN_TYPES = frozenset({NodeType.FINDING, NodeType.DISEASE, NodeType.IMAGING_SIGN})
"""Node types a dense-linked span may resolve to."""
_EXPAND_EDGES = frozenset(
    {EdgeType.SUGGESTS, EdgeType.IS_A, EdgeType.ASSOCIATED_WITH, EdgeType.DIFFERENTIAL_OF}
)
_RELATION_TEXT = MappingProxyType(
    {
        EdgeType.HAS_VISUAL_ATTRIBUTE: "Visual attributes of {name}: {targets}.",
        EdgeType.LOCATED_IN: "{name} is typically located in: {targets}.",
        EdgeType.SEEN_ON: "{name} is seen on: {targets}.",
        EdgeType.DIFFERENTIAL_OF: "Differential diagnosis of {name}: {targets}.",
        EdgeType.IS_A: "{name} is a kind of: {targets}.",
        EdgeType.SUGGESTS: "{name} suggests: {targets}.",
        EdgeType.ASSOCIATED_WITH: "{name} is associated with: {targets}.",
    }
)


@dataclass(frozen=True)
class Fact:
    """One citable statement about a node.

    Attributes:
        node: the node the fact is about.
        name: that node's preferred name.
        text: the statement, one sentence.
        source: provenance as ``source@version``.
        relation: ``definition``, ``visual``, ``xref`` or an edge type.
    """

    node: str
    name: str
    text: str
    source: str
    relation: str


@dataclass(frozen=True)
class Result:
    """A ranked node with its facts."""

    node: str
    name: str
    score: float
    facts: list[Fact]


@dataclass(frozen=True)
class Citation:
    """A numbered citation for the UI: ``[index] text (source)``, pointing at a node."""

    index: int
    node: str
    name: str
    text: str
    source: str


@dataclass
class Retrieval:
    """What the retriever found for one text.

    Attributes:
        entities: linked mentions, with negation and uncertainty.
        results: ranked nodes (negated mentions excluded), best first.
        facts: the results' facts in citation order (see :func:`order_facts`).
    """

    entities: list[Entity]
    results: list[Result]
    facts: list[Fact] = field(default_factory=list)

    def ruled_out(self) -> list[Entity]:
        """Return the negated mentions, one per node."""
        seen: dict[str, Entity] = {}
        for e in self.entities:
            if e.negated and e.node not in seen:
                seen[e.node] = e
        return list(seen.values())

    def citations(self) -> list[Citation]:
        """Number the facts for citation; the numbers match :meth:`as_prompt_context`."""
        return [Citation(i, f.node, f.name, f.text, f.source) for i, f in enumerate(self.facts, start=1)]

    def as_prompt_context(self, max_facts: int = 12) -> str:
        """Render the facts as a numbered block for a language-model prompt.

        Args:
            max_facts: at most this many facts (the highest ranked).

        Returns:
            Text such as ``"[1] Pleural effusion: Fluid in ... (medvlm-curated@1.0)"``, followed
            by the mentions stated absent; empty when nothing was found.
        """
        lines = [f"[{c.index}] {c.text} ({c.source})" for c in self.citations()[:max_facts]]
        absent = self.ruled_out()
        if absent:
            lines.append(
                "Stated absent in the text (not present): " + ", ".join(e.name for e in absent) + "."
            )
        if not lines:
            return ""
        return "Knowledge-graph facts:\n" + "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape of ``medvlm kg query --json``."""
        return {
            "entities": [
                {
                    "text": e.text,
                    "node": e.node,
                    "name": e.name,
                    "negated": e.negated,
                    "uncertain": e.uncertain,
                    "source": e.source,
                }
                for e in self.entities
            ],
            "results": [
                {
                    "node": r.node,
                    "name": r.name,
                    "score": round(r.score, 4),
                    "facts": [asdict(f) for f in r.facts],
                }
                for r in self.results
            ],
        }


OutEdges = Callable[[str], list[Edge]]
"""``node id → edges leaving it``, in :meth:`KnowledgeGraph.out_edges` order."""


def out_edge_table(graph: KnowledgeGraph) -> dict[str, list[Edge]]:
    """Every node's outgoing edges, as :meth:`KnowledgeGraph.out_edges` gives them."""
    return {n.id: graph.out_edges(n.id) for n in graph.nodes()}


def compositions_from_graph(
    graph: KnowledgeGraph, out_edges: OutEdges | None = None
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Map ``(anatomy, visual attribute)`` to the findings located there with that attribute.

    Only pairs naming at most two findings are kept (a pair that fits many findings says little),
    and only attributes that describe the structure itself (shape, density, margin, texture,
    effect, and "enlarged"): size words and distributions are too often plain modifiers ("small
    vessel disease" is not a small thing in a vessel).

    Args:
        graph: the knowledge graph.
        out_edges: ``graph.out_edges`` or a precomputed equivalent (:func:`out_edge_table`).

    Returns:
        The composition table for :class:`~knowledge_graph.linking.EntityLinker`.
    """
    out_edges = out_edges or graph.out_edges
    table: dict[tuple[str, str], list[str]] = {}
    for n in graph.nodes([NodeType.FINDING]):
        edges = out_edges(n.id)
        places = [e.target for e in edges if e.type is EdgeType.LOCATED_IN]
        attrs = [
            e.target
            for e in edges
            if e.type is EdgeType.HAS_VISUAL_ATTRIBUTE and _composable(graph.node(e.target))
        ]
        for a in places:
            for v in attrs:
                table.setdefault((a, v), []).append(n.id)
    return {k: tuple(v) for k, v in table.items() if len(v) <= 2}


def linker_from_graph(graph: KnowledgeGraph) -> EntityLinker:
    """The entity linker of a graph, with its compositions, specialisations and hypernyms."""
    out_edges = out_edge_table(graph).__getitem__  # each node's edges read once, not four times
    return EntityLinker(
        graph.nodes(),
        compositions=compositions_from_graph(graph, out_edges),
        specialisations=specialisations_from_graph(graph, out_edges),
        hypernyms=hypernyms_from_graph(graph, out_edges),
        locations=locations_from_graph(graph, out_edges),
    )


def hypernyms_from_graph(
    graph: KnowledgeGraph, out_edges: OutEdges | None = None
) -> dict[str, frozenset[str]]:
    """Map every node to its is_a ancestors (transitively); ``out_edges`` as in
    :func:`compositions_from_graph`."""
    out_edges = out_edges or graph.out_edges
    parents: dict[str, list[str]] = {}
    for n in graph.nodes():
        parents[n.id] = [e.target for e in out_edges(n.id) if e.type is EdgeType.IS_A]
    return {n_id: frozenset(_reachable(parents[n_id], parents)) for n_id in parents}


def _reachable(start: Iterable[str], up: Mapping[str, Sequence[str]]) -> set[str]:
    """Every node reachable from ``start`` by following ``up`` (``start`` itself included)."""
    seen: set[str] = set()
    stack = list(start)
    while stack:
        p = stack.pop()
        if p not in seen:
            seen.add(p)
            stack.extend(up.get(p, ()))
    return seen


def locations_from_graph(
    graph: KnowledgeGraph, out_edges: OutEdges | None = None
) -> dict[str, frozenset[str]]:
    """Map each finding and disease to the anatomy it is located in, with their kinds;
    ``out_edges`` as in :func:`compositions_from_graph`."""
    out_edges = out_edges or graph.out_edges
    parts = _anatomy_parts(graph)
    out: dict[str, frozenset[str]] = {}
    for n in graph.nodes([NodeType.FINDING, NodeType.DISEASE]):
        places = [e.target for e in out_edges(n.id) if e.type is EdgeType.LOCATED_IN]
        out[n.id] = frozenset(a for p in places for a in parts.get(p, {p}))
    return out


def _anatomy_parts(graph: KnowledgeGraph) -> dict[str, set[str]]:
    """Map each anatomy to itself and its kinds (is_a, transitively: lung → right lung, left
    lung). Not to what it contains (located_in): the mediastinum holds the aorta and the thyroid
    lies beside it, but a finding of the mediastinum is not specific to either."""
    up: dict[str, list[str]] = {}
    anatomy = [n.id for n in graph.nodes([NodeType.ANATOMY])]
    for a in anatomy:
        up[a] = [
            e.target
            for e in graph.out_edges(a)
            if e.type is EdgeType.IS_A and graph.node(e.target).type is NodeType.ANATOMY
        ]
    parts: dict[str, set[str]] = {a: {a} for a in anatomy}
    for a in anatomy:
        for p in _reachable(up[a], up):
            parts[p].add(a)
    return parts


# Words too vague to name a finding on their own, even beside an anatomy ("lung disease").
_VAGUE_STEMS = frozenset(
    stem(w)
    for w in (
        "disease",
        "abnormal",
        "abnormality",
        "change",
        "changes",
        "clear",
        "normal",
        "benign",
        "area",
        "between",
        "within",
        "process",
        "problem",
        "condition",
        "finding",
        "appearance",
        "big",
        "large",
        "small",
        "whole",
        "entire",
        "complete",
        "chronic",
        "acute",
        "old",
    )
)


def specialisations_from_graph(
    graph: KnowledgeGraph, out_edges: OutEdges | None = None
) -> dict[str, tuple[Specialisation, ...]]:
    """Map each anatomy to the findings and diseases the graph locates in it (or around it).

    For every finding or disease with ``located_in`` edges, each alias (name or synonym) is
    split into its anatomy words (any word of an anatomy node's names, compared by derivational
    stem: "adrenal", "renal", "osseous", "aortic") and the rest ("nodule", "stone",
    "metastasis"). A rest of one to three content words, not all of them vague ("disease",
    "abnormal", "large") or one-word visual-attribute aliases ("enlarged", "lobulated"), makes
    a :class:`~knowledge_graph.linking.Specialisation` of the node's locations and of their
    kinds (a node located in the lung is also specific to the right lung), but not of what they
    contain (an aneurysm located in the abdomen is not specific to the
    adrenal gland).

    Args:
        graph: the knowledge graph.
        out_edges: as in :func:`compositions_from_graph`.

    Returns:
        The table for :class:`~knowledge_graph.linking.EntityLinker`.
    """
    out_edges = out_edges or graph.out_edges
    anatomy_words: set[str] = set()
    attribute_tokens: set[str] = set()
    for n in graph.nodes([NodeType.ANATOMY]):
        for form in (n.name, *n.synonyms):
            anatomy_words.update(stem(t) for t in alias_key(form))
    for n in graph.nodes([NodeType.VISUAL_ATTRIBUTE]):
        for form in (n.name, *n.synonyms):
            if len(alias_key(form)) == 1:  # single words ("patchy", "enlarged"), not "mass effect"
                attribute_tokens.update(alias_key(form))
    parts = _anatomy_parts(graph)
    table: dict[str, dict[tuple[tuple[str, ...], str], set[str]]] = {}
    for n in graph.nodes([NodeType.FINDING, NodeType.DISEASE]):
        places = [e.target for e in out_edges(n.id) if e.type is EdgeType.LOCATED_IN]
        if not places:
            continue
        for form in (n.name, *n.synonyms):
            tokens = [t for t in alias_key(form) if t not in STOPWORDS]
            words = [stem(t) for t in tokens]
            rest_tokens = [t for t, w in zip(tokens, words, strict=True) if w not in anatomy_words]
            rest = tuple(stem(t) for t in rest_tokens)
            if not rest or len(rest) == len(words) or len(rest) > 3:
                continue  # no anatomy word in the alias: nothing anatomy-specific about it
            pairs = zip(rest_tokens, rest, strict=True)
            if all(w in _VAGUE_STEMS or t in attribute_tokens for t, w in pairs):
                continue  # only vague or attribute words ("patchy", "enlarged"): compositions do those
            for place in places:
                for a in parts.get(place, {place}):
                    table.setdefault(a, {}).setdefault((rest, n.id), set()).update(words)
    return {
        a: tuple(Specialisation(rest, node, frozenset(w)) for (rest, node), w in sorted(entries.items()))
        for a, entries in table.items()
    }


_COMPOSABLE_KINDS = frozenset({"shape", "density", "margin", "texture", "effect"})


def _composable(attribute: Node) -> bool:
    is_attr = attribute.type is NodeType.VISUAL_ATTRIBUTE
    return is_attr and (attribute.kind in _COMPOSABLE_KINDS or attribute.id == "shape_enlarged")


_ALIAS_FIELD_WEIGHT = 1.0
_TEXT_FIELD_WEIGHT = 0.6
FREQUENT_POSTINGS = 1000
"""A query stem in more nodes than this is not scored node by node when the top results are
already out of its reach (:meth:`LexicalIndex.score_bounded`); the packaged graph has no such stem."""


class LexicalIndex:
    """IDF-weighted bag-of-stems match of a query against each node's own text.

    A node's words are the stems (:func:`knowledge_graph.text.stems`) of its name, synonyms and
    longer abbreviations (weight 1.0) and of its definition, visual description and plain-language
    description (weight 0.6).
    The score of a node is the sum of ``idf × weight`` over the query stems it contains, divided by
    the sum of ``idf`` over the query stems any node contains, so it lies in ``[0, 1]``.
    """

    def __init__(
        self, nodes: Iterable[Node], lay: Mapping[str, str] | None = None, frequent: int = FREQUENT_POSTINGS
    ) -> None:
        """Index nodes (normally the retrievable ones).

        Args:
            nodes: the nodes.
            lay: plain-language descriptions by node id (:func:`load_lay_descriptions`); their
                words count like the definition's.
            frequent: a stem in more nodes than this is *frequent* for :meth:`score_bounded`.
        """
        lay = lay or {}
        self.frequent = frequent
        self.postings: dict[str, dict[str, float]] = {}
        count = 0
        for n in nodes:
            count += 1
            weights: dict[str, float] = {}
            long_abbrevs = [a for a in n.abbreviations if len(a) > 3]
            for text in (n.name, *n.synonyms, *long_abbrevs):
                for t in stems(text):
                    weights[t] = _ALIAS_FIELD_WEIGHT
            for text in (n.definition, n.visual or "", lay.get(n.id, "")):
                for t in stems(text):
                    weights.setdefault(t, _TEXT_FIELD_WEIGHT)
            for t, w in weights.items():
                self.postings.setdefault(t, {})[n.id] = w
        self.idf = {t: math.log(1.0 + count / len(p)) for t, p in self.postings.items()}
        # the highest field weight of each stem, for the bound of :meth:`score_bounded`
        self.max_weight = {t: max(p.values()) for t, p in self.postings.items()}

    def _known(self, words: Iterable[str]) -> tuple[list[str], float]:
        """The query stems any node contains (duplicates once) and the sum of their idf."""
        known = [t for t in set(words) if t in self.idf]
        return known, sum(self.idf[t] for t in known)

    def score(self, words: Iterable[str]) -> dict[str, float]:
        """Score nodes against query stems.

        Args:
            words: the query's stems (duplicates count once).

        Returns:
            ``node id → score`` in ``(0, 1]`` for nodes sharing at least one stem.
        """
        known, total = self._known(words)
        return self._score_all(known, total)

    def score_bounded(
        self, words: Iterable[str], extra: Iterable[str] = ()
    ) -> tuple[dict[str, float], float]:
        """Score only the nodes that can rank high, with a bound on every other node's score.

        On a large graph a word such as "finding" is in the text of most nodes, and scoring all of
        them costs more than the rest of the query. The stems in more than :attr:`frequent` nodes
        are *frequent*; the nodes scored are those that share a rarer stem with the query, plus
        ``extra`` (nodes scored by other means). Any other node contains only frequent stems, so
        its score is at most the returned bound. Each returned score is exactly
        :meth:`score`'s for that node (same terms, summed in the same order).

        Args:
            words: the query's stems (duplicates count once).
            extra: nodes to score whatever their stems.

        Returns:
            ``(scores, bound)``: ``node id → score`` for the scored nodes sharing at least one stem
            with the query, and an upper bound on the score of every node not in ``scores``
            (0.0 when every node sharing a stem was scored).
        """
        known, total = self._known(words)
        if total <= 0:
            return {}, 0.0
        frequent = [t for t in known if len(self.postings[t]) > self.frequent]
        if not frequent:
            return self._score_all(known, total), 0.0
        nodes = set(extra)
        for t in known:
            if len(self.postings[t]) <= self.frequent:
                nodes.update(self.postings[t])
        out: dict[str, float] = {}
        for node in nodes:
            value: float | None = None
            for t in known:
                w = self.postings[t].get(node)
                if w is not None:
                    value = (0.0 if value is None else value) + self.idf[t] * w / total
            if value is not None:
                out[node] = value
        bound = sum(self.idf[t] * self.max_weight[t] / total for t in frequent)
        return out, bound * (1.0 + 1e-9)

    def _score_all(self, known: list[str], total: float) -> dict[str, float]:
        out: dict[str, float] = {}
        if total <= 0:
            return out
        for t in known:
            idf = self.idf[t]
            for node, w in self.postings[t].items():
                out[node] = out.get(node, 0.0) + idf * w / total
        return out


class Retriever:
    """Entity linking + dense search + k-hop expansion over the knowledge graph."""

    def __init__(
        self,
        graph: KnowledgeGraph,
        index: DenseIndex | None,
        embedder: Embedder | None,
        hops: int = 1,
        dense: DenseMode = "always",
        lexical: float = 0.3,
        lay: Mapping[str, str] | None = None,
    ) -> None:
        """Assemble a retriever from its parts.

        Args:
            graph: the knowledge graph.
            index: dense index of node texts, or None for linking and expansion only.
            embedder: embeds queries (the one that built ``index``); None disables dense search.
            hops: expansion depth from linked nodes.
            dense: ``always`` embeds every query; ``fallback`` only when linking found no
                asserted finding, disease, sign or pattern (saves the encoder's ~10-20 ms on
                CPU for most report text); ``never`` disables dense search.
            lexical: weight of the :class:`LexicalIndex` score (0 disables it).
            lay: plain-language descriptions for the lexical score; the packaged ones when None.
        """
        if dense not in ("always", "fallback", "never"):
            raise ValueError(f"dense must be always, fallback or never, not {dense!r}")
        self.graph = graph
        self.index = index
        self.embedder = embedder
        self.hops = hops
        self.dense = dense
        self.linker = linker_from_graph(graph)
        self.lexical_weight = lexical
        lay = load_lay_descriptions() if lay is None else lay
        self.lexical = LexicalIndex((n for n in graph.nodes() if n.type in RETRIEVABLE_TYPES), lay)

    @classmethod
    def from_default(
        cls,
        cache_dir: Path | None = None,
        data_dir: Path = DEFAULT_DATA_DIR,
        embedder: Embedder | None = None,
        dense: DenseMode = "always",
    ) -> Retriever:
        """Load the packaged graph and the dense index, building the index if missing or stale.

        Args:
            cache_dir: where the index lives; ``$MEDVLM_HOME/kg`` (or ``~/.cache/medvlm/kg``)
                when None.
            data_dir: the graph's YAML directory.
            embedder: query/node embedder; MiniLM when None.
            dense: when to run dense search (see :class:`Retriever`).

        Returns:
            A ready retriever.

        Raises:
            KgError: if the graph is invalid or the index cannot be built or read.
        """
        from knowledge_graph.index import MiniLMEmbedder

        cache = cache_dir or default_cache_dir()
        graph = load_graph(data_dir)
        emb = embedder or MiniLMEmbedder()
        index = ensure_index(graph, emb, cache)
        return cls(graph, index, emb, dense=dense)

    def retrieve(self, text: str, k: int = 5) -> Retrieval:
        """Link, search, expand and rank.

        Args:
            text: question, report text or a draft answer.
            k: number of result nodes.

        Returns:
            The retrieval: entities (all mentions), top-``k`` results with facts.
        """
        query_vec: list[np.ndarray] = []
        span_linker = None
        if self.dense != "never" and self.index is not None and self.embedder is not None and text.strip():
            span_linker = self._span_linker(text, query_vec)
        entities = self.linker.link(text, span_linker)
        negated = {e.node for e in entities if e.negated}
        asserted = {e.node for e in entities if not e.negated}
        negated -= asserted  # mentioned both ways ("no new effusion; small effusion"): keep it
        scores: dict[str, float] = {}
        dense: dict[str, float] = {}
        for e in entities:
            if e.negated or self.graph.node(e.node).type not in RETRIEVABLE_TYPES:
                continue
            s = 0.9 if e.fuzzy else 0.95 if e.uncertain else 1.0
            scores[e.node] = max(scores.get(e.node, 0.0), s)
        use_dense = self.dense == "always" or (self.dense == "fallback" and not scores)
        if use_dense and self.index is not None and self.embedder is not None and text.strip():
            q = query_vec[0] if query_vec else self.embedder.encode([text])[0]
            # a node can have two rows (its text and its plain-language description): keep the best
            for node, sim in self.index.search(q, max(8 * k, 40)):
                dense[node] = max(dense.get(node, 0.0), sim, 0.0)
        self._expand(scores, negated)
        final = {n: s for n, s in scores.items()}
        for n, sim in dense.items():
            final[n] = max(final.get(n, 0.0), 0.8 * sim)
        for n in final:
            final[n] += 0.05 * dense.get(n, 0.0)
        ranked = self._rank(final, negated, _unnegated_stems(text, entities), k)
        results = [Result(n, self.graph.node(n).name, s, self.facts(n)) for n, s in ranked]
        return Retrieval(entities, results, order_facts(results))

    def _rank(
        self, base: dict[str, float], negated: set[str], words: list[str], k: int
    ) -> list[tuple[str, float]]:
        """Add the lexical score to ``base`` and return the top ``k`` nodes, best first.

        Only the nodes :meth:`LexicalIndex.score_bounded` scores are ranked when the k-th of them
        beats the bound on all others (a frequent query word on a large graph); otherwise every
        node sharing a word with the query is scored. Either way the result is the same.
        """

        def top(final: dict[str, float]) -> list[tuple[str, float]]:
            kept = ((n, s) for n, s in final.items() if n not in negated and n in self.graph)
            if k <= 0:
                return sorted(kept, key=lambda x: (-x[1], x[0]))[:k]
            return heapq.nsmallest(k, kept, key=lambda x: (-x[1], x[0]))

        if self.lexical_weight <= 0:
            return top(base)
        lex, bound = self.lexical.score_bounded(words, base)
        final = dict(base)
        for n, v in lex.items():
            final[n] = final.get(n, 0.0) + self.lexical_weight * v
        ranked = top(final)
        if bound <= 0 or (len(ranked) == k and k > 0 and ranked[-1][1] > self.lexical_weight * bound):
            return ranked
        final = dict(base)
        for n, v in self.lexical.score(words).items():
            final[n] = final.get(n, 0.0) + self.lexical_weight * v
        return top(final)

    def _span_linker(self, text: str, query_vec: list[np.ndarray]) -> SpanLinker:
        """A span linker over the dense index; embeds the query text in the same batch.

        The query's own vector is kept in ``query_vec`` (when ``dense="always"``) so that dense
        search does not run the encoder a second time.
        """
        index, embedder = self.index, self.embedder
        assert index is not None and embedder is not None

        def link_spans(phrases: list[str]) -> list[tuple[str, float] | None]:
            batch = [text, *phrases] if self.dense == "always" else phrases
            vecs = embedder.encode(batch)
            if self.dense == "always":
                query_vec.append(vecs[0])
                vecs = vecs[1:]
            out: list[tuple[str, float] | None] = []
            for v in vecs:
                hits = [(n, s) for n, s in index.search(v, 10) if self.graph.node(n).type in SPAN_TYPES]
                out.append(hits[0] if hits else None)
            return out

        return link_spans

    def _expand(self, scores: dict[str, float], negated: set[str]) -> None:
        frontier = dict(scores)
        for _ in range(self.hops):
            nxt: dict[str, float] = {}
            for node, s in frontier.items():
                for e in self.graph.out_edges(node):
                    t = e.target
                    retrievable = self.graph.node(t).type in RETRIEVABLE_TYPES
                    if e.type in _EXPAND_EDGES and t not in negated and retrievable:
                        nxt[t] = max(nxt.get(t, 0.0), 0.5 * s)
            for t, s in nxt.items():
                scores[t] = max(scores.get(t, 0.0), s)
            frontier = nxt

    def facts(self, node_id: str) -> list[Fact]:
        """Return the citable facts about one node: definition, appearance, edges, codes.

        Args:
            node_id: a node id.

        Returns:
            Facts, definition first.
        """
        n = self.graph.node(node_id)
        src = n.provenance.label()
        name = _cap(n.name)
        out = [Fact(n.id, n.name, f"{name}: {n.definition}", src, "definition")]
        if n.visual:
            out.append(Fact(n.id, n.name, f"Appearance of {n.name}: {n.visual}", src, "visual"))
        # one fact per (edge type, set of sources): a statement made by two sources is cited once
        sources: dict[tuple[EdgeType, str], set[str]] = {}
        for e in self.graph.out_edges(node_id):
            sources.setdefault((e.type, e.target), set()).add(e.provenance.label())
        grouped: dict[tuple[EdgeType, str], list[str]] = {}
        for (etype, target), labels in sources.items():
            grouped.setdefault((etype, "; ".join(sorted(labels))), []).append(self._label(target))
        for (etype, source), targets in sorted(grouped.items(), key=lambda x: list(EdgeType).index(x[0][0])):
            text = _RELATION_TEXT[etype].format(name=name, targets="; ".join(targets))
            out.append(Fact(n.id, n.name, text, source, etype.value))
        signs = [
            self.graph.node(e.source).name
            for e in self.graph.in_edges(node_id)
            if e.type is EdgeType.SUGGESTS and self.graph.node(e.source).type is NodeType.IMAGING_SIGN
        ]
        if signs:
            out.append(
                Fact(n.id, n.name, f"Signs suggesting {n.name}: {'; '.join(signs)}.", src, "suggested_by")
            )
        out.extend(self._xref_facts(n))
        return out

    def _label(self, node_id: str) -> str:
        t = self.graph.node(node_id)
        return f"{t.name} ({t.kind})" if t.kind else t.name

    @staticmethod
    def _xref_facts(n: Node) -> Iterable[Fact]:
        # xrefs: {"icd10cm": "J90", "icd10cm_label": "...", "icd10cm_source": "simple-icd-10-cm@1.5.0"}
        for system, code in sorted(n.xrefs.items()):
            if system.endswith(("_label", "_source")):
                continue
            desc = n.xrefs.get(f"{system}_label", "")
            source = n.xrefs.get(f"{system}_source", n.provenance.label())
            text = f"{_cap(n.name)} cross-reference {system.upper()} {code}" + (
                f" ({desc})." if desc else "."
            )
            yield Fact(n.id, n.name, text, source, "xref")


# Prompt budgets are small: what each result is and looks like comes before the rest of its facts.
_FACT_TIER = MappingProxyType(
    {
        "definition": 0,
        "visual": 1,
        EdgeType.HAS_VISUAL_ATTRIBUTE.value: 2,
        EdgeType.LOCATED_IN.value: 2,
        EdgeType.DIFFERENTIAL_OF.value: 3,
        EdgeType.SUGGESTS.value: 3,
        "suggested_by": 3,
    }
)


def order_facts(results: list[Result]) -> list[Fact]:
    """Order the results' facts by tier, then by result rank.

    Tiers: definitions; appearances; visual attributes and locations; differentials and
    suggestions; everything else (parents, modalities, associations, cross-references). A prompt
    cut to its first facts then covers every result's definition and appearance first.

    Args:
        results: ranked results.

    Returns:
        All their facts, each once, in citation order.
    """
    keyed = [
        (_FACT_TIER.get(f.relation, 4), rank, i, f)
        for rank, r in enumerate(results)
        for i, f in enumerate(r.facts)
    ]
    return [f for *_, f in sorted(keyed, key=lambda x: x[:3])]


def _unnegated_stems(text: str, entities: list[Entity]) -> list[str]:
    """Stems of the text outside negated mentions ("no effusion" is no evidence of effusion)."""
    cut = [(e.start, e.end) for e in entities if e.negated]
    kept = [t for t, s, e in token_spans(text) if not any(a <= s and e <= b for a, b in cut)]
    return stems(" ".join(kept))


def load_lay_descriptions(
    path: Path = LAY_PATH, extra: tuple[Path, ...] = (SIGN_DESCRIPTIONS_PATH,)
) -> dict[str, str]:
    """Read the plain-language descriptions (``node id: text``) and the descriptive paraphrases
    of imaging signs and tissue patterns (``extra``); both become second dense rows.

    Raises:
        KgError: if a file cannot be read, is not a mapping of strings, or two files describe
            one node.
    """
    out: dict[str, str] = {}
    for p in (path, *extra):
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KgError(f"reading lay descriptions {p.name}: {e}") from e
        pairs = doc.items() if isinstance(doc, dict) else []
        if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in pairs):
            raise KgError(f"reading lay descriptions {p.name}: expected 'node id: text' lines")
        if clash := sorted(set(out) & set(doc)):
            raise KgError(f"reading lay descriptions {p.name}: {clash[0]} is described twice")
        out.update(doc)
    return out


def index_fingerprint(graph: KnowledgeGraph, lay: Mapping[str, str]) -> str:
    """Fingerprint of what the dense index embeds: the graph's node texts and the lay texts."""
    h = hashlib.sha256(graph.fingerprint().encode())
    for node, text in sorted(lay.items()):
        h.update(f"\n{node}\t{text}".encode())
    return h.hexdigest()[:16]


def build_index(graph: KnowledgeGraph, embedder: Embedder, lay: Mapping[str, str]) -> DenseIndex:
    """Embed every retrievable node's text, plus a second row per node with a lay description.

    The second row lets a plain-language question ("a bulge in the big artery in my belly") meet
    the node it describes even when it shares few words with the node's technical text.
    """
    nodes = sorted(graph.nodes(RETRIEVABLE_TYPES), key=lambda n: n.id)
    ids = [n.id for n in nodes]
    texts = [n.embedding_text() for n in nodes]
    lay_ids = [n.id for n in nodes if lay.get(n.id)]
    vectors = embedder.encode(texts + [f"{graph.node(i).name}: {lay[i]}" for i in lay_ids])
    return DenseIndex.from_vectors(vectors, ids + lay_ids, index_fingerprint(graph, lay), embedder.name)


def ensure_index(
    graph: KnowledgeGraph,
    embedder: Embedder,
    cache_dir: Path,
    rebuild: bool = False,
    lay: Mapping[str, str] | None = None,
) -> DenseIndex:
    """Load the dense index from ``cache_dir``, building and saving it if missing or stale.

    Args:
        graph: the knowledge graph.
        embedder: the embedder (its name must match the saved index).
        cache_dir: index directory.
        rebuild: build even when a current index exists.
        lay: plain-language descriptions (:func:`load_lay_descriptions` when None).

    Returns:
        The index.

    Raises:
        KgError: if it cannot be built, written or read.
    """
    lay = load_lay_descriptions() if lay is None else lay
    fingerprint = index_fingerprint(graph, lay)
    if not rebuild and (cache_dir / "index.json").exists():
        index = DenseIndex.load(cache_dir)
        if index.fingerprint == fingerprint and index.model == embedder.name:
            return index
        logger.info("dense index in %s is stale; rebuilding", cache_dir)
    index = build_index(graph, embedder, lay)
    index.save(cache_dir)
    return index


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
