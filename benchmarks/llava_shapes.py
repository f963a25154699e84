"""The LLaVA-1.5-7B shapes the GPU benchmarks time (CLIP ViT-L/14 at 336 px + a Llama-2-7B LM).

Shared by ``gpu_decode.py`` and ``gpu_lora_7b.py`` so both measure the same model; ``tiny=True``
gives a 2-layer version of the same layout for checking the scripts on a CPU.
"""

from __future__ import annotations

from typing import Any


def llava_15_7b_config(tiny: bool) -> Any:
    """A ``LlavaConfig`` with LLaVA-1.5-7B shapes (or tiny ones); the last vocabulary id is ``<image>``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if tiny:
        vision = CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        )
        text = LlamaConfig(
            vocab_size=1024,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4096,
        )
    else:
        vision = CLIPVisionConfig(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        )
        text = LlamaConfig(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
        )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=text.vocab_size - 1,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
