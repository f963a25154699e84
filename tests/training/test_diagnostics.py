"""The diagnostics that say whether a model or vision tower knows attributes."""

from __future__ import annotations

from pathlib import Path

import torch

from training.data import QAExample
from training.diagnose import answer_choices
from training.recipes.vision_pretrain import attribute_accuracy

VOCAB = [
    "pleural_effusion",
    "pleural_effusion:laterality=left",
    "pleural_effusion:laterality=right",
    "lung_nodule",
    "lung_nodule:zone=upper",
    "lung_nodule:zone=middle",
    "lung_nodule:zone=lower",
    "pneumothorax:severity=small",
]


def test_attribute_accuracy_compares_values_of_one_attribute_only_where_labelled() -> None:
    targets = torch.zeros(3, len(VOCAB))
    logits = torch.zeros(3, len(VOCAB))
    targets[0, [0, 1]] = 1  # left effusion, predicted left
    logits[0, 1], logits[0, 2] = 2.0, 1.0
    targets[1, [0, 2]] = 1  # right effusion, predicted left
    logits[1, 1], logits[1, 2] = 0.5, -0.5
    targets[2, [3, 6]] = 1  # lower nodule, predicted lower; the large effusion logit is ignored
    logits[2, 6], logits[2, 1] = 1.0, 9.0
    result = attribute_accuracy(logits, targets, VOCAB)
    assert result == {"pleural_effusion:laterality": 0.5, "lung_nodule:zone": 1.0}


def test_answer_choices_use_options_letters_or_yes_no() -> None:
    image = Path("x.png")
    assert answer_choices(QAExample(image, "Is there X?", "yes", "closed")) == ("yes", "no")
    side = QAExample(image, "Which side?", "left", "closed", options=("left", "right"))
    assert answer_choices(side) == ("left", "right")
    mc = QAExample(image, "Which?", "C", "closed", options=("a", "b", "c", "d"))
    assert answer_choices(mc) == ("A", "B", "C", "D")
