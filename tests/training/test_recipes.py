"""Recipe smoke tests (2 steps per stage on a tiny model) and exact resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.training.conftest import common
from tests.training.tiny import TINY_VISION
from training.config import build
from training.recipes.instruct_lora import InstructLoraConfig, InstructLoraRecipe
from training.recipes.projector_align import ProjectorAlignConfig
from training.recipes.vision_pretrain import VisionPretrainConfig, VisionPretrainRecipe


def test_stage0_writes_checkpoint_with_resolved_config(stage0_ckpt: Path) -> None:
    for name in ("trainable.safetensors", "state.pt", "config.yaml", "vision.safetensors", "labels.json"):
        assert (stage0_ckpt / name).is_file(), name
    resolved = yaml.safe_load((stage0_ckpt / "config.yaml").read_text())
    assert resolved["max_steps"] == 2 and resolved["vision"]["hidden_size"] == 32
    labels = json.loads((stage0_ckpt / "labels.json").read_text())
    assert labels == sorted(labels) and labels


def test_stage1_trains_only_the_projector(stage0_ckpt: Path, stage1_ckpt: Path) -> None:
    trained = load_file(str(stage1_ckpt / "trainable.safetensors"))
    assert trained and all("multi_modal_projector" in k for k in trained)
    parts = load_file(str(stage1_ckpt / "parts.safetensors"))
    vision0 = load_file(str(stage0_ckpt / "vision.safetensors"))
    for key, value in vision0.items():  # the vision tower stayed frozen
        assert torch.equal(parts[f"vision_tower.{key}"], value)


def test_stage2_exports_peft_adapter_and_projector(stage1_ckpt: Path, stage2_ckpt: Path) -> None:
    config = json.loads((stage2_ckpt / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 2
    lora = load_file(str(stage2_ckpt / "adapter" / "adapter_model.safetensors"))
    assert lora and all("language_model" in k and "lora_" in k for k in lora)
    before = load_file(str(stage1_ckpt / "parts.safetensors"))
    after = load_file(str(stage2_ckpt / "parts.safetensors"))
    key = "multi_modal_projector.linear_1.weight"
    assert not torch.equal(before[key], after[key])  # projector kept training


def test_stage2_train_vision_changes_the_exported_vision_tower(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = _stage2_values(tmp_path / "v", tiny_data, tiny_lm, stage1_ckpt, 2, train_vision=True)
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    checkpoint = recipe.run().checkpoint
    trained = load_file(str(checkpoint / "trainable.safetensors"))
    assert any("vision_tower" in k for k in trained)
    before = load_file(str(stage1_ckpt / "parts.safetensors"))
    after = load_file(str(checkpoint / "parts.safetensors"))
    changed = [k for k in before if k.startswith("vision_tower.") and not torch.equal(before[k], after[k])]
    assert changed  # the ViT itself was trained and exported


def test_stage2_vision_lr_scale_sets_the_vision_group_rate(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = _stage2_values(
        tmp_path / "v", tiny_data, tiny_lm, stage1_ckpt, 1, train_vision=True, vision_lr_scale=0.1
    )
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    recipe.setup()
    base, vision = recipe.learning_rates
    assert base > 0 and vision == pytest.approx(base * 0.1)
    others = [n for n in recipe.trainable_names() if "lora_" not in n and "projector" not in n]
    assert others and all("vision_tower" in n for n in others)
    with pytest.raises(ValueError, match="vision_lr_scale"):
        build(InstructLoraConfig, {**values, "vision_lr_scale": 0})


def test_stage2_projector_lr_scale_gives_the_projector_its_own_rate(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = _stage2_values(tmp_path / "p", tiny_data, tiny_lm, stage1_ckpt, 1, projector_lr_scale=5.0)
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    recipe.setup()
    base, projector = recipe.learning_rates
    assert base > 0 and projector == pytest.approx(base * 5.0)
    with pytest.raises(ValueError, match="projector_lr_scale"):
        build(InstructLoraConfig, {**values, "projector_lr_scale": -1})


def _stage2_values(
    out: Path, data: Path, lm: Path, init: Path, steps: int, **extra: object
) -> dict[str, object]:
    return common(
        out,
        data,
        init_from=str(init),
        lm_dir=str(lm),
        max_steps=steps,
        lora={"r": 2, "alpha": 4, "dropout": 0.1},
        optim={"lr": 1e-2, "warmup_steps": 1},
        **extra,
    )


def test_resume_gives_identical_weights(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    straight = InstructLoraRecipe(
        build(InstructLoraConfig, _stage2_values(tmp_path / "a", tiny_data, tiny_lm, stage1_ckpt, 4))
    ).run()
    InstructLoraRecipe(  # same run, checkpointing at step 2
        build(
            InstructLoraConfig,
            _stage2_values(tmp_path / "b", tiny_data, tiny_lm, stage1_ckpt, 4, save_every=2),
        )
    ).run()
    midway_dir = tmp_path / "b" / "step-2"
    resumed = InstructLoraRecipe(
        build(
            InstructLoraConfig,
            _stage2_values(tmp_path / "c", tiny_data, tiny_lm, stage1_ckpt, 4, resume_from=str(midway_dir)),
        )
    ).run()
    a = load_file(str(straight.checkpoint / "trainable.safetensors"))
    c = load_file(str(resumed.checkpoint / "trainable.safetensors"))
    assert resumed.steps == 4 and a.keys() == c.keys()
    for key in a:
        assert torch.equal(a[key], c[key]), key
    midway = load_file(str(midway_dir / "trainable.safetensors"))
    assert any(not torch.equal(midway[k], a[k]) for k in a)  # the resumed steps did change weights


def test_stage0_loss_falls_when_overfitting(tmp_path: Path, tiny_data: Path) -> None:
    cfg = build(
        VisionPretrainConfig,
        common(
            tmp_path,
            tiny_data,
            vision=TINY_VISION,
            max_steps=30,
            batch_size=8,
            log_every=5,
            optim={"lr": 3e-3},
        ),
    )
    VisionPretrainRecipe(cfg).run()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]


def test_config_rejects_missing_init(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="init_from"):
        build(ProjectorAlignConfig, {"out_dir": str(tmp_path), "data_dir": str(tmp_path)})
