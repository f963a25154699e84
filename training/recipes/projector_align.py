"""Stage 1: align the projector (LLaVA stage 1), vision tower and language model frozen.

Only the two-layer MLP projector learns, from captions and/or question-answer pairs of the train
split, with the LM loss on the answer tokens. ``init_from`` is a stage-0 checkpoint (its ViT) or a
stage-1 checkpoint (to continue).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.recipes.llava_common import LlavaRecipe, LlavaRunConfig

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class ProjectorAlignConfig(LlavaRunConfig):
    """Stage-1 run parameters (see :class:`LlavaRunConfig`).

    Attributes:
        train_vision: also fine-tune the vision tower (off in the LLaVA recipe).
    """

    train_vision: bool = False


class ProjectorAlignRecipe(LlavaRecipe):
    """Stage 1 (see module docstring)."""

    cfg: ProjectorAlignConfig

    def __init__(self, cfg: ProjectorAlignConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg

    def build(self) -> tuple[torch.nn.Module, int]:
        """Llava from the stage-0 parts; projector (and optionally ViT) trainable."""
        model = self.build_base()
        for p in model.model.multi_modal_projector.parameters():
            p.requires_grad_(True)
        if self.cfg.train_vision:
            for p in model.model.vision_tower.parameters():
                p.requires_grad_(True)
        self.examples = self.load_examples()
        return model, len(self.examples)

    def export(self, model: torch.nn.Module, folder: Path) -> None:
        """Write ``parts.safetensors`` + ``parts.json``."""
        self.export_parts(model, folder)
