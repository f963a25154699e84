"""Assemble a standard Hugging Face ``LlavaForConditionalGeneration`` folder for the built-in model.

Architecture (LLaVA, Liu et al. 2023): a small CLIP-style ViT (``CLIPVisionConfig``), trained here on
synthetic chest phantoms, feeds its patch features (CLS dropped: ``vision_feature_select_strategy``
"default") through the two-layer GELU MLP projector into SmolLM2-135M-Instruct. The folder holds
``config.json``, ``model.safetensors`` and a ``LlavaProcessor`` (tokenizer with an ``<image>`` token,
``CLIPImageProcessor`` config, chat template), so it loads with ``AutoModelForImageTextToText`` +
``AutoProcessor`` and has the plain Llava + CLIP layout that vLLM serves.

The trained parts travel as ``parts.safetensors`` (vision tower and projector weights, keys prefixed
``vision_tower.`` and ``multi_modal_projector.``) plus ``parts.json`` (:class:`PartsSpec`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.builtin.errors import BuiltinError

if TYPE_CHECKING:
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
PARTS_WEIGHTS = "parts.safetensors"
PARTS_SPEC = "parts.json"
VISION_PREFIX = "vision_tower."
PROJECTOR_PREFIX = "multi_modal_projector."

# ChatML as SmolLM2 uses it, without SmolLM2's default system prompt (it costs ~20 tokens per sample
# and says nothing about images). Content may be a string or a list of {"type": "image"|"text"} items.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class PartsSpec:
    """Structure of the trained parts; written by training, read by :func:`build_llava`.

    Attributes:
        vision_config: keyword arguments of ``CLIPVisionConfig`` (hidden_size, num_hidden_layers, ...).
        image_mean: per-channel normalisation mean of the image processor.
        image_std: per-channel normalisation standard deviation.
        projector_hidden_act: activation of the MLP projector.
        vision_feature_layer: which ViT hidden state feeds the projector (-1: last).
        version: human-readable version of the trained parts, e.g. ``"0.1.0"``.
        synthetic_only: True when every training example was synthetic.
        extra: free-form provenance (training command, data seed, metrics file).
    """

    vision_config: dict[str, Any]
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    projector_hidden_act: str = "gelu"
    vision_feature_layer: int = -1
    version: str = "0.0.0"
    synthetic_only: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("image_size", "patch_size", "hidden_size"):
            if not isinstance(self.vision_config.get(key), int):
                raise ValueError(f"PartsSpec.vision_config needs an integer {key!r}")
        if self.vision_config["image_size"] % self.vision_config["patch_size"]:
            raise ValueError("PartsSpec: image_size must be a multiple of patch_size")

    @property
    def image_size(self) -> int:
        """Square input side in pixels."""
        return int(self.vision_config["image_size"])

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per image after the CLS token is dropped."""
        return (self.image_size // int(self.vision_config["patch_size"])) ** 2

    def to_json(self) -> str:
        """Serialise for ``parts.json``."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> PartsSpec:
        """Read ``parts.json``.

        Raises:
            BuiltinError: unreadable or invalid.
        """
        try:
            raw = json.loads(path.read_text())
            raw["image_mean"] = tuple(raw.get("image_mean", (0.5, 0.5, 0.5)))
            raw["image_std"] = tuple(raw.get("image_std", (0.5, 0.5, 0.5)))
            return cls(**raw)
        except (OSError, ValueError, TypeError) as e:
            raise BuiltinError(f"reading {path.name}: {e}") from e


def build_image_processor(spec: PartsSpec) -> Any:
    """The ``CLIPImageProcessor`` of the built-in model (resize, centre crop, RGB, normalise).

    Args:
        spec: structure of the trained parts (image size, normalisation).

    Returns:
        The image processor; ``(images, return_tensors="pt")["pixel_values"]`` is ``(B, 3, S, S)``.
    """
    from transformers import CLIPImageProcessor

    size = spec.image_size
    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_center_crop=True,
        do_convert_rgb=True,
        image_mean=list(spec.image_mean),
        image_std=list(spec.image_std),
    )


def build_processor(lm_dir: Path, spec: PartsSpec) -> LlavaProcessor:
    """Build the ``LlavaProcessor``: SmolLM2 tokenizer plus ``<image>``, CLIP image processor, template.

    Args:
        lm_dir: the converted SmolLM2 folder (holds the tokenizer).
        spec: structure of the trained parts (image size, normalisation).

    Returns:
        The processor; ``processor.tokenizer.convert_tokens_to_ids("<image>")`` is the image token id.
    """
    from transformers import AutoTokenizer, LlavaProcessor

    tokenizer = AutoTokenizer.from_pretrained(str(lm_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.padding_side = "left"
    return LlavaProcessor(
        image_processor=build_image_processor(spec),
        tokenizer=tokenizer,
        patch_size=int(spec.vision_config["patch_size"]),
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )


def build_llava(
    lm_dir: Path,
    spec: PartsSpec,
    parts: dict[str, torch.Tensor] | None = None,
    *,
    image_token_id: int,
    vocab_size: int,
    seed: int = 0,
) -> LlavaForConditionalGeneration:
    """Build the Llava model in float32 from the converted LM and (optionally) trained parts.

    The LM embedding matrix grows to ``vocab_size`` for the ``<image>`` token; the new rows are the
    mean of the existing ones (deterministic; image positions are replaced by image features anyway).

    Args:
        lm_dir: the converted SmolLM2 folder.
        spec: structure of the trained parts.
        parts: vision-tower and projector weights (``vision_tower.*``, ``multi_modal_projector.*``);
            None leaves them freshly initialised from ``seed`` (the start of training).
        image_token_id: id of ``<image>`` in the processor's tokenizer.
        vocab_size: the tokenizer's length.
        seed: seed of the initialisation of the untrained parts.

    Returns:
        The model, in eval mode.

    Raises:
        BuiltinError: the LM or the parts do not fit.
    """
    import torch
    from transformers import (
        AutoModelForCausalLM,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    try:
        lm = AutoModelForCausalLM.from_pretrained(str(lm_dir), dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise BuiltinError(f"loading converted SmolLM2 from {lm_dir}: {e}") from e
    text_config = lm.config
    lm_state = lm.state_dict()
    old_vocab = text_config.vocab_size
    if vocab_size < old_vocab:
        raise BuiltinError(
            f"assembling: tokenizer ({vocab_size}) is smaller than the LM vocabulary ({old_vocab})"
        )
    text_config.vocab_size = vocab_size
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**spec.vision_config),
        text_config=text_config,
        image_token_index=image_token_id,
        projector_hidden_act=spec.projector_hidden_act,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    embed = lm_state["model.embed_tokens.weight"]
    if vocab_size > old_vocab:
        extra = embed.mean(dim=0, keepdim=True).expand(vocab_size - old_vocab, -1)
        embed = torch.cat([embed, extra], dim=0)
    text_state = {k.removeprefix("model."): v for k, v in lm_state.items() if k.startswith("model.")}
    text_state["embed_tokens.weight"] = embed
    result = model.model.language_model.load_state_dict(text_state, strict=True)
    del result
    model.tie_weights()
    if parts is not None:
        load_parts(model, parts)
    model.eval()
    return model


def load_parts(model: LlavaForConditionalGeneration, parts: dict[str, torch.Tensor]) -> None:
    """Load ``vision_tower.*`` / ``multi_modal_projector.*`` weights into a Llava model (cast to float32).

    Args:
        model: the model.
        parts: the weights, all keys under the two prefixes, both modules complete.

    Raises:
        BuiltinError: a key is outside the prefixes or the shapes do not fit.
    """
    import torch

    vision = {k.removeprefix(VISION_PREFIX): v for k, v in parts.items() if k.startswith(VISION_PREFIX)}
    projector = {
        k.removeprefix(PROJECTOR_PREFIX): v for k, v in parts.items() if k.startswith(PROJECTOR_PREFIX)
    }
    if len(vision) + len(projector) != len(parts):
        raise BuiltinError("loading trained parts: keys outside vision_tower./multi_modal_projector.")
    try:
        model.model.vision_tower.load_state_dict({k: v.to(torch.float32) for k, v in vision.items()})
        model.model.multi_modal_projector.load_state_dict(
            {k: v.to(torch.float32) for k, v in projector.items()}
        )
    except RuntimeError as e:
        raise BuiltinError(f"loading trained parts: they do not fit parts.json: {e}") from e


def extract_parts(
    model: LlavaForConditionalGeneration, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The trained parts of a Llava model, keyed as in ``parts.safetensors``.

    Args:
        model: a model built by :func:`build_llava` (possibly trained).
        dtype: cast to this dtype (e.g. ``torch.float16`` for the committed copy); None keeps it.

    Returns:
        Contiguous tensors keyed ``vision_tower.*`` and ``multi_modal_projector.*``.
    """
    out: dict[str, torch.Tensor] = {}
    for prefix, module in (
        (VISION_PREFIX, model.model.vision_tower),
        (PROJECTOR_PREFIX, model.model.multi_modal_projector),
    ):
        for key, value in module.state_dict().items():
            tensor = value.detach().clone().contiguous()
            out[prefix + key] = tensor.to(dtype) if dtype is not None else tensor
    return out


def assemble(lm_dir: Path, weights_dir: Path, out_dir: Path) -> None:
    """Write the complete Llava folder (model + processor) into ``out_dir``.

    Args:
        lm_dir: the converted SmolLM2 folder.
        weights_dir: folder with ``parts.safetensors`` and ``parts.json``.
        out_dir: destination folder (created; existing files overwritten).

    Raises:
        BuiltinError: an input is missing or does not fit.
    """
    from safetensors.torch import load_file

    spec = PartsSpec.from_file(weights_dir / PARTS_SPEC)
    try:
        parts = load_file(str(weights_dir / PARTS_WEIGHTS))
    except (OSError, ValueError) as e:
        raise BuiltinError(f"reading {PARTS_WEIGHTS}: {e}") from e
    processor = build_processor(lm_dir, spec)
    tokenizer = processor.tokenizer
    model = build_llava(
        lm_dir,
        spec,
        parts,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vocab_size=len(tokenizer),
    )
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    processor.save_pretrained(str(out_dir))
    logger.info("assembled built-in Llava (%d image tokens) in %s", spec.num_image_tokens, out_dir)
