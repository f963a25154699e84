"""Subcommands ``ask`` and ``serve-api``: wiring data_prep, knowledge_graph and medvlm.

``medvlm ask IMAGE_OR_STUDY "question"`` reads the input with ``data_prep.load_views``, checks the
model (or server), retrieves cited facts with ``knowledge_graph.retriever.Retriever``, and answers
with a local model (or an OpenAI-compatible server with ``--server``). ``medvlm serve-api`` serves
a local model through the OpenAI chat-completions API. Heavy imports happen inside the handlers.

API keys never come from the command line (it shows in ``ps``): ``$MEDVLM_API_KEY`` or
``--api-key-file PATH``.

Exit codes: 0 answered, 1 a failed input / load / server, or a request the safety gate refused,
2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medvlm import Answer, AskRequest, KnowledgeFact, ModelScope

logger = logging.getLogger(__name__)

BUNDLED_CHEST_XRAY = "RG1_UNCR.dcm"  # real PA chest radiograph in the pydicom test corpus
SYNTHETIC_NOTICE = "Built-in model: trained on synthetic data only. Research software, not for clinical use."
RESEARCH_NOTICE = "Research software, not for clinical use."
MAX_FACTS = 8  # facts offered to the model; more crowd a small model's context
MAX_FACTS_SHOWN = 4  # facts listed in the text output (all of them are in --json)
API_KEY_ENV = "MEDVLM_API_KEY"
# The built-in model's training data: synthetic PA chest radiographs (CR / DX), single 2D images.
BUILTIN_MODALITIES = frozenset({"CR", "DX"})
BUILTIN_BODY_PARTS = frozenset({"CHEST"})


class UsageError(Exception):
    """A command-line argument is wrong (exit code 2)."""


class StepError(Exception):
    """A step of ``ask`` / ``serve-api`` failed (exit code 1); the message names the step."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model answers: folder, adapter, versions and scope (the built-in model's)."""

    model_dir: Path
    adapter_dir: Path | None
    model_version: str | None = None
    adapter_version: str | None = None
    builtin: bool = False
    scope: ModelScope | None = None


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1.

    Raises:
        argparse.ArgumentTypeError: for anything else (argparse turns it into exit code 2).
    """
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: Any) -> None:
    """Add the model subcommands to the top-level subparsers."""
    ask = sub.add_parser(
        "ask",
        allow_abbrev=False,  # "--api-key K" must not pass as "--api-key-file K"
        help="answer a question about an image or study with a local VLM",
        description="Answer a question about an image, DICOM file/series or slide, with grounding checks.",
    )
    ask.add_argument("input", nargs="?", type=Path, help="image, DICOM file, study folder or slide")
    ask.add_argument("question", nargs="?", help="the question, in quotes")
    ask.add_argument(
        "--bundled-chest-xray",
        action="store_true",
        help=f"use the real chest radiograph {BUNDLED_CHEST_XRAY} shipped with pydicom-data (no INPUT)",
    )
    _model_args(ask)
    ask.add_argument("--server", help="OpenAI-compatible server URL (vLLM, SGLang, medvlm serve-api)")
    _api_key_arg(ask, "server API key")
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
    ask.add_argument("--max-new-tokens", type=positive_int, default=64)
    ask.add_argument("--abstain-threshold", type=float, default=0.6)
    ask.set_defaults(func=ask_handler)

    serve = sub.add_parser(
        "serve-api",
        allow_abbrev=False,
        help="serve a local model through the OpenAI chat-completions API",
        description=(
            "Serve /v1/models and /v1/chat/completions (stream too) for a local model. "
            "A non-loopback --host needs an API key."
        ),
    )
    _model_args(serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    _api_key_arg(serve, "require this bearer key")
    serve.add_argument("--name", help="model id listed by /v1/models (default: the model version)")
    serve.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=50_000_000,
        help="largest image (width x height) a request may send (default 50 MP)",
    )
    serve.set_defaults(func=serve_handler)


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="local model folder (default: the built-in model)")
    parser.add_argument("--adapter", type=Path, help="LoRA adapter folder")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="CPU threads (1 is fastest on 2 cores)"
    )


def _api_key_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the {what} (default: ${API_KEY_ENV}); never pass a key on the command line",
    )


def read_api_key(key_file: Path | None) -> str | None:
    """The API key from ``--api-key-file`` or ``$MEDVLM_API_KEY`` (None when neither is set).

    Raises:
        UsageError: when the file cannot be read or is empty.
    """
    if key_file is None:
        return os.environ.get(API_KEY_ENV) or None
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read the API key file ({type(e).__name__})") from e
    if not key:
        raise UsageError("the API key file is empty")
    return key


def builtin_scope(prepared: Any) -> ModelScope:
    """The built-in model's scope: ``prepared.scope`` when training declares one, else CR/DX chest 2D."""
    from medvlm import ModelScope

    declared = getattr(prepared, "scope", None)
    if isinstance(declared, ModelScope):
        return declared
    return ModelScope(
        modalities=BUILTIN_MODALITIES,
        body_parts=BUILTIN_BODY_PARTS,
        dimensions=frozenset({2}),
        action="refuse",
        name="the built-in model",
    )


def choose_model(model: Path | None, adapter: Path | None) -> ModelChoice:
    """The model to load: the given folder, or the built-in model prepared under $MEDVLM_HOME.

    The folder is checked (``medvlm.loading.check_model_dir``) without loading anything.

    Raises:
        StepError: when the folder is not a loadable model, or no model is given and the built-in
            model cannot be prepared.
    """
    from medvlm import MedVLMError
    from medvlm.loading import check_model_dir

    if model is None:
        try:
            from medvlm.builtin import prepare

            built = prepare()
        except RuntimeError as e:  # BuiltinError: its message names the step
            raise StepError(f"preparing the built-in model failed: {e}") from e
        except (ImportError, OSError) as e:
            raise StepError(f"preparing the built-in model failed ({type(e).__name__})") from e
        choice = ModelChoice(
            model_dir=built.model_dir,
            adapter_dir=adapter or built.adapter_dir,
            model_version=built.model_version,
            adapter_version=None if adapter else built.adapter_version,
            builtin=bool(built.synthetic_only),
            scope=builtin_scope(built),
        )
    else:
        choice = ModelChoice(model_dir=model, adapter_dir=adapter)
    try:
        check_model_dir(Path(choice.model_dir).expanduser())
    except MedVLMError as e:
        raise StepError(str(e)) from e
    return choice


def quiet_hugging_face() -> None:
    """No download / weight-loading progress bars from transformers or huggingface_hub."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()


def load_backend(choice: ModelChoice, device: str, threads: int) -> Any:
    """Load the chosen model into an ``InProcessBackend`` (built-in versions kept as shipped).

    Raises:
        MedVLMError: when the model or adapter cannot be loaded.
    """
    quiet_hugging_face()
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
    """Convert ``data_prep.ImageView``s (pixels, modality, body_part, kind, description, warnings).

    A view from a series (``kind == "dicom-series"``) counts as 3D for the model scope. The views'
    warnings travel in ``AskRequest.warnings`` (each once, in order).
    """
    from medvlm import AskRequest, ImageContext

    contexts: list[ImageContext] = [
        ImageContext(
            modality=getattr(v, "modality", None) or None,
            body_part=getattr(v, "body_part", None) or None,
            description=str(getattr(v, "description", "") or getattr(v, "kind", "") or ""),
            dimensions=3 if getattr(v, "kind", "") == "dicom-series" else 2,
        )
        for v in views
    ]
    warnings = list(dict.fromkeys(str(w) for v in views for w in (getattr(v, "warnings", ()) or ())))
    return AskRequest(
        images=[v.pixels for v in views], question=question, contexts=contexts, facts=facts, warnings=warnings
    )


def load_input(path: Path) -> list[Any]:
    """Views of an input through ``data_prep.load_views`` (owned by the ingestion package).

    Raises:
        StepError: when data_prep cannot read it or has no ``load_views`` yet.
    """
    try:
        from data_prep.errors import IngestError
        from data_prep.ingest import load_views
    except ImportError as e:
        raise StepError(f"data_prep.load_views is not available ({type(e).__name__})") from e
    try:
        views: list[Any] = load_views(path)
    except IngestError as e:
        raise StepError(f"reading the input: {e}") from e
    except (OSError, ValueError) as e:
        raise StepError(f"reading the input failed ({type(e).__name__})") from e
    if not views:
        raise StepError("no image could be read from the input")
    return views


def retrieve_facts(question: str, limit: int = MAX_FACTS) -> list[KnowledgeFact]:
    """Cited facts for the question from the knowledge graph (``Retriever.from_default``).

    Returns:
        Up to ``limit`` facts with unique, citable ids.

    Raises:
        StepError: when the knowledge graph is missing or broken (the caller answers without
            facts and says so).
    """

    try:
        from knowledge_graph.retriever import Retriever
    except ImportError as e:
        raise StepError("knowledge_graph.retriever is not available; answered without facts") from e
    try:
        retrieval = Retriever.from_default().retrieve(question, k=5)
    except Exception as e:  # KgError and index/embedder failures: degrade, never block the answer
        logger.info("knowledge retrieval failed", exc_info=True)
        raise StepError(f"knowledge retrieval failed ({type(e).__name__}); answered without facts") from e
    return citable_facts(retrieval.facts, limit)


def citable_facts(retrieved: Sequence[Any], limit: int = MAX_FACTS) -> list[KnowledgeFact]:
    """The model layer's facts from a retrieval's facts, with unique, citable ids.

    One node has several facts (definition, appearance, ...): the first keeps the node id, the next
    get ``node:relation`` (and a prime when even that repeats).

    Args:
        retrieved: ``Retrieval.facts`` (items with ``node``, ``relation``, ``text`` and ``source``).
        limit: the most facts kept.

    Returns:
        Up to ``limit`` facts.
    """
    from medvlm import KnowledgeFact

    facts: list[KnowledgeFact] = []
    seen: set[str] = set()
    for f in retrieved[:limit]:
        fact_id = str(f.node) if str(f.node) not in seen else f"{f.node}:{f.relation}"
        while fact_id in seen:
            fact_id += "'"
        seen.add(fact_id)
        facts.append(KnowledgeFact(fact_id=fact_id, text=str(f.text), source=str(f.source)))
    return facts


def answer_json(
    answer: Answer, facts: list[KnowledgeFact], notice: str, warnings: list[str] | None = None
) -> dict[str, Any]:
    """The ``--json`` object of ``medvlm ask``.

    Args:
        answer: the model layer's answer.
        facts: the facts offered to the model.
        notice: the research / synthetic-data notice.
        warnings: warnings of the command itself (knowledge graph unavailable), after the answer's.
    """
    return {
        "answer": answer.text,
        "model": answer.model.model_version,
        "adapter": answer.model.adapter_version,
        "grounded": answer.grounded,
        "confidence": answer.confidence,
        "abstained": answer.abstained,
        "refused": answer.refused,
        "warnings": [*answer.warnings, *(warnings or [])],
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


def _ask_input(args: argparse.Namespace) -> tuple[Path, str]:
    """The input path and question, with ``--bundled-chest-xray`` resolved.

    Raises:
        UsageError: for a missing question or input, or an input given with ``--bundled-chest-xray``.
    """
    if args.bundled_chest_xray:
        if args.question is not None:
            raise UsageError("give either INPUT or --bundled-chest-xray, not both")
        if args.input is None:
            raise UsageError('usage: medvlm ask --bundled-chest-xray "question"')
        from pydicom.data import get_testdata_file

        return Path(str(get_testdata_file(BUNDLED_CHEST_XRAY))), str(args.input)
    if args.input is None or not args.question:
        raise UsageError('usage: medvlm ask IMAGE_OR_STUDY "question" (or --bundled-chest-xray "question")')
    return args.input, str(args.question)


@dataclass(frozen=True)
class _UnloadedBackend:
    """Stands in for a model that is not loaded because the safety gate refuses the request.

    ``Assistant`` refuses before generating, so only ``info`` is ever called.
    """

    choice: ModelChoice

    def info(self) -> Any:
        from medvlm import ModelInfo

        version = self.choice.model_version or Path(self.choice.model_dir).name
        return ModelInfo(version, self.choice.adapter_version, "not-loaded", False)

    def generate(self, prompts: list[Any], settings: Any, yes_no: bool = False) -> list[Any]:
        raise StepError("the model was not loaded for a refused request")

    def stream(self, prompt: Any, settings: Any) -> Any:
        raise StepError("the model was not loaded for a refused request")


def _ask_backend(
    args: argparse.Namespace, api_key: str | None, request: AskRequest
) -> tuple[Any, ModelChoice | None]:
    """The backend, checked before anything slow: server reachable, or model folder complete.

    A request the model's scope refuses does not load the model (``_UnloadedBackend``).

    Raises:
        StepError: when the server is not reachable or the model cannot be loaded.
    """
    from medvlm import MedVLMError
    from medvlm.safety import SafetyGate

    if args.server:
        from medvlm.http_backend import HTTPBackend

        backend = HTTPBackend(args.server, api_key=api_key, timeout=args.timeout)
        try:
            backend.info()
        except MedVLMError as e:
            raise StepError(str(e)) from e
        return backend, None
    choice = choose_model(args.model, args.adapter)
    refusals = [] if choice.scope is None else SafetyGate().check(request, choice.scope)
    if any(d.action == "refuse" for d in refusals):
        logger.info("the safety gate refuses the request: the model is not loaded")
        return _UnloadedBackend(choice), choice
    try:
        return load_backend(choice, args.device, args.threads), choice
    except MedVLMError as e:
        raise StepError(str(e)) from e


def ask_handler(args: argparse.Namespace) -> int:
    """Run ``medvlm ask``: input, model or server check, facts, answer; print it."""
    from medvlm import GenerationSettings, MedVLMError
    from medvlm.assistant import Assistant

    try:
        path, question = _ask_input(args)
        api_key = read_api_key(args.api_key_file)
        settings = GenerationSettings(
            max_new_tokens=args.max_new_tokens,
            contrastive_alpha=args.contrastive,
            ablation=args.ablation,
            abstain_threshold=args.abstain_threshold,
        )
    except (UsageError, MedVLMError) as e:
        print(f"medvlm ask: {e}", file=sys.stderr)
        return 2
    notes: list[str] = []
    try:
        views = load_input(path)
        backend, choice = _ask_backend(args, api_key, views_to_request(views, question, []))
        facts = []
        if not args.no_kg and not isinstance(backend, _UnloadedBackend):  # no facts for a refusal
            try:
                quiet_hugging_face()
                facts = retrieve_facts(question)
            except StepError as e:
                notes.append(str(e))
        if choice is not None and choice.scope is not None:
            settings = replace(settings, scope=choice.scope)
        answer = Assistant(backend).ask(views_to_request(views, question, facts), settings)
    except StepError as e:
        print(f"medvlm ask: {e}", file=sys.stderr)
        return 1
    except MedVLMError as e:
        print(f"medvlm ask: answering failed: {e}", file=sys.stderr)
        return 1
    notice = SYNTHETIC_NOTICE if choice is not None and choice.builtin else RESEARCH_NOTICE
    if args.json:
        print(json.dumps(answer_json(answer, facts, notice, notes), indent=2))
    else:
        print(format_answer(answer, facts, notice, notes))
    return 1 if answer.refused else 0


def format_answer(
    answer: Answer, facts: list[KnowledgeFact], notice: str, warnings: list[str] | None = None
) -> str:
    """The text output of ``medvlm ask``: answer, safety decisions, warnings, confidence, facts."""
    lines = [answer.text]
    lines += [f"[{d.action}] {d.kind} ({d.source}): {d.reason}" for d in answer.safety]
    lines += [f"[warning] {w}" for w in [*answer.warnings, *(warnings or [])]]
    if answer.confidence is not None:
        lines.append(f"[confidence] yes/no {answer.confidence:.2f}")
    # The facts the model was given, cited ones first: the part of the answer a clinician can check.
    shown = sorted(facts, key=lambda f: f.fact_id not in answer.cited_facts)[:MAX_FACTS_SHOWN]
    if shown:
        lines.append(f"Knowledge-graph facts given to the model ({len(shown)} of {len(facts)}):")
        lines += [
            f"  [{f.fact_id}]{' cited' if f.fact_id in answer.cited_facts else ''} {f.text} ({f.source})"
            for f in shown
        ]
    adapter = f" + {answer.model.adapter_version}" if answer.model.adapter_version else ""
    lines.append(f"-- {answer.model.model_version}{adapter}, {answer.latency_ms:.0f} ms. {notice}")
    return "\n".join(lines)


def serve_handler(args: argparse.Namespace) -> int:
    """Run ``medvlm serve-api`` until interrupted."""
    from medvlm import MedVLMError
    from medvlm.server import ModelServer, is_loopback

    try:
        api_key = read_api_key(args.api_key_file)
    except UsageError as e:
        print(f"medvlm serve-api: {e}", file=sys.stderr)
        return 2
    if not api_key and not is_loopback(args.host):
        print(
            f"medvlm serve-api: binding {args.host} (not loopback) needs an API key: set "
            f"${API_KEY_ENV} or --api-key-file.",
            file=sys.stderr,
        )
        return 2
    try:
        backend = load_backend(choose_model(args.model, args.adapter), args.device, args.threads)
        server = ModelServer(
            backend,
            host=args.host,
            port=args.port,
            api_key=api_key,
            model_name=args.name,
            max_image_pixels=args.max_image_pixels,
        )
    except StepError as e:
        print(f"medvlm serve-api: {e}", file=sys.stderr)
        return 1
    except MedVLMError as e:
        print(f"medvlm serve-api: loading the model failed: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"medvlm serve-api: cannot bind {args.host}:{args.port} ({type(e).__name__})", file=sys.stderr)
        return 1
    print(f"serving {server.model_name} on {server.url}/v1", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0
