"""Every YAML in ``training/configs`` resolves into its recipes' configs, stage by stage.

A run reads a stage's settings only when that stage starts, so a misspelt key in the last stage of
``builtin.yaml`` would otherwise surface after an hour of training. These tests build every stage's
config class from the shipped files without training anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.builtin import BuiltinPipelineConfig
from training.cli import CONFIG_DIR, RECIPES
from training.config import build, load_config
from training.recipes.dpo import DPOConfig
from training.recipes.instruct_lora import InstructLoraConfig
from training.recipes.projector_align import ProjectorAlignConfig
from training.recipes.vision_pretrain import VisionPretrainConfig

PIPELINES = sorted(p.name for p in CONFIG_DIR.glob("builtin*.yaml"))
SINGLE = {spec[3]: name for name, spec in RECIPES.items()}
PATHS = {"out_dir": "runs/x", "data_dir": "runs/x/data"}


def _stage_values(values: dict[str, Any], *, first: bool = False) -> dict[str, Any]:
    """A stage's settings with the paths the pipeline fills in (stage 0 starts from nothing)."""
    return {**values, **PATHS} if first else {**values, **PATHS, "init_from": "runs/x/prev"}


def _parts_folder(tmp_path: Path) -> str:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "parts.json").write_text("{}")
    return str(folder)


def test_every_shipped_config_is_checked() -> None:
    shipped = {p.name for p in CONFIG_DIR.glob("*.yaml")}
    assert shipped == set(PIPELINES) | set(SINGLE), "a config in training/configs is not covered here"
    assert "builtin.yaml" in PIPELINES


@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_config_resolves_stage_by_stage(name: str, tmp_path: Path) -> None:
    values = load_config(CONFIG_DIR / name)
    if values.get("start_from"):
        values["start_from"] = _parts_folder(tmp_path)
    cfg = build(BuiltinPipelineConfig, values)
    if cfg.start_from is None:
        build(VisionPretrainConfig, _stage_values(cfg.stage0, first=True))
        build(ProjectorAlignConfig, _stage_values(cfg.stage1))
    stages = [build(InstructLoraConfig, _stage_values(v)) for v in (*cfg.stage2_curriculum, cfg.stage2)]
    assert all(s.max_steps >= 0 for s in stages)
    if cfg.dpo:
        build(DPOConfig, {**_stage_values(cfg.dpo), "preferences": "runs/x/preferences.jsonl"})


def test_builtin_recipe_trains_the_projector_only_after_the_adapter_uses_the_image() -> None:
    """The from-scratch recipe's structure that docs/TRAINING.md describes: 2a existence only with
    the projector frozen, the projector trainable only in the last stages (2g and 2) and, once
    trainable, never frozen again."""
    cfg = build(BuiltinPipelineConfig, load_config(CONFIG_DIR / "builtin.yaml"))
    stages = [build(InstructLoraConfig, _stage_values(v)) for v in (*cfg.stage2_curriculum, cfg.stage2)]
    assert stages[0].templates == ("existence",)
    trainable = [s.train_projector for s in stages]
    assert not trainable[0] and trainable[-1]
    assert trainable == sorted(trainable), trainable
    assert sum(trainable) <= 2, trainable


@pytest.mark.parametrize("filename", sorted(SINGLE))
def test_single_recipe_config_resolves(filename: str) -> None:
    import importlib

    module, config_class = RECIPES[SINGLE[filename]][:2]
    cls = getattr(importlib.import_module(module), config_class)
    values = _stage_values(load_config(CONFIG_DIR / filename), first=cls is VisionPretrainConfig)
    if cls is DPOConfig:
        values["preferences"] = "runs/x/preferences.jsonl"
    build(cls, values)


def test_optional_nested_config_is_built_or_left_out() -> None:
    from training.builtin import PhantomArgs

    cfg = build(BuiltinPipelineConfig, {"out_dir": "runs/x", "stage0_data": {"n": 20, "seed": 2}})
    assert cfg.stage0_data == PhantomArgs(n=20, seed=2)
    assert build(BuiltinPipelineConfig, {"out_dir": "runs/x"}).stage0_data is None
    with pytest.raises(ValueError, match="unknown keys"):
        build(BuiltinPipelineConfig, {"out_dir": "runs/x", "stage0_data": {"n": 20, "sede": 2}})
