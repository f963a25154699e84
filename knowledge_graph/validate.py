"""Checks that ``medvlm kg validate`` runs: one sentence per problem."""

from __future__ import annotations

from collections import defaultdict

import networkx as nx

from knowledge_graph.graph import RawGraph
from knowledge_graph.schema import EdgeType
from knowledge_graph.text import alias_key


def validate_raw(raw: RawGraph) -> list[str]:
    """Find every problem in a raw graph.

    Checks: read problems, duplicate node ids, dangling edges, nodes without a definition,
    cycles in ``is_a``, and one synonym (name, synonym or abbreviation, normalised) claimed
    by two different nodes (compared after
    the spelling and plural folding that entity linking uses).

    Args:
        raw: nodes and edges as read by :func:`knowledge_graph.graph.read_raw`.

    Returns:
        Problems, one sentence each; empty when the graph is valid.
    """
    problems = list(raw.problems)
    ids: dict[str, int] = defaultdict(int)
    for n in raw.nodes:
        ids[n.id] += 1
    problems += [f"Node id '{i}' is defined {c} times." for i, c in sorted(ids.items()) if c > 1]
    for e in raw.edges:
        missing = [x for x in (e.source, e.target) if x not in ids]
        if missing:
            problems.append(
                f"Edge {e.source} -{e.type.value}-> {e.target} ({e.provenance.source}) is dangling: "
                f"no node '{missing[0]}'."
            )
    problems += [f"Node '{n.id}' has no definition." for n in raw.nodes if not n.definition.strip()]
    problems += _is_a_cycles(raw)
    problems += _synonym_clashes(raw)
    return problems


def _is_a_cycles(raw: RawGraph) -> list[str]:
    g = nx.DiGraph()
    g.add_edges_from((e.source, e.target) for e in raw.edges if e.type is EdgeType.IS_A)
    out = []
    for cycle in nx.simple_cycles(g):
        path = " -> ".join([*cycle, cycle[0]])
        out.append(f"The is_a hierarchy has a cycle: {path}.")
    return out


def _synonym_clashes(raw: RawGraph) -> list[str]:
    owners: dict[str, set[str]] = defaultdict(set)
    for n in raw.nodes:
        for form in n.surface_forms():
            key = " ".join(alias_key(form))
            if key:
                owners[key].add(n.id)
    return [
        f"Synonym '{key}' is claimed by {len(nodes)} nodes: {', '.join(sorted(nodes))}."
        for key, nodes in sorted(owners.items())
        if len(nodes) > 1
    ]
