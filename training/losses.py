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
