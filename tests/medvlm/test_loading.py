"""Loading each supported family offline, and clear errors for folders that cannot load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import medvlm
from medvlm.assistant import Assistant
from medvlm.backends import InProcessBackend
from medvlm.loading import check_model_dir, weights_hash
from tests.medvlm.tiny_models import FAMILIES

IMAGES = [(np.random.default_rng(i).random((40, 48, 3)) * 255).astype(np.uint8) for i in range(2)]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_loads_offline_and_generates(family: str, tiny_model_dir: Callable[[str], Path]) -> None:
    folder = tiny_model_dir(family)
    loaded = medvlm.load(folder, device="cpu")
    assert loaded.family == family
    assert loaded.model_version.startswith(f"{family}@") and len(loaded.model_version) == len(family) + 13
    backend = InProcessBackend(loaded)
    request = medvlm.AskRequest(
        images=IMAGES,
        question="Describe the images.",
        contexts=[medvlm.ImageContext("CR", "CHEST", "PA"), medvlm.ImageContext("CR", "CHEST", "lateral")],
    )
    settings = medvlm.GenerationSettings(max_new_tokens=4, ablation=False)
    answer = Assistant(backend).ask(request, settings)
    assert answer.raw_text  # random weights: any non-empty text
    # Greedy decoding is deterministic, and the streamed text is the same answer.
    again = Assistant(backend).ask(request, settings)
    assert again.raw_text == answer.raw_text
    streamed = "".join(Assistant(backend).stream(request, settings)).strip()
    assert streamed == answer.raw_text
    # Multi-image families see two images; single-image families a montage.
    assert len(answer.views) == (2 if loaded.multi_image else 1)


def test_batched_generation_matches_single(llava: medvlm.LoadedModel) -> None:
    backend = InProcessBackend(llava)
    settings = medvlm.GenerationSettings(max_new_tokens=4, ablation=False)
    requests = [medvlm.AskRequest(images=[im], question="What is seen?") for im in IMAGES]
    batched = Assistant(backend).ask_batch(requests, settings)
    single = [Assistant(backend).ask(r, settings) for r in requests]
    assert [a.raw_text for a in batched] == [a.raw_text for a in single]


def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop))
    return dst


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("config.json",), r"has no config\.json"),
        (("*.safetensors",), "has no weights"),
        (("preprocessor_config.json", "processor_config.json"), "has no image processor files"),
        (("tokenizer.json", "tokenizer_config.json"), "has no tokenizer files"),
    ],
)
def test_incomplete_folder_is_one_clear_sentence(
    llava_dir: Path, tmp_path: Path, drop: tuple[str, ...], message: str
) -> None:
    folder = _copy(llava_dir, tmp_path / "broken", drop)
    with pytest.raises(medvlm.ModelLoadError, match=message) as info:
        medvlm.load(folder, device="cpu")
    assert str(info.value).count(". ") == 0  # one sentence


def test_missing_and_unsupported_folders(llava_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(medvlm.ModelLoadError, match="does not exist"):
        medvlm.load(tmp_path / "nowhere")
    folder = _copy(llava_dir, tmp_path / "bert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(medvlm.ModelLoadError, match="not one of the supported"):
        check_model_dir(folder)


def test_quantization_and_device_requests_fail_clearly(llava_dir: Path) -> None:
    with pytest.raises(medvlm.ModelLoadError, match="needs a CUDA device"):
        medvlm.load(llava_dir, device="cpu", quantize="4bit")
    with pytest.raises(medvlm.ModelLoadError, match="dtype"):
        medvlm.load(llava_dir, device="cpu", dtype="int3")


def test_weights_hash_follows_content(tmp_path: Path) -> None:
    a = tmp_path / "a.safetensors"
    a.write_bytes(b"x" * 5000)
    first = weights_hash([a])
    a.write_bytes(b"x" * 4999 + b"y")
    assert weights_hash([a]) != first
    # Sampled mode (large checkpoints) still sees a change in a sampled chunk.
    sampled = weights_hash([a], full_limit=10)
    a.write_bytes(b"z" + b"x" * 4998 + b"y")
    assert weights_hash([a], full_limit=10) != sampled
