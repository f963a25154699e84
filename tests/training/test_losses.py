"""Losses as pure functions: DPO (known values, sign, smoothing, argument checks) and the answer loss."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import answer_loss, dpo_loss


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_no_preference_change_gives_log_two() -> None:
    out = dpo_loss(_t(-3.0, -1.0), _t(-2.0, -5.0), _t(-3.0, -1.0), _t(-2.0, -5.0), beta=0.5)
    assert out.loss.item() == pytest.approx(math.log(2))
    assert torch.equal(out.chosen_rewards, _t(0.0, 0.0))


def test_known_value() -> None:
    # h = (pc - pr) - (rc - rr) = (-1 - -3) - (-2 - -2) = 2; beta = 0.5 -> -log sigmoid(1)
    out = dpo_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), beta=0.5)
    assert out.loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))
    assert out.chosen_rewards.item() == pytest.approx(0.5)
    assert out.rejected_rewards.item() == pytest.approx(-0.5)


def test_sign_lower_loss_when_policy_prefers_chosen() -> None:
    ref_c, ref_r = _t(-2.0), _t(-2.0)
    better = dpo_loss(_t(-1.0), _t(-3.0), ref_c, ref_r).loss
    worse = dpo_loss(_t(-3.0), _t(-1.0), ref_c, ref_r).loss
    assert better < math.log(2) < worse


def test_gradient_raises_chosen_and_lowers_rejected() -> None:
    chosen = _t(-2.0).requires_grad_(True)
    rejected = _t(-2.0).requires_grad_(True)
    dpo_loss(chosen, rejected, _t(-2.0), _t(-2.0)).loss.backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert chosen.grad.item() < 0 < rejected.grad.item()


def test_label_smoothing_mixes_both_directions() -> None:
    args = (_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0))
    plain = dpo_loss(*args, beta=1.0).loss.item()
    flipped = dpo_loss(args[1], args[0], args[3], args[2], beta=1.0).loss.item()
    smooth = dpo_loss(*args, beta=1.0, label_smoothing=0.2).loss.item()
    assert smooth == pytest.approx(0.8 * plain + 0.2 * flipped)


@pytest.mark.parametrize("kwargs", [{"beta": 0.0}, {"label_smoothing": 0.5}, {"label_smoothing": -0.1}])
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        dpo_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), **kwargs)


def test_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        dpo_loss(_t(0.0, 1.0), _t(0.0), _t(0.0), _t(0.0))


def _answers() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.full((2, 6), -100)
    labels[0, 4] = 3  # one answer token ("yes")
    labels[1, 1:5] = torch.tensor([1, 2, 5, 7])  # four answer tokens
    return logits, labels


def test_answer_loss_per_token_equals_the_hugging_face_loss() -> None:
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits, labels = _answers()
    expected = ForCausalLMLoss(logits, labels, vocab_size=11)
    assert torch.allclose(answer_loss(logits, labels, per_example=False), expected, atol=1e-6)


def test_answer_loss_per_example_weighs_each_question_once() -> None:
    import torch.nn.functional as F

    logits, labels = _answers()
    short = F.cross_entropy(logits[0, 3:4], labels[0, 4:5])
    long = F.cross_entropy(logits[1, 0:4], labels[1, 1:5])
    per_example = answer_loss(logits, labels, per_example=True)
    assert torch.allclose(per_example, (short + long) / 2, atol=1e-6)
    assert not torch.allclose(per_example, answer_loss(logits, labels, per_example=False))


def test_answer_loss_skips_examples_without_answer_and_rejects_empty_batches() -> None:
    logits, labels = _answers()
    labels[1] = -100
    assert torch.allclose(
        answer_loss(logits, labels, per_example=True), answer_loss(logits, labels, per_example=False)
    )
    with pytest.raises(ValueError, match="no labelled position"):
        answer_loss(logits, torch.full((2, 6), -100), per_example=True)
    with pytest.raises(ValueError, match="do not match"):
        answer_loss(logits, labels[:, :5], per_example=True)
