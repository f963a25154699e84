"""What stages 1, 2 and DPO share: building the Llava model from trained parts, and LM batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from medvlm.builtin import IMAGE_TOKEN, PartsSpec, build_llava, build_processor, extract_parts, load_parts
from training.batching import LlavaBatcher, on_device_of
from training.data import (
    PixelCache,
    QAExample,
    absent_finding_negatives,
    balance_templates,
    load_qa,
    reasoned,
)
from training.loop import Recipe, RunArgs
from training.losses import answer_loss

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PARTS_WEIGHTS = "parts.safetensors"
PARTS_SPEC = "parts.json"


@dataclass(frozen=True, kw_only=True)
class LlavaRunConfig(RunArgs):
    """Run parameters shared by the Llava stages.

    Attributes:
        init_from: checkpoint folder of the previous stage (stage 0: ``vision.safetensors``; later
            stages: ``parts.safetensors``).
        lm_dir: a Hugging Face causal-LM folder with tokenizer; None converts/reuses SmolLM2 under
            ``$MEDVLM_HOME`` (``medvlm.builtin.prepare_lm``).
        data_files: JSONL files of the train split to learn from (``vqa``, ``captions``).
        question_types: keep only these question types (empty: all).
        templates: keep only these templates or probe categories, e.g. ``existence`` (empty: all).
        max_answer_tokens: answers are cut to this many tokens.
        turns_per_image: 1 trains on single-turn examples. N > 1 groups the examples of each image
            and data file into multi-turn conversations of up to N turns (seeded random order), so
            one pass over the image tokens supervises up to N answers, and the answers to
            different questions about the same image are learned side by side; ``batch_size`` then
            counts conversations.
        per_template: 0 keeps every example. N > 0 gives each template of each data file exactly N
            examples (a seeded sample, or the examples repeated when there are fewer), so a mixed
            stage sees side, zone or size questions as often as the four times more numerous
            existence questions (:func:`training.data.balance_templates`).
        loss_per: ``token`` averages the loss over every answer token of a batch (the Hugging Face
            default: a ten-token open answer weighs ten one-token yes/no answers); ``example``
            averages within each example first, so every question counts once
            (:func:`training.losses.answer_loss`).
        probe_answers: ``short`` trains the data's own answers; ``reasoned`` trains yes/no
            questions about a stated attribute or position with the reading first ("It is in the
            upper zone, so no.", :func:`training.data.reasoned`).
        absent_negatives: with ``probes`` among ``data_files``, also train the side, size, zone and
            lobe probe questions about images where the finding is absent, answered "There is no
            <finding>, so no." (template ``absent_attribute``,
            :func:`training.data.absent_finding_negatives`).
    """

    init_from: str = ""
    lm_dir: str | None = None
    data_files: tuple[str, ...] = ("vqa",)
    question_types: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    max_answer_tokens: int = 32
    turns_per_image: int = 1
    per_template: int = 0
    loss_per: Literal["token", "example"] = "token"
    probe_answers: Literal["short", "reasoned"] = "short"
    absent_negatives: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.probe_answers not in ("short", "reasoned"):
            raise ValueError(f"probe_answers: {self.probe_answers!r} is not short|reasoned")
        if self.loss_per not in ("token", "example"):
            raise ValueError(f"loss_per: {self.loss_per!r} is not token|example")
        if self.per_template < 0:
            raise ValueError("per_template must be >= 0")
        if not self.init_from:
            raise ValueError("init_from (the previous stage's checkpoint) is required")
        if self.turns_per_image < 1:
            raise ValueError("turns_per_image must be >= 1")


def read_parts(folder: Path) -> tuple[PartsSpec, dict[str, torch.Tensor]]:
    """The parts structure and weights from a stage-0, stage-1/2 checkpoint or a built-in weights folder.

    Args:
        folder: holds ``parts.safetensors`` + ``parts.json``, or ``vision.safetensors`` +
            ``vision_spec.json`` (stage 0; the projector is then left untrained).

    Returns:
        The spec and a ``vision_tower.*`` / ``multi_modal_projector.*`` state dict (may lack the projector).

    Raises:
        ValueError: neither pair of files is there.
    """
    from safetensors.torch import load_file

    if (folder / PARTS_WEIGHTS).is_file():
        return PartsSpec.from_file(folder / PARTS_SPEC), load_file(str(folder / PARTS_WEIGHTS))
    if (folder / "vision.safetensors").is_file():
        vision = load_file(str(folder / "vision.safetensors"))
        return PartsSpec.from_file(folder / "vision_spec.json"), {
            f"vision_tower.{k}": v for k, v in vision.items()
        }
    raise ValueError(f"{folder}: no parts.safetensors or vision.safetensors (not a stage checkpoint)")


def group_by_image(examples: list[QAExample], turns: int, *, seed: int) -> list[list[QAExample]]:
    """Conversations of up to ``turns`` examples about one image each, in a seeded random order.

    Args:
        examples: single-turn examples (all with images).
        turns: the most turns per conversation.
        seed: order of the turns within each image.

    Returns:
        The conversations, images in first-seen order.
    """
    import random

    by_image: dict[Path | None, list[QAExample]] = {}
    for example in examples:
        by_image.setdefault(example.image, []).append(example)
    rng = random.Random(seed)
    out: list[list[QAExample]] = []
    for group in by_image.values():
        order = list(group)
        rng.shuffle(order)
        out += [order[i : i + turns] for i in range(0, len(order), turns)]
    return out


class LlavaRecipe(Recipe):
    """Base of the Llava stages: model from the previous stage, LM loss on answers."""

    cfg: LlavaRunConfig

    def __init__(self, cfg: LlavaRunConfig) -> None:
        super().__init__(cfg)
        self.cfg = cfg
        self.examples: list[QAExample] = []
        self.conversations: list[list[QAExample]] = []
        self.processor: Any = None
        self.batcher: LlavaBatcher | None = None
        self.spec: PartsSpec | None = None

    def lm_dir(self) -> Path:
        """The language-model folder (converted SmolLM2 unless configured)."""
        if self.cfg.lm_dir:
            return Path(self.cfg.lm_dir)
        from medvlm.builtin import prepare_lm

        return prepare_lm()

    def build_base(self) -> Any:
        """The Llava model with the previous stage's parts loaded, everything frozen.

        Returns:
            ``LlavaForConditionalGeneration`` with ``requires_grad`` False everywhere.
        """
        spec, parts = read_parts(Path(self.cfg.init_from))
        lm_dir = self.lm_dir()
        self.spec = spec
        self.processor = build_processor(lm_dir, spec)
        tokenizer = self.processor.tokenizer
        projector_missing = not any(k.startswith("multi_modal_projector.") for k in parts)
        model = build_llava(
            lm_dir,
            spec,
            None,
            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            vocab_size=len(tokenizer),
            seed=self.cfg.seed,
        )
        current = extract_parts(model)
        if projector_missing:
            parts = {**{k: v for k, v in current.items() if k.startswith("multi_modal_projector.")}, **parts}
        load_parts(model, parts)
        for p in model.parameters():
            p.requires_grad_(False)
        self.batcher = LlavaBatcher(
            self.processor,
            PixelCache(self.processor.image_processor),
            spec.num_image_tokens,
            self.cfg.max_answer_tokens,
        )
        return model

    def load_examples(self) -> list[QAExample]:
        """The train split's examples from ``data_files``, filtered by ``question_types`` and ``templates``.

        With ``turns_per_image > 1`` also fills ``self.conversations`` (see :class:`LlavaRunConfig`).
        """
        examples: list[QAExample] = []
        self.conversations = []
        for name in self.cfg.data_files:
            found = load_qa(Path(self.cfg.data_dir), "train", (name,))
            if name == "probes" and self.cfg.absent_negatives:
                found += absent_finding_negatives(Path(self.cfg.data_dir), "train", seed=self.cfg.seed)
            if self.cfg.question_types:
                found = [e for e in found if e.question_type in self.cfg.question_types]
            if self.cfg.templates:
                found = [e for e in found if e.template in self.cfg.templates]
            if self.cfg.per_template:
                found = balance_templates(found, self.cfg.per_template, seed=self.cfg.seed)
            if self.cfg.probe_answers == "reasoned":
                found = [reasoned(e) for e in found]
            examples += found
            if self.cfg.turns_per_image > 1:
                self.conversations += group_by_image(found, self.cfg.turns_per_image, seed=self.cfg.seed)
        if not examples:
            raise ValueError(f"{type(self).__name__}: no training examples in {self.cfg.data_dir}")
        return examples

    def units(self) -> int:
        """How many training units the index stream draws from: examples or conversations."""
        return len(self.conversations) if self.cfg.turns_per_image > 1 else len(self.examples)

    def loss(self, model: torch.nn.Module, indices: list[int]) -> torch.Tensor:
        """Next-token cross-entropy on the answers, averaged as ``loss_per`` says."""
        assert self.batcher is not None
        if self.cfg.turns_per_image > 1:
            batch = self.batcher.conversations([self.conversations[i] for i in indices])
        else:
            batch = self.batcher([self.examples[i] for i in indices])
        batch = on_device_of(model, batch)
        if self.cfg.loss_per == "token":
            loss: torch.Tensor = model(**batch).loss
            return loss
        labels = batch.pop("labels")
        return answer_loss(model(**batch).logits, labels, per_example=True)

    def export_parts(self, llava: Any, folder: Path) -> None:
        """Write ``parts.safetensors`` (float32) and ``parts.json`` of the current model."""
        from safetensors.torch import save_file

        assert self.spec is not None
        save_file(extract_parts(llava), str(folder / PARTS_WEIGHTS))
        (folder / PARTS_SPEC).write_text(self.spec.to_json())
