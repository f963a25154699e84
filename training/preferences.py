"""Preference pairs mined from a model's own mistakes, for DPO before any clinician has corrected it.

In deployment the pairs come from approved clinician corrections (``medvlm db export-preferences``:
chosen = the corrected answer, rejected = the model's answer). For the built-in model, trained on
synthetic studies whose answers are known, the same pairs can be written without a clinician: the
model answers closed questions of the **train** split by greedy generation, and each wrong answer
becomes a pair with the reference answer as chosen. This is the "simulated correction" setting of
the hallucination-DPO papers (the rejected answers are the model's own hallucinations), and the
record format is the export's, so the DPO recipe reads both alike.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_prep.atomic import write_atomic
from training.data import QAExample, load_qa
from training.eval.metrics import closed_correct

if TYPE_CHECKING:
    from training.eval.runner import Answerer


@dataclass(frozen=True)
class MinedPreferences:
    """What :func:`mine_preferences` found.

    Attributes:
        pairs: preference records (``image`` relative to the data folder, ``question``, ``chosen``,
            ``rejected``, plus ``template`` and ``source_id`` for the record's provenance).
        asked: how many questions the model answered.
        per_template: wrong answers per template.
    """

    pairs: list[dict[str, str]]
    asked: int
    per_template: dict[str, int]


def closed_questions(
    data_dir: Path, *, split: str, files: Sequence[str], limit: int | None, seed: int
) -> list[QAExample]:
    """Closed questions with images from ``files`` of ``split``, in a seeded random order, at most ``limit``.

    Raises:
        ValueError: ``split`` is ``test`` (held out for evaluation) or no question is found.
    """
    if split == "test":
        raise ValueError("mining preferences: the test split is held out for evaluation; use train or val")
    examples = [
        e
        for name in files
        for e in load_qa(data_dir, split, (name,))
        if e.question_type == "closed" and e.image is not None
    ]
    if not examples:
        raise ValueError(f"mining preferences: no closed questions with images in {data_dir} ({split})")
    random.Random(seed).shuffle(examples)
    return examples[:limit] if limit else examples


def mine_preferences(answerer: Answerer, data_dir: Path, examples: Sequence[QAExample]) -> MinedPreferences:
    """Ask ``answerer`` every question; each wrong answer becomes a preference pair.

    An empty answer is wrong too: its pair prefers the reference to saying nothing.

    Args:
        answerer: the model whose mistakes are mined.
        data_dir: the phantoms folder the image paths are made relative to.
        examples: closed questions (:func:`closed_questions`).

    Returns:
        The pairs and counts.
    """
    predictions = answerer.answer(list(examples))
    pairs: list[dict[str, str]] = []
    per_template: dict[str, int] = {}
    root = data_dir.resolve()
    for example, prediction in zip(examples, predictions, strict=True):
        rejected = prediction.strip()
        if rejected and closed_correct(rejected, example.answer, example.options):
            continue
        assert example.image is not None
        pairs.append(
            {
                "image": str(example.image.resolve().relative_to(root)),
                "question": example.question,
                "chosen": example.answer,
                "rejected": rejected,
                "template": example.template,
                "source_id": example.id,
            }
        )
        per_template[example.template] = per_template.get(example.template, 0) + 1
    return MinedPreferences(pairs, len(examples), per_template)


def write_preferences(pairs: Sequence[dict[str, Any]], path: Path) -> None:
    """Write the pairs as JSONL, atomically (a crash leaves the old file or none)."""
    write_atomic(path, "".join(json.dumps(p, sort_keys=True) + "\n" for p in pairs).encode())
