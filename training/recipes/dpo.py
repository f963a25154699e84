"""DPO from preference pairs (chosen: the clinician-corrected answer; rejected: the model's answer).

The policy is the stage-2 model with its LoRA adapter trainable. The reference is the policy as
it started: a second, frozen copy of the same LoRA adapter (``reference``) on the same base model,
switched in for the reference pass, so the few-MB adapter is held twice and the model once. (The
adapter-disabled model would be the wrong reference: DPO's implicit reward is measured against the
model the preferences were collected from, the fine-tuned one, not the base language model.)
Loss: :func:`training.losses.dpo_loss` on summed answer log-probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.batching import answer_logprobs, on_device_of
from training.data import PreferencePair, QAExample, load_preferences
from training.losses import dpo_loss
from training.recipes.instruct_lora import ADAPTER_DIR
from training.recipes.llava_common import LlavaRecipe, LlavaRunConfig

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

POLICY_ADAPTER = "default"
REFERENCE_ADAPTER = "reference"


@contextmanager
def reference_adapter(peft_model: Any) -> Iterator[None]:
    """Within the block, ``peft_model`` runs the frozen reference adapter; afterwards the policy again.

    Args:
        peft_model: a ``PeftModel`` holding the ``default`` and ``reference`` adapters.
    """
    peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
    try:
        yield
    finally:
        peft_model.set_adapter(POLICY_ADAPTER)


@dataclass(frozen=True, kw_only=True)
class DPOConfig(LlavaRunConfig):
    """DPO run parameters.

    Attributes:
        preferences: JSONL of :class:`training.data.PreferencePair` records (images relative to
            ``data_dir``).
        beta: DPO inverse temperature.
        label_smoothing: conservative DPO smoothing.
    """

    preferences: str = ""
    beta: float = 0.1
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.preferences:
            raise ValueError("preferences (a JSONL of preference pairs) is required")


class DPORecipe(LlavaRecipe):
    """DPO (see module docstring); ``init_from`` is a stage-2 checkpoint with ``adapter/``."""

    cfg: DPOConfig

    def __init__(self, cfg: DPOConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.pairs: list[PreferencePair] = []

    def build(self) -> tuple[torch.nn.Module, int]:
        """Stage-2 model with its adapter loaded trainable, and again, frozen, as the reference."""
        from peft import PeftModel

        adapter = Path(self.cfg.init_from) / ADAPTER_DIR
        if not (adapter / "adapter_config.json").is_file():
            raise ValueError(
                f"DPO: {self.cfg.init_from} has no adapter/ (init_from must be a stage-2 checkpoint)"
            )
        base = self.build_base()
        model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
        model.load_adapter(str(adapter), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        model.set_adapter(POLICY_ADAPTER)
        self.pairs = load_preferences(Path(self.cfg.preferences), Path(self.cfg.data_dir))
        return model, len(self.pairs)

    def loss(self, model: torch.nn.Module, indices: list[int]) -> torch.Tensor:
        """DPO loss of the pairs at ``indices``; chosen and rejected share one forward pass."""
        import torch

        assert self.batcher is not None
        pairs = [self.pairs[i] for i in indices]
        examples = [QAExample(p.image, p.question, p.chosen) for p in pairs] * 2
        answers = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        batch = on_device_of(model, self.batcher(examples, answers))
        labels = batch.pop("labels")
        logps = answer_logprobs(model(**batch).logits, labels)
        peft_model: Any = self.model
        with torch.no_grad(), reference_adapter(peft_model):
            ref = answer_logprobs(peft_model(**batch).logits, labels)
        n = len(pairs)
        out = dpo_loss(
            logps[:n],
            logps[n:],
            ref[:n],
            ref[n:],
            beta=self.cfg.beta,
            label_smoothing=self.cfg.label_smoothing,
        )
        return out.loss

    def export(self, model: torch.nn.Module, folder: Path) -> None:
        """Write ``adapter/`` (peft: the policy adapter only) and the parts."""
        peft_model: Any = model
        peft_model.save_pretrained(str(folder / ADAPTER_DIR), selected_adapters=[POLICY_ADAPTER])
        self.export_parts(peft_model.get_base_model(), folder)
