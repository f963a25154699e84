"""LoRA adapters: merged = base + adapter, switch / unload restore the base, versions travel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import medvlm
from medvlm.adapters import AdapterSet
from medvlm.assistant import Assistant
from medvlm.backends import InProcessBackend
from medvlm.processing import build_prompt

IMAGE = (np.random.default_rng(3).random((32, 32, 3)) * 255).astype(np.uint8)


def _make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA with random (non-zero) B matrices, so it changes the logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(llava_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return _make_adapter(llava_dir, root / "lora_a", 1), _make_adapter(llava_dir, root / "lora_b", 2)


def _logits(loaded: medvlm.LoadedModel) -> torch.Tensor:
    backend = InProcessBackend(loaded)
    request = medvlm.AskRequest(images=[IMAGE], question="Is there a nodule?")
    inputs = backend.encode([build_prompt(request, loaded.multi_image)])
    with torch.no_grad():
        out: Any = loaded.model(**inputs)
    return out.logits[0, -5:].float()


def test_merged_lora_equals_base_plus_adapter(llava: medvlm.LoadedModel, adapters: tuple[Path, Path]) -> None:
    base = _logits(llava)
    adapter_set = AdapterSet(llava)
    version = adapter_set.load(adapters[0])
    assert version.startswith("lora_a@") and llava.adapter_version == version
    with_adapter = _logits(llava)
    assert not torch.allclose(with_adapter, base, atol=1e-4)  # the adapter does something
    new_version = adapter_set.merge()
    assert new_version.endswith("+" + version) and llava.adapter_version is None
    torch.testing.assert_close(_logits(llava), with_adapter, atol=1e-4, rtol=1e-4)


def test_switch_and_unload_restore_base(llava: medvlm.LoadedModel, adapters: tuple[Path, Path]) -> None:
    base = _logits(llava)
    adapter_set = AdapterSet(llava)
    va = adapter_set.load(adapters[0])
    a_logits = _logits(llava)
    vb = adapter_set.load(adapters[1])
    assert llava.adapter_version == vb
    b_logits = _logits(llava)
    assert not torch.allclose(a_logits, b_logits, atol=1e-4)
    adapter_set.switch("lora_a")
    torch.testing.assert_close(_logits(llava), a_logits)
    adapter_set.switch(None)
    torch.testing.assert_close(_logits(llava), base)
    assert llava.adapter_version is None
    adapter_set.switch("lora_a")
    assert llava.adapter_version == va
    adapter_set.unload()
    torch.testing.assert_close(_logits(llava), base)
    assert llava.adapters == {} and llava.adapter_version is None
    with pytest.raises(medvlm.AdapterError, match="no adapter named"):
        adapter_set.switch("lora_a")


def test_adapter_version_travels_with_answer(llava_dir: Path, adapters: tuple[Path, Path]) -> None:
    loaded = medvlm.load(llava_dir, adapter=adapters[1], device="cpu")
    answer = Assistant(InProcessBackend(loaded)).ask(
        medvlm.AskRequest(images=[IMAGE], question="What is shown?"),
        medvlm.GenerationSettings(max_new_tokens=2, ablation=False),
    )
    assert answer.model.adapter_version == loaded.adapters["lora_b"]
    assert answer.model.model_version == loaded.model_version


def test_incomplete_adapter_folder(llava: medvlm.LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(medvlm.AdapterError, match=r"adapter_config\.json"):
        AdapterSet(llava).load(tmp_path)
