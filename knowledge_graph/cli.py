"""Subcommands owned by ``knowledge_graph``: ``medvlm kg validate|stats|build|query|eval|import``.

Cheap to import: the graph, torch and faiss are imported inside the handlers.
Exit codes: 0 success, 1 a failed input or check, 2 a usage error. Results go to stdout; every
error goes to stderr as one sentence.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_DATA_HELP = "graph YAML directory (default: the packaged knowledge_graph/data)"
DENSE_MODES = ("always", "fallback", "never")


def register(sub: Any) -> None:
    """Add ``kg`` and its subcommands to the top-level subparsers.

    Args:
        sub: the object returned by ``ArgumentParser.add_subparsers``.
    """
    kg = sub.add_parser("kg", help="knowledge graph: validate, build the index, query, evaluate, import")
    kg.set_defaults(func=lambda args: _usage(kg))
    kgs = kg.add_subparsers(dest="kg_command", metavar="KG_COMMAND")

    p = kgs.add_parser("validate", help="check the graph files; one sentence per problem")
    p.add_argument("--data", type=Path, default=None, help=_DATA_HELP)
    p.set_defaults(func=_validate)

    p = kgs.add_parser("stats", help="node and edge counts by type and source")
    p.add_argument("--data", type=Path, default=None, help=_DATA_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_stats)

    p = kgs.add_parser("build", help="embed node texts and write the faiss index")
    p.add_argument("--out", type=Path, default=None, help="index directory (default: $MEDVLM_HOME/kg)")
    p.add_argument("--data", type=Path, default=None, help=_DATA_HELP)
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the index is current")
    p.set_defaults(func=_build)

    p = kgs.add_parser("query", help="link entities and retrieve the top-k facts for a text")
    p.add_argument("text", help="question, report text or draft answer")
    p.add_argument("--k", type=int, default=5, help="number of result nodes (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--cache", type=Path, default=None, help="index directory (default: $MEDVLM_HOME/kg)")
    p.add_argument("--dense", choices=DENSE_MODES, default="always", help="when to embed the query")
    p.set_defaults(func=_query)

    p = kgs.add_parser("eval", help="recall@k and negation accuracy on the labelled query set")
    p.add_argument("--queries", type=Path, default=None, help="query YAML (default: the packaged set)")
    p.add_argument("--k", type=int, default=5, help="recall cut-off (default 5)")
    p.add_argument("--cache", type=Path, default=None, help="index directory (default: $MEDVLM_HOME/kg)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--check", action="store_true", help="exit 1 below the targets (recall and negation 0.95)")
    p.add_argument("--dense", choices=DENSE_MODES, default="always", help="when to embed the query")
    p.set_defaults(func=_eval)

    p = kgs.add_parser("import", help="import an openly licensed source into data/imported/")
    p.add_argument("source", choices=["radlabels", "icd10", "hpo"], help="which source")
    p.add_argument("--out", type=Path, default=None, help="output YAML (default: data/imported/SOURCE.yaml)")
    p.set_defaults(func=_import)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _fail(message: object, code: int = 1) -> int:
    """Write one error line to stderr and return ``code``."""
    print(f"kg: {message}", file=sys.stderr)
    return code


def _not_a_folder(path: Path | None, flag: str) -> str | None:
    """A usage-error sentence when ``path`` exists but is not a folder, else None."""
    if path is not None and path.exists() and not path.is_dir():
        return f"{flag} {path} is a file, not a folder"
    return None


def _data_dir(args: argparse.Namespace) -> Path:
    from knowledge_graph.graph import DEFAULT_DATA_DIR

    return Path(args.data) if getattr(args, "data", None) else DEFAULT_DATA_DIR


def _validate(args: argparse.Namespace) -> int:
    from knowledge_graph.graph import read_raw
    from knowledge_graph.schema import KgError
    from knowledge_graph.validate import validate_raw

    try:
        raw = read_raw(_data_dir(args))
    except KgError as e:
        return _fail(e)
    problems = validate_raw(raw)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return _fail(f"{len(problems)} problem(s) in {_data_dir(args)}")
    print(f"ok: {len(raw.nodes)} nodes, {len(raw.edges)} edges in {len(raw.files)} files")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from knowledge_graph.graph import load_graph
    from knowledge_graph.schema import KgError

    try:
        stats = load_graph(_data_dir(args)).stats()
    except KgError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(stats))
        return 0
    print(f"nodes {stats['nodes']}, edges {stats['edges']}, surface forms {stats['synonyms']}")
    for section in ("node_types", "edge_types", "edge_sources"):
        print(f"{section}:")
        for key, count in stats[section].items():
            print(f"  {key:32s} {count}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from knowledge_graph.graph import load_graph
    from knowledge_graph.index import MiniLMEmbedder, default_cache_dir
    from knowledge_graph.retriever import ensure_index
    from knowledge_graph.schema import KgError

    problem = _not_a_folder(args.out, "--out")
    if problem:
        return _fail(problem, 2)
    out = args.out or default_cache_dir()
    try:
        graph = load_graph(_data_dir(args))
        t0 = time.perf_counter()
        index = ensure_index(graph, MiniLMEmbedder(), out, rebuild=args.rebuild)
    except KgError as e:
        return _fail(e)
    print(f"index of {len(index.node_ids)} nodes in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _load_retriever(cache: Path | None, dense: str) -> Any:
    import torch

    from knowledge_graph.retriever import DenseMode, Retriever

    mode: DenseMode = "fallback" if dense == "fallback" else "never" if dense == "never" else "always"
    torch.set_num_threads(1)  # single short queries: one thread was faster on these CPUs
    return Retriever.from_default(cache, dense=mode)


def _query(args: argparse.Namespace) -> int:
    from knowledge_graph.schema import KgError

    if args.k < 1:
        return _fail("--k must be at least 1", 2)
    if not args.text.strip():
        return _fail("the query text is empty", 2)
    problem = _not_a_folder(args.cache, "--cache")
    if problem:
        return _fail(problem, 2)
    try:
        retrieval = _load_retriever(args.cache, args.dense).retrieve(args.text, k=args.k)
    except KgError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(retrieval.to_dict()))
        return 0
    print("entities:")
    for ent in retrieval.entities:
        status = "negated" if ent.negated else "uncertain" if ent.uncertain else "affirmed"
        print(f"  {ent.text!r} -> {ent.node} ({ent.name}) [{status}]")
    print("results:")
    for r in retrieval.results:
        print(f"  {r.score:.3f}  {r.node}  ({r.name})")
    print(retrieval.as_prompt_context())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from knowledge_graph.evaluation import DEFAULT_QUERIES, evaluate, load_queries
    from knowledge_graph.schema import KgError

    if args.k < 1:
        return _fail("--k must be at least 1", 2)
    problem = _not_a_folder(args.cache, "--cache")
    if problem:
        return _fail(problem, 2)
    try:
        queries = load_queries(args.queries or DEFAULT_QUERIES)
        retriever = _load_retriever(args.cache, args.dense)
        report = evaluate(retriever, queries, k=args.k)
    except KgError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"queries {report.n}  recall@{report.k} {report.recall:.3f}")
        print(f"negation accuracy {report.negation_accuracy:.3f}")
        print(f"false negation rate {report.false_negation_rate:.3f}")
        print(f"uncertainty accuracy {report.uncertainty_accuracy:.3f}")
        for kind, value in report.recall_by_kind.items():
            print(f"  {kind:14s} {value:.3f}")
        for f in report.failures:
            print(f"  miss: {f['q']!r} gold={f['gold']} got={f['results']}")
    ok = report.recall >= 0.95 and report.negation_accuracy >= 0.95
    if args.check and not ok:
        return _fail(
            f"below the targets: recall@{report.k} {report.recall:.3f}, negation accuracy"
            f" {report.negation_accuracy:.3f} (both must be at least 0.95)"
        )
    return 0


def _import(args: argparse.Namespace) -> int:
    from knowledge_graph.graph import load_graph
    from knowledge_graph.importers import IMPORT_FILES, IMPORTERS, write_import
    from knowledge_graph.schema import KgError

    out = args.out or IMPORT_FILES[args.source]
    try:
        # sources are layered in a fixed order (radlabels, icd10, hpo): each is checked for
        # synonym clashes against the curated files and the sources before it only
        order = list(IMPORT_FILES)
        later = [IMPORT_FILES[s] for s in order[order.index(args.source) :]]
        graph = load_graph(exclude=later)
        t0 = time.perf_counter()
        result = IMPORTERS[args.source](graph)
        header = f"Imported from {result.doc['provenance']['source']} {result.doc['provenance']['version']}."
        write_import(result, out, header)
    except KgError as e:
        return _fail(e)
    for note in result.notes:
        print(note)
    seconds = time.perf_counter() - t0
    print(f"{args.source}: {result.added} added, {result.skipped} skipped -> {out} ({seconds:.1f} s)")
    return 0
