"""Subcommands ``ask`` and ``serve-api``: wiring data_prep, knowledge_graph and medvlm.

``medvlm ask IMAGE_OR_STUDY "question"`` reads the input with ``data_prep.load_views``, retrieves
cited facts with ``knowledge_graph.retriever.Retriever``, and answers with a local model (or an
OpenAI-compatible server with ``--server``). ``medvlm serve-api`` serves a local model through the
OpenAI chat-completions API. Heavy imports happen inside the handlers.

Exit codes: 0 answered, 1 a failed input / load / server, or a request the safety gate refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvlm import Answer, AskRequest, ImageContext, KnowledgeFact

logger = logging.getLogger(__name__)

BUNDLED_CHEST_XRAY = "RG1_UNCR.dcm"  # real PA chest radiograph in the pydicom test corpus
SYNTHETIC_NOTICE = "Built-in model: trained on synthetic data only. Research software, not for clinical use."
RESEARCH_NOTICE = "Research software, not for clinical use."
MAX_FACTS = 8  # facts offered to the model; more crowd a small model's context


@dataclass(frozen=True)
class ModelChoice:
    """Which model answers: folder, adapter, and version overrides for the built-in model."""

    model_dir: Path
    adapter_dir: Path | None
    model_version: str | None = None
    adapter_version: str | None = None
    builtin: bool = False


def register(sub: Any) -> None:
    """Add the model subcommands to the top-level subparsers."""
    ask = sub.add_parser(
        "ask",
        help="answer a question about an image or study with a local VLM",
        description="Answer a question about an image, DICOM file/series or slide, with grounding checks.",
    )
    ask.add_argument("input", nargs="?", type=Path, help="image, DICOM file, study folder or slide")
    ask.add_argument("question", nargs="?", help="the question, in quotes")
    ask.add_argument(
        "--bundled-chest-xray",
        action="store_true",
        help=f"use the real chest radiograph {BUNDLED_CHEST_XRAY} shipped with pydicom-data",
    )
    _model_args(ask)
    ask.add_argument("--server", help="OpenAI-compatible server URL (vLLM, SGLang, medvlm serve-api)")
    ask.add_argument("--api-key", default=os.environ.get("MEDVLM_API_KEY"), help="server API key")
    ask.add_argument("--timeout", type=float, default=120.0, help="server timeout in seconds")
    ask.add_argument("--json", action="store_true", help="print one JSON object")
    ask.add_argument("--no-kg", action="store_true", help="do not retrieve knowledge-graph facts")
    ask.add_argument(
        "--contrastive",
        type=float,
        default=0.0,
        metavar="A",
        help="visual contrastive decoding strength (0 = off; 1 is typical)",
    )
    ask.add_argument(
        "--ablation",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="check the answer against blank images (default: on)",
    )
    ask.add_argument("--max-new-tokens", type=int, default=64)
    ask.add_argument("--abstain-threshold", type=float, default=0.6)
    ask.set_defaults(func=ask_handler)

    serve = sub.add_parser(
        "serve-api",
        help="serve a local model through the OpenAI chat-completions API",
        description="Serve /v1/models and /v1/chat/completions (stream too) for a local model.",
    )
    _model_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("MEDVLM_API_KEY"),
        help="require this bearer key (default: $MEDVLM_API_KEY)",
    )
    serve.add_argument("--name", help="model id listed by /v1/models (default: the model version)")
    serve.set_defaults(func=serve_handler)


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="local model folder (default: the built-in model)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on 2 cores)")


def choose_model(model: Path | None, adapter: Path | None) -> ModelChoice:
    """The model to load: the given folder, or the built-in model prepared under $MEDVLM_HOME.

    Raises:
        RuntimeError: when no model is given and the built-in model cannot be prepared.
    """
    if model is not None:
        return ModelChoice(model_dir=model, adapter_dir=adapter)
    try:
        from medvlm.builtin import prepare
    except ImportError as e:
        raise RuntimeError(f"no --model given and the built-in model is not available ({e})") from e
    built = prepare()
    return ModelChoice(
        model_dir=built.model_dir,
        adapter_dir=adapter or built.adapter_dir,
        model_version=built.model_version,
        adapter_version=None if adapter else built.adapter_version,
        builtin=bool(built.synthetic_only),
    )


def load_backend(choice: ModelChoice, device: str, threads: int) -> Any:
    """Load the chosen model into an ``InProcessBackend`` (built-in versions kept as shipped)."""
    import medvlm
    from medvlm.adapters import AdapterSet
    from medvlm.backends import InProcessBackend

    loaded = medvlm.load(choice.model_dir, device=device, num_threads=threads)
    if choice.model_version:
        loaded.model_version = choice.model_version
    if choice.adapter_dir is not None:
        AdapterSet(loaded).load(choice.adapter_dir, name=choice.adapter_dir.name)
        if choice.adapter_version:
            loaded.adapters[choice.adapter_dir.name] = choice.adapter_version
    return InProcessBackend(loaded)


def views_to_request(views: list[Any], question: str, facts: list[KnowledgeFact]) -> AskRequest:
    """Convert ``data_prep.ImageView``s (pixels, modality, body_part, kind, description) to a request."""
    from medvlm import AskRequest, ImageContext

    contexts: list[ImageContext] = [
        ImageContext(
            modality=getattr(v, "modality", None) or None,
            body_part=getattr(v, "body_part", None) or None,
            description=str(getattr(v, "description", "") or getattr(v, "kind", "") or ""),
        )
        for v in views
    ]
    return AskRequest(images=[v.pixels for v in views], question=question, contexts=contexts, facts=facts)


def load_input(path: Path) -> list[Any]:
    """Views of an input through ``data_prep.load_views`` (owned by the ingestion package).

    Raises:
        RuntimeError: when data_prep cannot read it or has no ``load_views`` yet.
    """
    try:
        from data_prep.errors import IngestError
        from data_prep.ingest import load_views
    except ImportError as e:
        raise RuntimeError(f"data_prep.load_views is not available yet ({e})") from e
    try:
        views: list[Any] = load_views(path)
    except IngestError as e:
        raise RuntimeError(f"reading {path.name}: {e}") from e
    if not views:
        raise RuntimeError(f"no image could be read from {path.name}")
    return views


def retrieve_facts(question: str, limit: int = MAX_FACTS) -> list[KnowledgeFact]:
    """Cited facts for the question from the knowledge graph (``Retriever.from_default``).

    A missing or broken knowledge graph does not block the answer: a warning goes to stderr and
    the model answers without facts.
    """
    from medvlm import KnowledgeFact

    try:
        from knowledge_graph.retriever import Retriever
    except ImportError:
        print(
            "medvlm ask: knowledge_graph.retriever is not available; answering without facts", file=sys.stderr
        )
        return []
    try:
        retrieval = Retriever.from_default().retrieve(question, k=5)
    except Exception as e:  # KgError and index/embedder failures: degrade, never block the answer
        print(
            f"medvlm ask: knowledge retrieval failed ({type(e).__name__}: {e}); answering without facts",
            file=sys.stderr,
        )
        return []
    facts: list[KnowledgeFact] = []
    seen: set[str] = set()
    for f in retrieval.facts[:limit]:
        # One node has several facts (definition, appearance, ...): ids stay unique and citable.
        fact_id = str(f.node) if str(f.node) not in seen else f"{f.node}:{f.relation}"
        while fact_id in seen:
            fact_id += "'"
        seen.add(fact_id)
        facts.append(KnowledgeFact(fact_id=fact_id, text=str(f.text), source=str(f.source)))
    return facts


def answer_json(answer: Answer, facts: list[KnowledgeFact], notice: str) -> dict[str, Any]:
    """The ``--json`` object of ``medvlm ask``."""
    return {
        "answer": answer.text,
        "model": answer.model.model_version,
        "adapter": answer.model.adapter_version,
        "grounded": answer.grounded,
        "confidence": answer.confidence,
        "abstained": answer.abstained,
        "refused": answer.refused,
        "safety": [asdict(d) for d in answer.safety],
        "latency_ms": round(answer.latency_ms, 1),
        "evidence": [
            {"id": f.fact_id, "text": f.text, "source": f.source, "cited": f.fact_id in answer.cited_facts}
            for f in facts
        ],
        "views": answer.views,
        "raw_answer": answer.raw_text,
        "ablation_answer": answer.ablation_text,
        "notice": notice,
    }


def ask_handler(args: argparse.Namespace) -> int:
    """Run ``medvlm ask``."""
    from medvlm import GenerationSettings, MedVLMError
    from medvlm.assistant import Assistant

    if args.bundled_chest_xray:
        if args.input is not None and args.question is None:
            args.question, args.input = str(args.input), None
        from pydicom.data import get_testdata_file

        args.input = Path(str(get_testdata_file(BUNDLED_CHEST_XRAY)))
    if args.input is None or not args.question:
        print(
            'usage: medvlm ask IMAGE_OR_STUDY "question" (or --bundled-chest-xray "question")',
            file=sys.stderr,
        )
        return 2
    try:
        settings = GenerationSettings(
            max_new_tokens=args.max_new_tokens,
            contrastive_alpha=args.contrastive,
            ablation=args.ablation,
            abstain_threshold=args.abstain_threshold,
        )
        views = load_input(args.input)
        facts = [] if args.no_kg else retrieve_facts(args.question)
        request = views_to_request(views, args.question, facts)
        builtin = False
        if args.server:
            from medvlm.http_backend import HTTPBackend

            backend: Any = HTTPBackend(args.server, api_key=args.api_key, timeout=args.timeout)
        else:
            choice = choose_model(args.model, args.adapter)
            builtin = choice.builtin
            backend = load_backend(choice, args.device, args.threads)
        answer = Assistant(backend).ask(request, settings)
    except (MedVLMError, RuntimeError, OSError, ValueError) as e:
        print(f"medvlm ask: {e}", file=sys.stderr)
        return 1
    notice = SYNTHETIC_NOTICE if builtin else RESEARCH_NOTICE
    if args.json:
        print(json.dumps(answer_json(answer, facts, notice), indent=2))
    else:
        _print_answer(answer, facts, notice)
    return 1 if answer.refused else 0


def _print_answer(answer: Answer, facts: list[KnowledgeFact], notice: str) -> None:
    print(answer.text)
    for decision in answer.safety:
        print(f"[{decision.action}] {decision.kind} ({decision.source}): {decision.reason}")
    if answer.grounded is False:
        print("[check] The answer did not change with blank images: it may not rest on the image.")
    if answer.confidence is not None:
        print(f"[confidence] yes/no {answer.confidence:.2f}")
    for fact in facts:
        if fact.fact_id in answer.cited_facts:
            print(f"[{fact.fact_id}] {fact.text} ({fact.source})")
    adapter = f" + {answer.model.adapter_version}" if answer.model.adapter_version else ""
    print(f"-- {answer.model.model_version}{adapter}, {answer.latency_ms:.0f} ms. {notice}")


def serve_handler(args: argparse.Namespace) -> int:
    """Run ``medvlm serve-api`` until interrupted."""
    from medvlm import MedVLMError
    from medvlm.server import ModelServer

    try:
        backend = load_backend(choose_model(args.model, args.adapter), args.device, args.threads)
        server = ModelServer(
            backend, host=args.host, port=args.port, api_key=args.api_key, model_name=args.name
        )
    except (MedVLMError, RuntimeError, OSError) as e:
        print(f"medvlm serve-api: {e}", file=sys.stderr)
        return 1
    print(f"serving {server.model_name} on {server.url}/v1", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0
