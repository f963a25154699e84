"""Loss functions as pure functions of tensors (no model, no state)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DPOOutput:
    """Result of :func:`dpo_loss`.

    Attributes:
        loss: scalar mean loss.
        chosen_rewards: ``(B,)`` implicit rewards ``beta * (log pi - log ref)`` of the chosen answers.
        rejected_rewards: ``(B,)`` the same for the rejected answers.
    """

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """Direct Preference Optimization loss (Rafailov et al., 2023), with conservative label smoothing.

    ``h = (log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l))``;
    ``loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)``, averaged over the batch.

    Args:
        policy_chosen: ``(B,)`` summed log-probabilities of the chosen answers under the policy.
        policy_rejected: ``(B,)`` the same for the rejected answers.
        reference_chosen: ``(B,)`` chosen answers under the reference model (no gradient needed).
        reference_rejected: ``(B,)`` rejected answers under the reference model.
        beta: inverse temperature of the implicit reward (> 0).
        label_smoothing: probability ``eps`` in [0, 0.5) that a preference label is flipped.

    Returns:
        Loss and the implicit rewards.

    Raises:
        ValueError: on a non-positive beta, a smoothing outside [0, 0.5) or mismatched shapes.
    """
    import torch.nn.functional as F

    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"dpo_loss: log-probability tensors differ in shape: {sorted(shapes)}")
    h = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return DPOOutput(
        loss=losses.mean(),
        chosen_rewards=beta * (policy_chosen - reference_chosen).detach(),
        rejected_rewards=beta * (policy_rejected - reference_rejected).detach(),
    )


def answer_loss(
    logits: torch.Tensor, labels: torch.Tensor, *, per_example: bool, ignore_index: int = -100
) -> torch.Tensor:
    """Next-token cross-entropy on the labelled (answer) positions.

    ``per_example=False`` averages over every answer token of the batch, as Hugging Face models do,
    so an example with a ten-token answer weighs ten times a one-token "yes". ``per_example=True``
    first averages the tokens of each example, then the examples, so every question counts once
    whatever the length of its answer (examples without a labelled token are left out).

    Args:
        logits: ``(B, T, V)`` scores; position ``t`` predicts token ``t + 1``.
        labels: ``(B, T)`` token ids, ``ignore_index`` where there is no target.
        per_example: weigh examples equally instead of tokens.
        ignore_index: label value of the positions without a target.

    Returns:
        Scalar loss.

    Raises:
        ValueError: shapes disagree, or no position has a target.
    """
    import torch.nn.functional as F

    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        shapes = f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)}"
        raise ValueError(f"answer_loss: {shapes} do not match")
    shifted_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != ignore_index
    if not bool(mask.any()):
        raise ValueError("answer_loss: no labelled position in the batch")
    tokens = (
        F.cross_entropy(
            shifted_logits.reshape(-1, shifted_logits.shape[-1]),
            targets.masked_fill(~mask, 0).reshape(-1),
            reduction="none",
        ).view(targets.shape)
        * mask
    )
    if not per_example:
        return tokens.sum() / mask.sum()
    counts = mask.sum(dim=1)
    has = counts > 0
    return (tokens.sum(dim=1)[has] / counts[has]).mean()
