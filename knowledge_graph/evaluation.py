"""Evaluate the retriever on a labelled query set.

Two sets ship in ``knowledge_graph/eval/``: ``queries.yaml`` (120 queries; the linker was tuned
on it, so it is the tuning set and the regression target) and ``queries_heldout.yaml`` (93
queries written after the tuning and evaluated once; see docs/KNOWLEDGE_GRAPH.md).

Metrics:

* **recall@k**: a query is a hit when its gold node is among the top-k results or, for a negated
  query, when the gold node is linked and marked negated (negated findings are never results;
  see :mod:`knowledge_graph.retriever`).
* **negation accuracy**: over negated queries, the share whose gold node is linked and negated.
* **false negation rate**: over the other queries, the share whose gold node is marked negated.
* **uncertainty accuracy** (reported, no target): over uncertain queries, the share whose gold
  node is linked and marked uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from knowledge_graph.retriever import Retrieval, Retriever
from knowledge_graph.schema import KgError

DEFAULT_QUERIES = Path(__file__).resolve().parent / "eval" / "queries.yaml"
"""The tuning set: the linker was adjusted after evaluating it, so its figures are not held out."""
HELDOUT_QUERIES = Path(__file__).resolve().parent / "eval" / "queries_heldout.yaml"
"""The held-out set, written after the tuning and committed before its only evaluation."""


class Query(BaseModel):
    """One labelled query."""

    q: str
    gold: str
    kind: str = "other"
    negated: bool = False
    uncertain: bool = False


@dataclass
class EvalReport:
    """Results of one evaluation run."""

    k: int
    n: int
    recall: float
    negation_accuracy: float
    false_negation_rate: float
    uncertainty_accuracy: float
    recall_by_kind: dict[str, float]
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dict(self.__dict__)


def load_queries(path: Path = DEFAULT_QUERIES) -> list[Query]:
    """Read the query file.

    Raises:
        KgError: if it cannot be read or an entry is malformed.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return [Query(**q) for q in doc["queries"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValidationError) as e:
        raise KgError(f"reading queries {path}: {e}") from e


def is_hit(query: Query, retrieval: Retrieval) -> bool:
    """Whether the gold node was found (see the module docstring)."""
    if query.negated:
        return any(e.node == query.gold and e.negated for e in retrieval.entities)
    return any(r.node == query.gold for r in retrieval.results)


def evaluate(retriever: Retriever, queries: list[Query], k: int = 5) -> EvalReport:
    """Run every query and compute the metrics.

    Args:
        retriever: the retriever under test.
        queries: labelled queries; every gold id must be a graph node.
        k: cut-off for recall.

    Returns:
        The report, with the failing queries listed.

    Raises:
        KgError: if a gold id is not a node of the graph.
    """
    missing = sorted({q.gold for q in queries if q.gold not in retriever.graph})
    if missing:
        raise KgError(f"evaluating: gold node(s) not in the graph: {', '.join(missing)}")
    hits = 0
    by_kind: dict[str, list[int]] = {}
    neg_ok = neg_n = false_neg = pos_n = unc_ok = unc_n = 0
    failures: list[dict[str, Any]] = []
    for q in queries:
        r = retriever.retrieve(q.q, k=k)
        hit = is_hit(q, r)
        hits += hit
        by_kind.setdefault(q.kind, []).append(int(hit))
        gold_mentions = [e for e in r.entities if e.node == q.gold]
        if q.negated:
            neg_n += 1
            neg_ok += any(e.negated for e in gold_mentions)
        else:
            pos_n += 1
            false_neg += any(e.negated for e in gold_mentions)
        if q.uncertain:
            unc_n += 1
            unc_ok += any(e.uncertain for e in gold_mentions)
        if not hit:
            failures.append(
                {
                    "q": q.q,
                    "gold": q.gold,
                    "results": [x.node for x in r.results],
                    "entities": [(e.node, e.negated) for e in r.entities],
                }
            )
    return EvalReport(
        k=k,
        n=len(queries),
        recall=hits / max(len(queries), 1),
        negation_accuracy=neg_ok / max(neg_n, 1),
        false_negation_rate=false_neg / max(pos_n, 1),
        uncertainty_accuracy=unc_ok / max(unc_n, 1),
        recall_by_kind={kd: sum(v) / len(v) for kd, v in sorted(by_kind.items())},
        failures=failures,
    )
