"""medvlm.builtin: assembly into a standard Llava folder, prepare() stamps, and the real model (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from medvlm.builtin import (
    IMAGE_TOKEN,
    BuiltinError,
    PartsSpec,
    build_llava,
    build_processor,
    extract_parts,
    prepare,
)
from medvlm.builtin.assemble import assemble
from medvlm.builtin.convert import find_gguf, sha256_file
from medvlm.builtin.prepare import STAMP
from tests.training.tiny import TINY_VISION, make_tiny_lm

CORPUS = ["Is there a pleural effusion?", "yes", "no", "left", "right", "Is this chest radiograph normal?"]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return make_tiny_lm(tmp_path_factory.mktemp("lm"), CORPUS)


def _weights(lm: Path, out: Path, *, adapter: bool = True, seed: int = 0) -> Path:
    """Random trained-parts folder (what training exports), with a LoRA adapter."""
    spec = PartsSpec(vision_config=dict(TINY_VISION), version="test")
    processor = build_processor(lm, spec)
    tok = processor.tokenizer
    model = build_llava(
        lm, spec, None, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN), vocab_size=len(tok), seed=seed
    )
    out.mkdir(parents=True, exist_ok=True)
    save_file(extract_parts(model, torch.float16), str(out / "parts.safetensors"))
    (out / "parts.json").write_text(spec.to_json())
    if adapter:
        from peft import LoraConfig, get_peft_model

        peft_model = get_peft_model(
            model, LoraConfig(r=2, lora_alpha=4, target_modules=r".*language_model.*\.(q_proj|v_proj)")
        )
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
        peft_model.save_pretrained(str(out / "adapter"))
    return out


def test_assembled_folder_loads_with_plain_transformers(tmp_path: Path, tiny_lm: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    weights = _weights(tiny_lm, tmp_path / "w")
    assemble(tiny_lm, weights, tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    model: Any = AutoModelForImageTextToText.from_pretrained(tmp_path / "model")
    processor = AutoProcessor.from_pretrained(tmp_path / "model")
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Is there a pleural effusion?"}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and IMAGE_TOKEN in prompt
    inputs = processor(images=Image.new("RGB", (40, 40), 90), text=prompt, return_tensors="pt")
    image_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((inputs["input_ids"] == image_id).sum()) == (32 // 16) ** 2  # CLS dropped
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # the trained parts arrived intact (float16 round trip)
    parts = extract_parts(model)
    original = _weights(tiny_lm, tmp_path / "again", adapter=False)
    from safetensors.torch import load_file

    saved = load_file(str(original / "parts.safetensors"))
    assert torch.equal(
        parts["multi_modal_projector.linear_1.weight"].half(), saved["multi_modal_projector.linear_1.weight"]
    )
    # the adapter changes the answer distribution
    with torch.no_grad():
        base_logits = model(**inputs).logits
        adapted = PeftModel.from_pretrained(model, str(weights / "adapter"))
        adapted_logits = adapted(**inputs).logits
    assert not torch.allclose(base_logits, adapted_logits)


def _seed_lm(home: Path, lm: Path) -> None:
    """Put the tiny LM where prepare() keeps the converted SmolLM2, stamped as up to date."""
    import shutil

    target = home / "builtin" / "lm"
    shutil.copytree(lm, target)
    stamp = {"format": 1, "gguf_sha256": sha256_file(find_gguf())}
    (target / STAMP).write_text(json.dumps(stamp, indent=2, sort_keys=True))


def test_prepare_is_idempotent_and_versioned(tmp_path: Path, tiny_lm: Path) -> None:
    home = tmp_path / "home"
    _seed_lm(home, tiny_lm)
    weights = _weights(tiny_lm, tmp_path / "w")
    first = prepare(home, weights_dir=weights)
    assert first.model_dir.parent == home / "builtin" and first.synthetic_only
    assert first.adapter_dir == weights / "adapter" and first.adapter_version
    assert first.model_version.startswith("builtin-test+")
    mtime = (first.model_dir / "model.safetensors").stat().st_mtime_ns
    again = prepare(home, weights_dir=weights)
    assert again == first and (first.model_dir / "model.safetensors").stat().st_mtime_ns == mtime
    # a half-written folder is rebuilt
    os.remove(first.model_dir / "config.json")
    assert prepare(home, weights_dir=weights) == first and (first.model_dir / "config.json").is_file()
    # new parts give a new version and folder
    other = _weights(tiny_lm, tmp_path / "w2", adapter=False, seed=1)
    changed = prepare(home, weights_dir=other)
    assert changed.model_version != first.model_version and changed.model_dir != first.model_dir
    assert changed.adapter_dir is None and changed.adapter_version is None


def test_prepare_without_parts_says_so(tmp_path: Path) -> None:
    with pytest.raises(BuiltinError, match=r"parts\.safetensors missing"):
        prepare(tmp_path / "home", weights_dir=tmp_path / "empty")


def test_parts_spec_checks_itself() -> None:
    with pytest.raises(ValueError, match="multiple"):
        PartsSpec(vision_config={"image_size": 30, "patch_size": 16, "hidden_size": 8})
    with pytest.raises(ValueError, match="hidden_size"):
        PartsSpec(vision_config={"image_size": 32, "patch_size": 16})


@pytest.mark.slow
def test_real_builtin_model_prepares_loads_and_answers(tmp_path: Path) -> None:
    """Converts SmolLM2 (about 40 s) and assembles the committed parts; plain transformers answers."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    built = prepare(tmp_path / "home")
    model: Any = AutoModelForImageTextToText.from_pretrained(built.model_dir)
    processor = AutoProcessor.from_pretrained(built.model_dir)
    if built.adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(built.adapter_dir))
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Is this a chest radiograph?"}],
        }
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (128, 128), 60), text=prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    text = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()


def test_prepare_lock_is_exclusive_across_open_files(tmp_path: Path) -> None:
    import fcntl

    from medvlm.builtin.prepare import _exclusive

    with (
        _exclusive(tmp_path),
        (tmp_path / ".prepare.lock").open("a") as other,
        pytest.raises(BlockingIOError),
    ):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with (tmp_path / ".prepare.lock").open("a") as other:  # released afterwards
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_replace_dir_swaps_in_the_new_folder_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from medvlm.builtin.prepare import _replace_dir

    target, new = tmp_path / "model-x", tmp_path / ".model-new"
    target.mkdir()
    (target / "config.json").write_text("old")
    new.mkdir()
    (new / "config.json").write_text("new")
    _replace_dir(new, target)
    assert (target / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-x"]
