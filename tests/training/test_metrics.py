"""Evaluation metric functions on hand-made predictions."""

from __future__ import annotations

import math

import pytest

from training.eval.metrics import (
    Scored,
    closed_correct,
    macro_f1,
    open_recall,
    paired_accuracy,
    reportcheck_metrics,
    token_f1,
    vqa_metrics,
)


@pytest.mark.parametrize(
    ("prediction", "reference", "options", "expected"),
    [
        ("Yes.", "yes", (), True),
        ("yes, there is an effusion", "yes", (), True),
        ("No", "yes", (), False),
        ("There is no effusion.", "no", (), True),
        ("", "no", (), False),
        ("B) cardiomegaly", "B", (), True),
        ("A", "B", (), False),
        ("A", "A", (), True),  # "a" is also an article: the letter is read before articles are dropped
        ("a) pleural effusion", "A", (), True),
        ("B", "A", (), False),
        ("", "A", (), False),
        ("left", "left", ("left", "right"), True),
        ("on the left side", "left", ("left", "right"), True),
        ("left or right", "left", ("left", "right"), False),
        ("right middle lobe", "right middle lobe", (), True),
        ("the right upper lobe", "right middle lobe", (), False),
    ],
)
def test_closed_correct(prediction: str, reference: str, options: tuple[str, ...], expected: bool) -> None:
    assert closed_correct(prediction, reference, options) is expected


def test_open_recall_and_f1() -> None:
    assert open_recall("a small left pleural effusion", "left pleural effusion") == 1.0
    assert open_recall("cardiomegaly", "left pleural effusion") == 0.0
    assert open_recall("left effusion", "left pleural effusion") == pytest.approx(2 / 3)
    assert token_f1("left effusion", "left pleural effusion") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_vqa_metrics_split_closed_and_open() -> None:
    items = [
        Scored("closed", "existence", "yes", "yes"),
        Scored("closed", "existence", "yes", "no"),
        Scored("closed", "laterality", "left", "left", ("left", "right")),
        Scored("open", "modality", "chest radiograph", "chest radiograph"),
        Scored("open", "findings", "cardiomegaly", "cardiomegaly, pleural effusion"),
    ]
    m = vqa_metrics(items)
    assert m["closed_accuracy"] == pytest.approx(2 / 3)
    assert m["open_recall"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["n_closed"] == 3 and m["n_open"] == 2
    per = m["per_template"]
    assert isinstance(per, dict) and per["existence"] == 0.5 and per["laterality"] == 1.0


def test_vqa_metrics_empty_is_nan() -> None:
    m = vqa_metrics([])
    assert math.isnan(float(m["closed_accuracy"]))  # type: ignore[arg-type]


def test_paired_accuracy_needs_both_right() -> None:
    rows = [("p1", True), ("p1", True), ("p2", True), ("p2", False), ("p3", False), ("p3", False)]
    assert paired_accuracy(rows) == (pytest.approx(1 / 3), 3)
    # a model answering "yes" to everything gets every pair wrong
    always_yes = [("a", True), ("a", False), ("b", True), ("b", False)]
    assert paired_accuracy(always_yes)[0] == 0.0
    assert math.isnan(paired_accuracy([])[0])


def test_macro_f1_and_reportcheck() -> None:
    assert macro_f1(["a", "a", "b"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        macro_f1(["a"], [])
    predicted = [(True, "negation_flip"), (False, "no_error"), (True, "unknown"), (False, "no_error")]
    reference = [
        (True, "negation_flip"),
        (False, "no_error"),
        (True, "wrong_laterality"),
        (True, "omitted_finding"),
    ]
    m = reportcheck_metrics(predicted, reference)
    assert m["simple_accuracy"] == 0.75 and m["n"] == 4
    # classes in reference: negation_flip (F1 1), no_error (F1 2/3), wrong_laterality (0), omitted (0)
    assert m["complex_macro_f1"] == pytest.approx((1 + 2 / 3 + 0 + 0) / 4)
