"""Stage 2: instruction tuning with LoRA (Hu et al., 2021) on the language model, plus the projector.

LoRA adapters go on the attention projections of the language model only (a regular expression
keeps them off the vision tower, which has ``q_proj`` layers too); the projector stays trainable.
Checkpoints export the LoRA adapter in peft format (``adapter/``) and the parts (with the updated
projector) as ``parts.safetensors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.recipes.llava_common import LlavaRecipe, LlavaRunConfig

if TYPE_CHECKING:
    import torch

ADAPTER_DIR = "adapter"


@dataclass(frozen=True, kw_only=True)
class LoraArgs:
    """LoRA structure.

    Attributes:
        r: rank.
        alpha: scaling numerator (scale = alpha / r).
        dropout: dropout on the LoRA input.
        targets: language-model module names to adapt.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        if self.r < 1 or not self.targets or not 0 <= self.dropout < 1:
            raise ValueError("LoraArgs: need r >= 1, some targets and 0 <= dropout < 1")

    def peft_config(self) -> Any:
        """The ``peft.LoraConfig`` restricted to the language model."""
        from peft import LoraConfig

        pattern = r".*language_model.*\.(" + "|".join(self.targets) + r")"
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=pattern)


@dataclass(frozen=True, kw_only=True)
class InstructLoraConfig(LlavaRunConfig):
    """Stage-2 run parameters (see :class:`LlavaRunConfig`).

    Attributes:
        lora: adapter structure.
        train_projector: keep the projector trainable.
        train_vision: also train the vision tower (end to end with the adapter), so its patch
            features can change to make what the language model must read (which finding is on
            which side, in which zone) easier to tell apart; the exported parts then carry it.
        vision_lr_scale: the vision tower's learning rate as a multiple of ``optim.lr`` (with
            ``train_vision``): at the adapter's rate the small ViT's features moved so fast that the
            loss jumped fourfold in 20 steps and stayed high (docs/RESULTS.md, candidate d1).
        projector_lr_scale: the projector's learning rate as a multiple of ``optim.lr`` (with
            ``train_projector``).
    """

    lora: LoraArgs = field(default_factory=LoraArgs)
    train_projector: bool = True
    train_vision: bool = False
    vision_lr_scale: float = 1.0
    projector_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vision_lr_scale <= 0 or self.projector_lr_scale <= 0:
            raise ValueError("vision_lr_scale and projector_lr_scale must be > 0")


class InstructLoraRecipe(LlavaRecipe):
    """Stage 2 (see module docstring)."""

    cfg: InstructLoraConfig

    def __init__(self, cfg: InstructLoraConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg

    def build(self) -> tuple[torch.nn.Module, int]:
        """Llava from the previous stage's parts, with a fresh LoRA adapter, or with the previous
        stage's adapter (``init_from/adapter``) trainable again, to continue a curriculum."""
        from peft import PeftModel, get_peft_model

        base = self.build_base()
        previous = Path(self.cfg.init_from) / ADAPTER_DIR
        if (previous / "adapter_config.json").is_file():
            model = PeftModel.from_pretrained(base, str(previous), is_trainable=True)
        else:
            model = get_peft_model(base, self.cfg.lora.peft_config())
        if self.cfg.train_projector:
            for p in base.model.multi_modal_projector.parameters():
                p.requires_grad_(True)
        if self.cfg.train_vision:
            for p in base.model.vision_tower.parameters():
                p.requires_grad_(True)
        self.examples = self.load_examples()
        return model, self.units()

    def lr_scales(self) -> dict[str, float]:
        """The vision tower and the projector at their scales of the adapter's rate, when they train."""
        scales: dict[str, float] = {}
        if self.cfg.train_vision and self.cfg.vision_lr_scale != 1.0:
            scales["vision_tower."] = self.cfg.vision_lr_scale
        if self.cfg.train_projector and self.cfg.projector_lr_scale != 1.0:
            scales["multi_modal_projector."] = self.cfg.projector_lr_scale
        return scales

    def export(self, model: torch.nn.Module, folder: Path) -> None:
        """Write ``adapter/`` (peft) and ``parts.safetensors`` + ``parts.json``."""
        peft_model: Any = model
        peft_model.save_pretrained(str(folder / ADAPTER_DIR))
        self.export_parts(peft_model.get_base_model(), folder)
