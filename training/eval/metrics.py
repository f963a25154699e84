"""Metric functions on (prediction, reference) pairs: pure functions, no model.

- Closed questions: accuracy after normalisation; a yes/no or single-option answer counts when its
  first decisive word is the reference (``"Yes, there is."`` → yes).
- Open questions: recall (share of reference tokens present in the prediction, as in LLaVA-Med's
  evaluation) and token F1 (SQuAD-style).
- Probes: ProbMed paired accuracy (Yan et al., 2024): a pair counts only when every question of the
  pair (the true and the adversarial one) is answered right.
- Report checking: SIMPLE accuracy (error / no error) and COMPLEX macro-F1 over error types
  (ReXErr-style), both from a free-text answer parsed by
  :func:`data_prep.phantoms.report_verdict.parse_report_verdict`.
"""

from __future__ import annotations

import string
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_ARTICLES = {"a", "an", "the"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
YES_WORDS = {"yes", "yeah", "true", "present", "correct"}
NO_WORDS = {"no", "not", "false", "absent", "none", "incorrect"}
NO_ERROR = "no_error"


def normalize(text: str) -> str:
    """Lower-case, punctuation to spaces, articles dropped, whitespace collapsed."""
    words = text.lower().translate(_PUNCT).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def tokens(text: str) -> list[str]:
    """Normalised word tokens."""
    return normalize(text).split()


def closed_correct(prediction: str, reference: str, options: Sequence[str] = ()) -> bool:
    """Whether a closed-question prediction matches the reference.

    Rules: exact match after normalisation; for yes/no references, the first yes-like or no-like
    word of the prediction decides; for option letters (A-D), the first token; otherwise the
    prediction must contain the reference and no other option.

    Args:
        prediction: the model's answer.
        reference: the gold answer.
        options: the question's answer options, when known.

    Returns:
        True when correct.
    """
    letter = reference.strip()
    if len(letter) == 1 and letter.isalpha():  # an option letter: before normalize(), which drops "a"
        first = prediction.lower().translate(_PUNCT).split()
        return bool(first) and first[0] == letter.lower()
    pred, ref = normalize(prediction), normalize(reference)
    if not pred:
        return False
    if pred == ref:
        return True
    words = pred.split()
    if ref in ("yes", "no"):
        for word in words:
            if word in YES_WORDS:
                return ref == "yes"
            if word in NO_WORDS:
                return ref == "no"
        return False
    if f" {ref} " not in f" {pred} ":
        return False
    others = [normalize(o) for o in options if normalize(o) != ref]
    return not any(f" {o} " in f" {pred} " for o in others if o)


def open_recall(prediction: str, reference: str) -> float:
    """Share of reference tokens that appear in the prediction (0 when the reference is empty)."""
    ref = tokens(reference)
    if not ref:
        return 0.0
    pred = set(tokens(prediction))
    return sum(1 for t in ref if t in pred) / len(ref)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between prediction and reference."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Scored:
    """One evaluated question.

    Attributes:
        question_type: ``closed`` or ``open``.
        template: question template or category.
        prediction: the model's answer.
        reference: the gold answer.
        options: answer options (closed questions).
    """

    question_type: str
    template: str
    prediction: str
    reference: str
    options: tuple[str, ...] = ()


def vqa_metrics(items: Iterable[Scored]) -> dict[str, float | int | dict[str, float]]:
    """Closed accuracy, open recall and token F1, overall and per template.

    Returns:
        ``closed_accuracy``, ``open_recall``, ``open_token_f1``, ``n_closed``, ``n_open`` and
        ``per_template`` (accuracy for closed templates, recall for open ones). Means over no items are NaN.
    """
    closed: list[float] = []
    recall: list[float] = []
    f1: list[float] = []
    per: dict[str, list[float]] = defaultdict(list)
    for item in items:
        if item.question_type == "closed":
            ok = float(closed_correct(item.prediction, item.reference, item.options))
            closed.append(ok)
            per[item.template or "closed"].append(ok)
        else:
            r = open_recall(item.prediction, item.reference)
            recall.append(r)
            f1.append(token_f1(item.prediction, item.reference))
            per[item.template or "open"].append(r)
    return {
        "closed_accuracy": _mean(closed),
        "open_recall": _mean(recall),
        "open_token_f1": _mean(f1),
        "n_closed": len(closed),
        "n_open": len(recall),
        "per_template": {k: _mean(v) for k, v in sorted(per.items())},
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def paired_accuracy(results: Iterable[tuple[str, bool]]) -> tuple[float, int]:
    """ProbMed paired accuracy.

    Args:
        results: ``(pair_id, correct)`` for every probe question.

    Returns:
        ``(accuracy over pairs, number of pairs)``; a pair is right only if all its questions are.
    """
    pairs: dict[str, bool] = {}
    for pair_id, ok in results:
        pairs[pair_id] = pairs.get(pair_id, True) and ok
    if not pairs:
        return float("nan"), 0
    return sum(pairs.values()) / len(pairs), len(pairs)


def macro_f1(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Macro-averaged F1 over the classes present in the reference.

    Raises:
        ValueError: sequences of different lengths.
    """
    if len(predicted) != len(reference):
        raise ValueError("macro_f1: predicted and reference differ in length")
    classes = sorted(set(reference))
    if not classes:
        return float("nan")
    scores = []
    for c in classes:
        tp = sum(1 for p, r in zip(predicted, reference, strict=True) if p == c and r == c)
        fp = sum(1 for p, r in zip(predicted, reference, strict=True) if p == c and r != c)
        fn = sum(1 for p, r in zip(predicted, reference, strict=True) if p != c and r == c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def reportcheck_metrics(
    predicted: Sequence[tuple[bool, str]], reference: Sequence[tuple[bool, str]]
) -> dict[str, float | int]:
    """SIMPLE accuracy (error vs no error) and COMPLEX macro-F1 (type, ``no_error`` included).

    Args:
        predicted: parsed verdicts.
        reference: gold verdicts.

    Returns:
        ``simple_accuracy``, ``complex_macro_f1``, ``n``.
    """
    if len(predicted) != len(reference):
        raise ValueError("reportcheck_metrics: predicted and reference differ in length")
    simple = [p[0] == r[0] for p, r in zip(predicted, reference, strict=True)]
    types_p = [p[1] if p[0] else NO_ERROR for p in predicted]
    types_r = [r[1] if r[0] else NO_ERROR for r in reference]
    return {
        "simple_accuracy": _mean([float(s) for s in simple]),
        "complex_macro_f1": macro_f1(types_p, types_r),
        "n": len(reference),
    }
