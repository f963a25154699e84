"""Load a local Hugging Face image-text-to-text checkpoint, strictly offline.

Supported families (``model_type`` in ``config.json``): LLaVA-1.5 (``llava``), LLaVA-NeXT
(``llava_next``), Qwen2-VL / Qwen2.5-VL (``qwen2_vl``, ``qwen2_5_vl``), Gemma 3 (``gemma3``) and
Idefics3 / SmolVLM (``idefics3``, ``smolvlm``), all through ``AutoModelForImageTextToText`` and
``AutoProcessor`` with ``local_files_only=True``. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medvlm.errors import ModelLoadError

logger = logging.getLogger(__name__)

Quantize = Literal["8bit", "4bit"]

# model_type -> whether the family takes several images in one prompt (else a montage is sent).
# LLaVA-1.5 and LLaVA-NeXT were trained on one image per conversation.
SUPPORTED_FAMILIES: dict[str, bool] = {
    "llava": False,
    "llava_next": False,
    "qwen2_vl": True,
    "qwen2_5_vl": True,
    "gemma3": True,
    "idefics3": True,
    "smolvlm": True,
}
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
FULL_HASH_LIMIT = 2 * 1024**3  # above this, weights are hashed by sampled chunks (see weights_hash)
DEFAULT_CPU_THREADS = 1  # measured: benchmarks/bench_generation.py, docs/BENCHMARKS.md "## Generation"


@dataclass
class LoadedModel:
    """A model and its processor, ready to generate.

    Attributes:
        model: the ``PreTrainedModel`` (a ``PeftModel`` around it once an adapter is loaded).
        processor: the model's ``ProcessorMixin`` (chat template, image processor, tokenizer).
        family: ``model_type`` of the checkpoint.
        multi_image: whether several images go into one prompt.
        model_version: ``<folder name>@<12 hex of the weights' hash>``.
        device: ``cpu`` or ``cuda``.
        dtype: torch dtype name (``float32``, ``bfloat16``).
        adapters: adapter name -> version, for the adapters attached (see ``medvlm.adapters``).
        active_adapter: the adapter answering now, None for the base model.
    """

    model: Any
    processor: Any
    family: str
    multi_image: bool
    model_version: str
    device: str
    dtype: str
    adapters: dict[str, str] = field(default_factory=dict)
    active_adapter: str | None = None

    @property
    def adapter_version(self) -> str | None:
        """Version of the active adapter, None when the base model answers."""
        return self.adapters.get(self.active_adapter) if self.active_adapter else None


def check_model_dir(model_dir: Path) -> str:
    """Check that a folder holds a complete supported checkpoint, before importing transformers.

    Args:
        model_dir: the checkpoint folder.

    Returns:
        The checkpoint's ``model_type``.

    Raises:
        ModelLoadError: when the folder is missing, lacks config / weights / processor / tokenizer
            files, or holds an unsupported family.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(f"model folder {model_dir} does not exist or is not a folder")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelLoadError(
            f"model folder {model_dir} has no config.json, so it is not a Hugging Face checkpoint"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"model folder {model_dir} has an unreadable config.json ({e})") from e
    model_type = str(config.get("model_type", ""))
    if model_type not in SUPPORTED_FAMILIES:
        raise ModelLoadError(
            f"model folder {model_dir} holds model_type {model_type!r}, which is not one of the supported "
            f"image-text-to-text families ({', '.join(sorted(SUPPORTED_FAMILIES))})"
        )
    if not weight_files(model_dir):
        raise ModelLoadError(f"model folder {model_dir} has no weights (*.safetensors or pytorch_model*.bin)")
    if not any((model_dir / name).is_file() for name in PROCESSOR_FILES):
        raise ModelLoadError(
            f"model folder {model_dir} has no image processor files ({' or '.join(PROCESSOR_FILES)})"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"model folder {model_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES)})"
        )
    return model_type


def weight_files(model_dir: Path) -> list[Path]:
    """The weight files of a checkpoint folder, sorted by name."""
    files: set[Path] = set()
    for pattern in WEIGHT_PATTERNS:
        files.update(p for p in model_dir.glob(pattern) if p.is_file())
    return sorted(files)


def weights_hash(files: list[Path], full_limit: int = FULL_HASH_LIMIT) -> str:
    """A short content hash of weight files (SHA-256, first 12 hex digits).

    Files are hashed whole when their total size is at most ``full_limit``; above it (multi-GB
    checkpoints) each file contributes its size, its first 1 MiB (the safetensors header names every
    tensor and offset) and 16 evenly spaced 1 MiB chunks, which any retraining or conversion changes.

    Args:
        files: weight files, in a stable order.
        full_limit: byte size up to which files are hashed whole.

    Returns:
        12 lowercase hex digits.
    """
    digest = hashlib.sha256()
    total = sum(f.stat().st_size for f in files)
    chunk = 1 << 20
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size};".encode())
        with path.open("rb") as fh:
            if total <= full_limit:
                for block in iter(lambda fh=fh: fh.read(chunk), b""):  # type: ignore[misc]
                    digest.update(block)
            else:
                for i in range(17):
                    fh.seek(max(0, size - chunk) * i // 16)
                    digest.update(fh.read(chunk))
    return digest.hexdigest()[:12]


def pick_device(device: str) -> str:
    """Resolve ``auto`` to ``cuda`` when available, else ``cpu``.

    Raises:
        ModelLoadError: when ``cuda`` is asked for and not available, or the device is unknown.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"device {device!r} is not supported (use auto, cpu or cuda)")
    return device


def load(
    model_dir: str | Path,
    adapter: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    quantize: Quantize | None = None,
    num_threads: int | None = DEFAULT_CPU_THREADS,
) -> LoadedModel:
    """Load a local checkpoint (and optionally a LoRA adapter) for generation, offline.

    On GPU the weights are bf16 (optionally 8/4-bit with bitsandbytes); on CPU fp32, with
    ``torch.set_num_threads(num_threads)`` (one thread decodes small batches fastest on 2 cores:
    see docs/BENCHMARKS.md). Note that the thread count is process-wide.

    Args:
        model_dir: checkpoint folder (config, weights, processor and tokenizer files).
        adapter: a PEFT LoRA adapter folder to load and activate, or None.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        dtype: ``auto`` (bf16 on GPU, fp16 on GPUs without bf16, fp32 on CPU), ``float32``,
            ``bfloat16`` or ``float16``.
        quantize: ``8bit`` or ``4bit`` (CUDA and bitsandbytes only), or None.
        num_threads: CPU threads for torch; None leaves torch's setting alone.

    Returns:
        The loaded model with its processor and version.

    Raises:
        ModelLoadError: for a missing, incomplete or unsupported folder, an impossible device /
            dtype / quantization request, or a checkpoint transformers cannot load.
        AdapterError: when the adapter cannot be loaded.
    """
    path = Path(model_dir).expanduser()
    family = check_model_dir(path)
    import torch
    from transformers import AutoModelForImageTextToText

    resolved = pick_device(device)
    torch_dtype = _resolve_dtype(dtype, resolved)
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch_dtype}
    if quantize is not None:
        kwargs["quantization_config"] = _quantization_config(quantize, resolved)
    if resolved.startswith("cuda"):
        kwargs["device_map"] = resolved  # weights go straight to the GPU, no full copy in host RAM
    if resolved == "cpu" and num_threads is not None:
        if num_threads < 1:
            raise ModelLoadError(f"num_threads must be at least 1, got {num_threads}")
        torch.set_num_threads(num_threads)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelLoadError(f"transformers could not load the {family} checkpoint in {path}: {e}") from e
    if "device_map" not in kwargs:
        model = model.to(resolved)  # type: ignore[arg-type]
    model.eval()
    processor = load_processor(path, family)
    version = f"{path.name}@{weights_hash(weight_files(path))}"
    logger.info("loaded %s (%s) on %s as %s", version, family, resolved, torch_dtype)
    loaded = LoadedModel(
        model=model,
        processor=processor,
        family=family,
        multi_image=SUPPORTED_FAMILIES[family],
        model_version=version,
        device=resolved,
        dtype=str(torch_dtype).removeprefix("torch."),
    )
    if adapter is not None:
        from medvlm.adapters import AdapterSet

        AdapterSet(loaded).load(Path(adapter))
    return loaded


def load_processor(path: Path, family: str) -> Any:
    """Load the checkpoint's processor, with left padding for batched generation.

    Qwen2-VL / Qwen2.5-VL / SmolVLM processors also need a video processor, which needs
    torchvision; on a machine without it (this project's CPU machines), an image-only processor is
    assembled from the same files.

    Raises:
        ModelLoadError: when the processor files cannot be loaded.
    """
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    except ImportError as e:
        if family not in VIDEO_PROCESSOR_FAMILIES or "torchvision" not in str(e).lower():
            raise ModelLoadError(f"the processor of {path} needs a missing library: {e}") from e
        logger.info("torchvision missing: using an image-only %s processor", family)
        processor = _image_only_processor(path, family)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelLoadError(f"the processor files in {path} cannot be loaded: {e}") from e
    if getattr(processor, "chat_template", None) is None:
        raise ModelLoadError(f"the processor in {path} has no chat template (chat_template.jinja or .json)")
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


# Processors that also take a video processor, which needs torchvision (absent on CPU-only sites
# whose torch is the CPU build): family -> transformers processor class.
VIDEO_PROCESSOR_FAMILIES = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "smolvlm": "SmolVLMProcessor",
}


@dataclass(frozen=True)
class _NoVideoProcessor:
    """Stands in for a video processor where none can be built: video inputs stay unsupported."""

    num_frames: int | None = None
    fps: float | None = None


def _image_only_processor(path: Path, family: str) -> Any:
    """The family's processor without its video processor, from the checkpoint's own files."""
    import inspect

    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    base: Any = getattr(transformers, VIDEO_PROCESSOR_FAMILIES[family])

    class ImageOnlyProcessor(base):
        """``base`` with ``image_processor`` and ``tokenizer`` only (its video input unused)."""

        def __init__(
            self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
        ) -> None:
            base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)
            # Some chat-template code reads video defaults even for image-only conversations.
            self.video_processor = _NoVideoProcessor()

    accepted = set(inspect.signature(base.__init__).parameters) - {
        "self",
        "image_processor",
        "tokenizer",
        "video_processor",
        "chat_template",
        "kwargs",
    }
    config_path = path / "processor_config.json"
    try:
        saved = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return ImageOnlyProcessor(
            image_processor,
            tokenizer,
            chat_template=_read_chat_template(path, tokenizer),
            **{k: v for k, v in saved.items() if k in accepted},
        )
    except (OSError, ValueError, KeyError, TypeError, ImportError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"the processor files in {path} cannot be loaded: {e}") from e


def _read_chat_template(path: Path, tokenizer: Any) -> str | None:
    jinja = path / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    as_json = path / "chat_template.json"
    if as_json.is_file():
        template = json.loads(as_json.read_text(encoding="utf-8")).get("chat_template")
        return str(template) if template else None
    template = getattr(tokenizer, "chat_template", None)
    return str(template) if template else None


def _resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        # bf16 where the GPU has it (Ampere and later); fp16 on older cards (V100, T4).
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"dtype {dtype!r} is not supported (use auto, float32, bfloat16 or float16)")
    return table[dtype]


def _quantization_config(quantize: str, device: str) -> Any:
    import importlib.util

    if quantize not in ("8bit", "4bit"):
        raise ModelLoadError(f"quantize must be 8bit or 4bit, got {quantize!r}")
    if not device.startswith("cuda"):
        raise ModelLoadError(
            f"{quantize} quantization needs a CUDA device, and this model is loading on {device}"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(
            f"{quantize} quantization needs the bitsandbytes package, which is not installed"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4"
    )
