"""Stage 0: supervised multi-label pre-training of the ViT vision tower on catalogue findings.

Why: a small ViT + LM trained end to end from scratch on 64-px chest phantoms stayed at chance for 400
steps, while the same ViT first trained on the finding labels learned them within 300 steps (see
/work/shared/OFFLINE_ASSETS.md). No pretrained vision encoder is installable here, so the vision side
is trained first, CXR-LLaVA style (encoder pre-trained on labels, then aligned).

Model: ``CLIPVisionModel`` (the exact module Llava instantiates for its vision tower) + a linear head
applied to every patch feature of the last layer (the features the projector will see), pooled over
patches with log-sum-exp (a smooth max, multiple-instance style): a local finding must show in the
patch that holds it, which is what the projector needs, and its gradient is not diluted 1/P as with
mean pooling (with mean pooling a 3-layer ViT learned only global findings in 250 steps here).
Labels: finding ids plus categorical attributes (``lung_nodule:laterality=left``), see
:func:`training.data.finding_labels`. Loss: binary cross-entropy per label.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.builtin import PartsSpec, build_image_processor
from training.batching import on_device_of
from training.data import LabelledImage, PixelCache, load_labelled_images
from training.loop import Recipe, RunArgs

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

VISION_WEIGHTS = "vision.safetensors"
VISION_SPEC = "vision_spec.json"
LABELS_FILE = "labels.json"


def default_vision() -> dict[str, Any]:
    """The built-in model's ViT: 64 px, patch 8 (64 image tokens), hidden 128, 3 layers."""
    return {
        "image_size": 64,
        "patch_size": 8,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_channels": 3,
    }


@dataclass(frozen=True, kw_only=True)
class VisionPretrainConfig(RunArgs):
    """Stage-0 run parameters.

    Attributes:
        vision: ``CLIPVisionConfig`` keyword arguments.
        image_mean: normalisation mean (kept by the built-in image processor).
        image_std: normalisation standard deviation.
    """

    vision: dict[str, Any] = field(default_factory=default_vision)
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def spec(self) -> PartsSpec:
        """The parts structure this stage fixes for later stages."""
        return PartsSpec(
            vision_config=dict(self.vision), image_mean=self.image_mean, image_std=self.image_std
        )


def build_classifier(spec: PartsSpec, n_labels: int) -> torch.nn.Module:
    """ViT + per-patch linear head, log-sum-exp pooled over patches.

    Args:
        spec: vision structure.
        n_labels: output size.

    Returns:
        A module mapping ``pixel_values (B, 3, S, S)`` to logits ``(B, n_labels)``; its
        ``vision`` attribute is the ``CLIPVisionModel``.
    """
    import torch
    from transformers import AutoModel, CLIPVisionConfig

    class VisionClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision = AutoModel.from_config(CLIPVisionConfig(**spec.vision_config))
            self.head = torch.nn.Linear(int(spec.vision_config["hidden_size"]), n_labels)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            hidden = self.vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + P, H)
            per_patch = self.head(hidden[:, 1:, :])  # (B, P, L)
            logits: torch.Tensor = torch.logsumexp(per_patch, dim=1) - math.log(per_patch.shape[1])  # (B, L)
            return logits

    return VisionClassifier()


def label_matrix(items: list[LabelledImage], vocabulary: list[str]) -> torch.Tensor:
    """``(N, L)`` 0/1 targets of ``items`` over ``vocabulary`` (unknown labels ignored)."""
    import torch

    index = {label: i for i, label in enumerate(vocabulary)}
    targets = torch.zeros(len(items), len(vocabulary))
    for row, item in enumerate(items):
        for label in item.labels:
            if label in index:
                targets[row, index[label]] = 1.0
    return targets


class VisionPretrainRecipe(Recipe):
    """Stage 0 (see module docstring)."""

    cfg: VisionPretrainConfig

    def __init__(self, cfg: VisionPretrainConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.spec = cfg.spec()
        self.items: list[LabelledImage] = []
        self.vocabulary: list[str] = []
        self._targets: Any = None
        self._pixels: PixelCache | None = None

    def build(self) -> tuple[torch.nn.Module, int]:
        """Load the train split's labelled images and build the classifier."""
        self.items = load_labelled_images(Path(self.cfg.data_dir), "train")
        self.vocabulary = sorted({label for item in self.items for label in item.labels})
        if not self.vocabulary:
            raise ValueError("stage 0: the training split has no finding labels")
        self._targets = label_matrix(self.items, self.vocabulary)
        self._pixels = PixelCache(build_image_processor(self.spec))
        logger.info("stage 0: %d images, %d labels", len(self.items), len(self.vocabulary))
        return build_classifier(self.spec, len(self.vocabulary)), len(self.items)

    def loss(self, model: torch.nn.Module, indices: list[int]) -> torch.Tensor:
        """Mean binary cross-entropy over labels."""
        import torch

        assert self._pixels is not None
        pixels = self._pixels.get([self.items[i].image for i in indices])
        batch = on_device_of(model, {"pixels": pixels, "targets": self._targets[indices]})
        logits = model(batch["pixels"])
        loss: torch.Tensor = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"])
        return loss

    def export(self, model: torch.nn.Module, folder: Path) -> None:
        """Write ``vision.safetensors`` (the ViT alone), ``vision_spec.json`` and ``labels.json``."""
        from safetensors.torch import save_file

        vision = model.get_submodule("vision")
        save_file({k: v.contiguous() for k, v in vision.state_dict().items()}, str(folder / VISION_WEIGHTS))
        (folder / VISION_SPEC).write_text(self.spec.to_json())
        (folder / LABELS_FILE).write_text(json.dumps(self.vocabulary, indent=1))


def evaluate_classifier(checkpoint: Path, data_dir: Path, split: str = "val") -> dict[str, Any]:
    """Label accuracy of a stage-0 checkpoint on a held-out split (threshold 0.5).

    Args:
        checkpoint: a stage-0 checkpoint folder (``trainable.safetensors`` + ``labels.json``).
        data_dir: a phantoms folder.
        split: ``val`` or ``test``.

    Returns:
        ``label_accuracy``, ``finding_accuracy`` (finding-id labels only, not attributes),
        ``exact_match``, ``n``, per-finding ``sensitivity`` (share of positives detected) and
        ``attribute_accuracy``: for each attribute (``"pleural_effusion:laterality"``), over the
        studies where the finding is present with that attribute, how often the value with the
        highest logit is the true one (``side``, ``zone``, ``lobe``, ``severity``; chance is one
        over the number of values).
    """
    import torch
    from safetensors.torch import load_file

    spec = PartsSpec.from_file(checkpoint / VISION_SPEC)
    vocabulary = json.loads((checkpoint / LABELS_FILE).read_text())
    model = build_classifier(spec, len(vocabulary))
    model.load_state_dict(load_file(str(checkpoint / "trainable.safetensors")))
    model.eval()
    items = load_labelled_images(data_dir, split)
    targets = label_matrix(items, vocabulary)
    pixels = PixelCache(build_image_processor(spec))
    with torch.no_grad():
        logits = torch.cat(
            [model(pixels.get([it.image for it in items[i : i + 64]])) for i in range(0, len(items), 64)]
        )
    preds = (logits > 0).float()
    correct = preds == targets
    finding_cols = [i for i, label in enumerate(vocabulary) if ":" not in label]
    sensitivity: dict[str, float] = {}
    for col in finding_cols:
        positive = targets[:, col] == 1
        if bool(positive.any()):
            sensitivity[vocabulary[col]] = round(float(preds[positive, col].mean()), 3)
    return {
        "attribute_accuracy": attribute_accuracy(logits, targets, vocabulary),
        "label_accuracy": float(correct.float().mean()),
        "finding_accuracy": float(correct[:, finding_cols].float().mean()),
        "exact_match": float(correct.all(dim=1).float().mean()),
        "n": float(len(items)),
        "sensitivity": sensitivity,
    }


def attribute_accuracy(
    logits: torch.Tensor, targets: torch.Tensor, vocabulary: list[str]
) -> dict[str, float]:
    """Per ``finding:attribute``, the share of labelled studies whose highest-logit value is right.

    Args:
        logits: ``(N, L)`` classifier outputs.
        targets: ``(N, L)`` 0/1 labels.
        vocabulary: the ``L`` label names.

    Returns:
        ``{"pleural_effusion:laterality": 0.93, ...}`` for attributes with at least two values.
    """
    groups: dict[str, list[int]] = {}
    for col, label in enumerate(vocabulary):
        if ":" in label and "=" in label:
            groups.setdefault(label.rsplit("=", 1)[0], []).append(col)
    out: dict[str, float] = {}
    for name, cols in sorted(groups.items()):
        if len(cols) < 2:
            continue
        sub_targets, sub_logits = targets[:, cols], logits[:, cols]
        labelled = sub_targets.sum(dim=1) == 1
        if bool(labelled.any()):
            hit = sub_logits[labelled].argmax(dim=1) == sub_targets[labelled].argmax(dim=1)
            out[name] = round(float(hit.float().mean()), 3)
    return out
