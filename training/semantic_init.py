"""Initialise the Llava projector from the stage-0 label head and the LM's own word embeddings.

Why: built-in model 0.1.0 started stage 1 from a random projector, whose output the frozen language
model learned to treat as a constant soft prompt: it never used the image (docs/RESULTS.md,
"Diagnosis after the run"). The stage-0 head already says, for every patch, which labels show there
(findings, and their side, zone, lobe and size), because it is trained per patch
(:mod:`training.recipes.vision_pretrain`). This initialisation makes

- the first projector layer compute those per-patch label scores in its first ``L`` hidden units
  (GELU keeps the positive evidence and silences the absent labels), and
- the second layer write, for each label, the language model's embedding of the label's words
  (``"left pleural effusion"``), scaled so that strong evidence gives a vector of token-embedding size,

so an image token starts out as a soft bag of words for what its patch shows, something the language
model's attention can match against the words of a question. The remaining hidden units keep a
scaled-down random initialisation so other visual information can still be learned. The result is a
plain two-layer MLP projector: the checkpoint stays a standard ``LlavaForConditionalGeneration``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_prep.phantoms.phrases import LOBES, NAMES

if TYPE_CHECKING:
    import torch

HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"


def label_text(label: str, *, attribute_only: bool = False) -> str:
    """The words of a stage-0 label, as a question would say them.

    Args:
        label: ``"pleural_effusion"`` or ``"pleural_effusion:laterality=left"``.
        attribute_only: for an attribute label, the value's words alone (``"left"``).

    Returns:
        ``"pleural effusion"`` or ``"left pleural effusion"`` (``"left"`` with ``attribute_only``);
        lobes are spelled out (``"right upper lobe lung nodule"``).
    """
    finding, _, attribute = label.partition(":")
    name = NAMES.get(finding, finding.replace("_", " "))
    if not attribute:
        return name
    key, _, value = attribute.partition("=")
    if key == "lobe":
        value = LOBES.get(value, value.replace("_", " "))
    words = value.replace("_", " ")
    return words if attribute_only else f"{words} {name}"


def read_stage0_head(checkpoint: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The label vocabulary and the per-patch linear head of a stage-0 checkpoint.

    Raises:
        ValueError: the folder is not a stage-0 checkpoint with its head.
    """
    from safetensors.torch import load_file

    try:
        labels = [str(x) for x in json.loads((checkpoint / "labels.json").read_text())]
        weights = load_file(str(checkpoint / "trainable.safetensors"))
    except (OSError, ValueError) as e:
        raise ValueError(
            f"semantic init needs a stage-0 checkpoint with labels.json and its head: {e}"
        ) from e
    if HEAD_WEIGHT not in weights or HEAD_BIAS not in weights:
        raise ValueError(
            f"{checkpoint}: trainable.safetensors has no {HEAD_WEIGHT}/{HEAD_BIAS} (not stage 0)"
        )
    weight, bias = weights[HEAD_WEIGHT], weights[HEAD_BIAS]
    if weight.shape[0] != len(labels):
        raise ValueError(f"{checkpoint}: head has {weight.shape[0]} outputs for {len(labels)} labels")
    return labels, weight, bias


def label_embeddings(texts: Sequence[str], tokenizer: Any, embed: torch.Tensor) -> torch.Tensor:
    """Mean token embedding of each text, rescaled to the mean token-embedding norm.

    Args:
        texts: label words.
        tokenizer: the LM tokenizer.
        embed: ``(V, D)`` input-embedding matrix.

    Returns:
        ``(L, D)``.
    """
    import torch

    target = embed.norm(dim=-1).mean()
    rows = []
    for text in texts:
        ids = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        vector = embed[torch.tensor(ids)].mean(dim=0)
        rows.append(vector * (target / vector.norm().clamp_min(1e-6)))
    return torch.stack(rows)


def init_projector(
    projector: Any,
    head_weight: torch.Tensor,
    head_bias: torch.Tensor,
    targets: torch.Tensor,
    sample_features: torch.Tensor,
    *,
    rest_scale: float = 0.1,
    quantile: float = 0.5,
) -> float:
    """Overwrite a ``LlavaMultiModalProjector``'s weights in place (see module docstring).

    Args:
        projector: has ``linear_1`` (vision hidden -> D), an activation and ``linear_2`` (D -> D).
        head_weight: ``(L, H)`` stage-0 head.
        head_bias: ``(L,)``.
        targets: ``(L, D)`` embedding each label unit writes.
        sample_features: ``(N, P, H)`` vision features of some training images (to set the scale).
        rest_scale: factor on the default initialisation of the other hidden units.
        quantile: which quantile of the label evidence in the sample (each present label's
            strongest patch, activations above 0.1) is mapped to a target-sized vector.

    Returns:
        The activation scale used.

    Raises:
        ValueError: shapes disagree or there are more labels than hidden units.
    """
    import torch

    lin1, lin2 = projector.linear_1, projector.linear_2
    n_labels, hidden = head_weight.shape
    if (
        lin1.in_features != hidden
        or n_labels > lin1.out_features
        or targets.shape != (n_labels, lin2.out_features)
    ):
        raise ValueError(
            f"semantic init: head {tuple(head_weight.shape)}, targets {tuple(targets.shape)} do not fit "
            f"projector {lin1.in_features}->{lin1.out_features}->{lin2.out_features}"
        )
    with torch.no_grad():
        activation = projector.act(sample_features.float() @ head_weight.float().T + head_bias.float())
        strongest = activation.amax(dim=1).flatten()  # per image and label, its strongest patch
        evidence = strongest[strongest > 0.1]
        scale = float(torch.quantile(evidence if evidence.numel() else strongest, quantile).clamp_min(1e-3))
        lin1.weight.mul_(rest_scale)
        lin1.bias.mul_(rest_scale)
        lin1.weight[:n_labels] = head_weight.to(lin1.weight.dtype)
        lin1.bias[:n_labels] = head_bias.to(lin1.bias.dtype)
        lin2.weight.mul_(rest_scale)
        lin2.weight[:, :n_labels] = (targets.T / scale).to(lin2.weight.dtype)
        lin2.bias.zero_()
    return scale
