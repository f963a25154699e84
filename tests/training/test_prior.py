"""QuestionPrior: the most common training answer per question text, the overall one otherwise."""

from __future__ import annotations

import pytest

from training.eval.metrics import closed_correct, paired_accuracy
from training.eval.prior import QuestionPrior


def test_majority_per_question_with_ties_and_unseen_questions_falling_back() -> None:
    prior = QuestionPrior.fit(
        [
            ("Is the effusion on the left?", "yes"),
            ("is the effusion on the LEFT", "yes"),  # the same question once normalised
            ("Is the effusion on the left?", "no"),
            ("Is there a pneumothorax?", "no"),
            ("Is there a pneumothorax?", "no"),
            ("Is there a nodule?", "yes"),
            ("Is there a nodule?", "no"),  # a tie: no majority of its own
        ]
    )
    assert prior.fallback == "no"  # 4 of 7 answers overall
    assert prior.answer("Is the effusion on the left?") == "yes"
    assert prior.answer("Is there a pneumothorax?") == "no"
    assert prior.answer("Is there a nodule?") == "no"  # tie -> fallback
    assert prior.answer("Is the heart enlarged?") == "no"  # never seen -> fallback


def test_consistent_prior_wins_half_of_balanced_side_pairs() -> None:
    """Pairs ask the true side (yes) and the other side (no); training saw 'left' slightly more.
    The prior answers 'left? yes, right? no' every time: right on every left pair, wrong on every
    right pair — half of a balanced set, not the quarter of two independent coin flips."""
    train = [("Is the mass on the left?", "yes"), ("Is the mass on the right?", "no")] * 3
    train += [("Is the mass on the right?", "yes"), ("Is the mass on the left?", "no")] * 2
    prior = QuestionPrior.fit(train)
    pairs = [
        ("p1", "Is the mass on the left?", "yes"),
        ("p1", "Is the mass on the right?", "no"),
        ("p2", "Is the mass on the right?", "yes"),
        ("p2", "Is the mass on the left?", "no"),
    ]
    rows = [(pid, closed_correct(prior.answer(q), a)) for pid, q, a in pairs]
    assert paired_accuracy(rows) == (pytest.approx(0.5), 2)


def test_no_examples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no training examples"):
        QuestionPrior.fit([])
