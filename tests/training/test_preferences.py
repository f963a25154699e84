"""Preference mining: each wrong closed answer on the train split becomes a (reference, model) pair."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from training.data import QAExample
from training.preferences import closed_questions, mine_preferences, write_preferences


class _AlwaysYes:
    """Answers "yes" to everything, "" to every third question."""

    model_version = "fake"

    def answer(self, examples: Sequence[QAExample], *, blank: bool = False) -> list[str]:
        return ["" if i % 3 == 2 else "yes" for i in range(len(examples))]


def test_closed_questions_are_seeded_closed_and_never_from_test(tiny_data: Path) -> None:
    first = closed_questions(tiny_data, split="train", files=("vqa", "probes"), limit=30, seed=1)
    again = closed_questions(tiny_data, split="train", files=("vqa", "probes"), limit=30, seed=1)
    other = closed_questions(tiny_data, split="train", files=("vqa", "probes"), limit=30, seed=2)
    assert len(first) == 30 and [e.id for e in first] == [e.id for e in again] != [e.id for e in other]
    assert all(e.question_type == "closed" and e.image is not None for e in first)
    with pytest.raises(ValueError, match="held out"):
        closed_questions(tiny_data, split="test", files=("vqa",), limit=None, seed=0)
    with pytest.raises(ValueError, match="no closed questions"):
        closed_questions(tiny_data, split="train", files=("captions",), limit=None, seed=0)


def test_wrong_and_empty_answers_become_pairs(tiny_data: Path, tmp_path: Path) -> None:
    examples = closed_questions(tiny_data, split="train", files=("vqa", "probes"), limit=60, seed=0)
    mined = mine_preferences(cast(Any, _AlwaysYes()), tiny_data, examples)
    said = ["" if i % 3 == 2 else "yes" for i in range(len(examples))]
    wrong = [(e, s) for e, s in zip(examples, said, strict=True) if s == "" or e.answer != "yes"]
    assert mined.asked == 60 and len(mined.pairs) == len(wrong) > 0
    for pair, (example, s) in zip(mined.pairs, wrong, strict=True):
        assert pair["chosen"] == example.answer and pair["rejected"] == s
        assert example.image is not None and tiny_data / pair["image"] == example.image
    assert sum(mined.per_template.values()) == len(wrong)
    out = tmp_path / "prefs" / "preferences.jsonl"
    write_preferences(mined.pairs, out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == mined.pairs
