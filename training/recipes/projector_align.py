"""Stage 1: align the projector (LLaVA stage 1), vision tower and language model frozen.

Only the two-layer MLP projector learns, from captions and/or question-answer pairs of the train
split, with the LM loss on the answer tokens. ``init_from`` is a stage-0 checkpoint (its ViT) or a
stage-1 checkpoint (to continue).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.recipes.llava_common import LlavaRecipe, LlavaRunConfig

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ProjectorAlignConfig(LlavaRunConfig):
    """Stage-1 run parameters (see :class:`LlavaRunConfig`).

    Attributes:
        train_vision: also fine-tune the vision tower (off in the LLaVA recipe).
        semantic_init: when ``init_from`` is a stage-0 checkpoint, start the projector from its
            per-patch label head and the LM's embeddings of the label words
            (:mod:`training.semantic_init`) instead of a random projector.
        semantic_words: what an attribute label's unit writes: ``"phrase"``, the words of the
            whole label (``"left pleural effusion"``), or ``"attribute"``, the attribute's value
            alone (``"left"``), so that a patch's token adds up to the finding's name plus each of
            its attributes at full weight instead of an average that dilutes the side four-fold.
    """

    train_vision: bool = False
    semantic_init: bool = False
    semantic_words: Literal["phrase", "attribute"] = "phrase"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.semantic_words not in ("phrase", "attribute"):
            raise ValueError(f"semantic_words: {self.semantic_words!r} is not phrase|attribute")


class ProjectorAlignRecipe(LlavaRecipe):
    """Stage 1 (see module docstring)."""

    cfg: ProjectorAlignConfig

    def __init__(self, cfg: ProjectorAlignConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg

    def build(self) -> tuple[torch.nn.Module, int]:
        """Llava from the stage-0 parts; projector (and optionally ViT) trainable."""
        model = self.build_base()
        if self.cfg.semantic_init:
            self._semantic_init(model)
        for p in model.model.multi_modal_projector.parameters():
            p.requires_grad_(True)
        if self.cfg.train_vision:
            for p in model.model.vision_tower.parameters():
                p.requires_grad_(True)
        self.examples = self.load_examples()
        return model, self.units()

    def _semantic_init(self, model: Any) -> None:
        """Projector from the stage-0 head (see :mod:`training.semantic_init`); logs the scale."""
        import torch

        from training.data import PixelCache, load_labelled_images
        from training.semantic_init import init_projector, label_embeddings, label_text, read_stage0_head

        labels, weight, bias = read_stage0_head(Path(self.cfg.init_from))
        targets = label_embeddings(
            [label_text(x, attribute_only=self.cfg.semantic_words == "attribute") for x in labels],
            self.processor.tokenizer,
            model.get_input_embeddings().weight,
        )
        images = [item.image for item in load_labelled_images(Path(self.cfg.data_dir), "train")[:64]]
        pixels = PixelCache(self.processor.image_processor).get(images)
        with torch.no_grad():
            features = model.model.vision_tower(pixels).last_hidden_state[:, 1:]
        scale = init_projector(model.model.multi_modal_projector, weight, bias, targets, features)
        logger.info(
            "stage 1: semantic projector init from %d stage-0 labels (scale %.3f)", len(labels), scale
        )

    def export(self, model: torch.nn.Module, folder: Path) -> None:
        """Write ``parts.safetensors`` + ``parts.json``."""
        self.export_parts(model, folder)
