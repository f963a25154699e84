"""Run a model over evaluation questions and score it.

The model is loaded through the model layer's ``medvlm.load`` (offline, with the LoRA adapter when
given) and asked each question in the same single-turn chat format the built-in model was trained
with (:func:`training.batching.chat_prompt`), greedy, in batches. ``blank=True`` replaces every image
with a uniform mid-grey image of the same size: the blind baseline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from data_prep.phantoms.report_errors import ERROR_TYPES
from data_prep.phantoms.report_verdict import REPORTCHECK_QUESTION, parse_report_verdict
from training.batching import chat_prompt
from training.data import DataError, QAExample, read_jsonl, split_file
from training.eval.datasets import EVAL_SPLIT, held_out_split, load_probes, load_vqa
from training.eval.metrics import (
    Scored,
    closed_correct,
    paired_accuracy,
    reportcheck_metrics,
    vqa_metrics,
)
from training.eval.prior import QuestionPrior

logger = logging.getLogger(__name__)

REPORT_ERROR_TYPES = ERROR_TYPES  # the injector's types: the scorer must name the same ones


@dataclass
class Answerer:
    """A loaded model answering single-turn image questions.

    Attributes:
        model: the Hugging Face model (peft-wrapped when an adapter is active).
        processor: its processor (chat template, image processor, tokenizer).
        model_version: version string for reports.
        max_new_tokens: generation budget.
        batch_size: questions per ``generate`` call.
    """

    model: Any
    processor: Any
    model_version: str
    max_new_tokens: int = 24
    batch_size: int = 16
    _blank_cache: dict[tuple[int, int], Any] = field(default_factory=dict)

    def _image(self, path: Path | None, blank: bool) -> Any:
        from PIL import Image

        if path is None:
            raise DataError("a question without an image cannot be evaluated by this harness")
        try:
            with Image.open(path) as handle:
                image = handle.convert("RGB")
        except OSError as e:
            raise DataError(f"reading image {path.name}: {e}") from e
        if blank:
            return Image.new("RGB", image.size, (128, 128, 128))
        return image

    def answer(self, examples: Sequence[QAExample], *, blank: bool = False) -> list[str]:
        """Greedy answers, in order.

        Args:
            examples: questions with images.
            blank: replace every image by uniform grey (blind baseline).

        Returns:
            One answer string per example.
        """
        import torch

        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"
        end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        out: list[str] = []
        for start in range(0, len(examples), self.batch_size):
            chunk = examples[start : start + self.batch_size]
            prompts = [chat_prompt(self.processor, e.question) for e in chunk]
            images = [self._image(e.image, blank) for e in chunk]
            inputs = self.processor(images=images, text=prompts, return_tensors="pt", padding=True)
            device = next(self.model.parameters()).device
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with torch.no_grad():
                generated = self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    eos_token_id=end,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = generated[:, inputs["input_ids"].shape[1] :]
            out += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out


class ResolvedModel(NamedTuple):
    """What ``--model`` names: the folder to load, its adapter and, for built-in parts, its version."""

    model_dir: Path
    adapter: str | None
    version: str | None


def resolve_model(model: str, adapter: str | None = None, *, home: Path | None = None) -> ResolvedModel:
    """The model folder, adapter and version that ``model`` names.

    Args:
        model: ``builtin`` (the committed parts); a folder of built-in parts (``parts.json``: an
            exported ``weights/`` folder or a stage-1/2 checkpoint), assembled like the built-in
            model, with its own ``adapter/`` unless ``adapter`` is given; or a complete model folder.
        adapter: LoRA adapter folder overriding the one that comes with the parts.
        home: the cache root for assembled models (``$MEDVLM_HOME`` when None).

    Returns:
        The folder, the adapter and, for built-in parts with their own adapter, the built-in
        version (``builtin-<v>+<digest>+builtin-lora-<v>+<digest>``; None otherwise).
    """
    from medvlm.builtin import prepare

    folder = Path(model)
    if model == "builtin" or (folder / "parts.json").is_file():
        built = prepare(home, weights_dir=None if model == "builtin" else folder)
        own = str(built.adapter_dir) if built.adapter_dir else None
        chosen = adapter or own
        version = built.model_version + (f"+{built.adapter_version}" if chosen == own and own else "")
        return ResolvedModel(built.model_dir, chosen, version if chosen == own else None)
    return ResolvedModel(folder, adapter, None)


def load_answerer(
    model: str, adapter: str | None = None, *, num_threads: int = 1, batch_size: int = 16
) -> Answerer:
    """Load the model that ``model`` names (see :func:`resolve_model`) through ``medvlm.load``.

    Args:
        model: ``builtin``, a folder of built-in parts (e.g. a training checkpoint) or a model folder.
        adapter: LoRA adapter folder (by default the one that comes with the built-in parts).
        num_threads: CPU threads.
        batch_size: questions per generate call.

    Returns:
        The answerer.
    """
    import medvlm

    resolved = resolve_model(model, adapter)
    loaded = medvlm.load(resolved.model_dir, adapter=resolved.adapter, num_threads=num_threads)
    version = resolved.version or (
        loaded.model_version + (f"+{loaded.adapter_version}" if loaded.adapter_version else "")
    )
    loaded.model.eval()
    return Answerer(loaded.model, loaded.processor, version, batch_size=batch_size)


def _limit(items: list[Any], limit: int | None) -> list[Any]:
    return items[:limit] if limit else items


def evaluate_vqa(
    answerer: Answerer, data: Path, *, limit: int | None = None, split: str = EVAL_SPLIT
) -> dict[str, Any]:
    """Closed accuracy and open recall / token F1 on ``data`` (phantoms: test split).

    Args:
        answerer: the model.
        data: phantoms folder or a dataset file.
        limit: evaluate only the first ``limit`` questions.
        split: of a phantoms folder: ``test`` (default) or ``val`` (to choose between candidates).

    Returns:
        The metrics of :func:`vqa_metrics` plus ``n`` and ``seconds``.
    """
    examples = _limit(load_vqa(data, split), limit)
    start = time.perf_counter()
    predictions = answerer.answer(examples)
    scored = [
        Scored(e.question_type, e.template, p, e.answer, e.options)
        for e, p in zip(examples, predictions, strict=True)
    ]
    return {**vqa_metrics(scored), "n": len(examples), "seconds": round(time.perf_counter() - start, 1)}


def evaluate_probe(
    answerer: Answerer, data: Path, *, limit: int | None = None, split: str = EVAL_SPLIT
) -> dict[str, Any]:
    """ProbMed-style paired accuracy, with the blind baseline (same model, image blanked).

    Args:
        answerer: the model.
        data: phantoms folder (test split) or a probes JSONL.
        limit: evaluate only the first ``limit`` pairs.
        split: of a phantoms folder: ``test`` (default) or ``val``.

    Returns:
        ``paired_accuracy``, ``blind_paired_accuracy``, ``n`` (pairs), ``question_accuracy``,
        per-category paired accuracy with and without the image (``per_category``,
        ``blind_per_category``) and pairs per category (``n_per_category``). For a phantoms folder
        also the question-only prior fitted on its train split (:mod:`training.eval.prior`):
        ``prior_paired_accuracy`` and ``prior_per_category``, what the simplest text-only rule answers.
    """
    probes = load_probes(data, split)
    if limit:
        keep = list(dict.fromkeys(pid for pid, _, _ in probes))[:limit]
        probes = [p for p in probes if p[0] in set(keep)]
    examples = [e for _, _, e in probes]
    prior = _train_prior(data)  # before the model runs: a malformed train file fails fast
    start = time.perf_counter()
    seeing = answerer.answer(examples)
    blind = answerer.answer(examples, blank=True)
    ok = [closed_correct(p, e.answer) for p, e in zip(seeing, examples, strict=True)]
    ok_blind = [closed_correct(p, e.answer) for p, e in zip(blind, examples, strict=True)]
    paired, n = paired_accuracy((pid, o) for (pid, _, _), o in zip(probes, ok, strict=True))
    blind_paired, _ = paired_accuracy((pid, o) for (pid, _, _), o in zip(probes, ok_blind, strict=True))
    categories = sorted({e.template for e in examples})
    per_category, n_per_category = _paired_by_category(probes, ok, categories)
    blind_per_category, _ = _paired_by_category(probes, ok_blind, categories)
    metrics: dict[str, Any] = {
        "paired_accuracy": paired,
        "blind_paired_accuracy": blind_paired,
        "n": n,
        "question_accuracy": sum(ok) / len(ok) if ok else float("nan"),
        "blind_question_accuracy": sum(ok_blind) / len(ok_blind) if ok_blind else float("nan"),
        "per_category": per_category,
        "blind_per_category": blind_per_category,
        "n_per_category": n_per_category,
    }
    if prior is not None:
        ok_prior = [closed_correct(prior.answer(e.question), e.answer) for e in examples]
        metrics["prior_paired_accuracy"] = paired_accuracy(
            (pid, o) for (pid, _, _), o in zip(probes, ok_prior, strict=True)
        )[0]
        metrics["prior_per_category"] = _paired_by_category(probes, ok_prior, categories)[0]
    return {**metrics, "seconds": round(time.perf_counter() - start, 1)}


def _train_prior(data: Path) -> QuestionPrior | None:
    """The question-only prior of a phantoms folder's train probes; None for a probes file or a folder
    without a train split (the evaluation itself needs only the evaluated split)."""
    path = data / "train" / "probes.jsonl"
    if not path.is_file():
        return None
    records = read_jsonl(path)
    try:
        examples = [(str(r["question"]), str(r["answer"])) for r in records]
    except KeyError as e:
        raise DataError(f"train/probes.jsonl in {data}: a record lacks {e}") from e
    return QuestionPrior.fit(examples) if examples else None


def _paired_by_category(
    probes: Sequence[tuple[str, str, QAExample]], ok: Sequence[bool], categories: Sequence[str]
) -> tuple[dict[str, float], dict[str, int]]:
    accuracy: dict[str, float] = {}
    count: dict[str, int] = {}
    for category in categories:
        rows = [(pid, o) for (pid, _, e), o in zip(probes, ok, strict=True) if e.template == category]
        accuracy[category], count[category] = paired_accuracy(rows)
    return accuracy, count


def evaluate_reportcheck(
    answerer: Answerer, data: Path, *, limit: int | None = None, split: str = EVAL_SPLIT
) -> dict[str, Any]:
    """SIMPLE accuracy and COMPLEX macro-F1 of report error checking (phantoms ``report_errors``).

    The model sees the image and the report and is asked whether the report has an error and of
    which type (:data:`REPORTCHECK_QUESTION`); its free text is parsed by
    :func:`parse_report_verdict`.

    Args:
        answerer: the model.
        data: phantoms folder (test split) or a report_errors JSONL.
        limit: evaluate only the first ``limit`` reports.
        split: of a phantoms folder: ``test`` (default) or ``val``.

    Returns:
        ``simple_accuracy``, ``complex_macro_f1``, ``n`` and ``predicted_error_rate``.
    """
    file = split_file(data, held_out_split(split), "report_errors") if data.is_dir() else data
    root = data if data.is_dir() else data.parent
    records = _limit(read_jsonl(file), limit)
    examples, reference = [], []
    for number, r in enumerate(records, 1):
        try:
            examples.append(
                QAExample(root / str(r["image"]), REPORTCHECK_QUESTION.format(report=r["report"]), "")
            )
            has_error = bool(r["has_error"])
            reference.append((has_error, str(r.get("error_type", "unknown")) if has_error else "no_error"))
        except KeyError as e:
            raise DataError(f"{file.name} record {number}: missing {e}") from e
    start = time.perf_counter()
    answers = answerer.answer(examples)
    predicted = [parse_report_verdict(a, REPORT_ERROR_TYPES) for a in answers]
    metrics = reportcheck_metrics(predicted, reference)
    return {
        **metrics,
        "predicted_error_rate": sum(p[0] for p in predicted) / len(predicted) if predicted else float("nan"),
        "seconds": round(time.perf_counter() - start, 1),
    }


def markdown_table(task: str, model: str, metrics: dict[str, Any]) -> str:
    """A two-column markdown table of the scalar metrics (nested ones flattened with ``/``)."""
    rows = [f"| {task} | {model} |", "|---|---|"]
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows += [f"| {key}/{k} | {_fmt(v)} |" for k, v in value.items()]
        else:
            rows.append(f"| {key} | {_fmt(value)} |")
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
