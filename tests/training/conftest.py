"""Shared fixtures: a tiny phantoms dataset and a tiny Llama LM with a byte-level BPE tokenizer.

Everything is built offline in a few seconds: hidden 32, 2 layers, 32-px images, 16-px patches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.training.tiny import TINY_VISION, corpus_from, make_tiny_lm


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A phantoms folder (40 studies, 32 px) written by ``data_prep.phantoms``."""
    from data_prep.phantoms.generate import generate

    out = tmp_path_factory.mktemp("phantoms")
    generate(out, n=40, seed=3, size=32, dicom=False)
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A tiny ``LlamaForCausalLM`` folder with a BPE tokenizer trained on the fixture's text."""
    return make_tiny_lm(tmp_path_factory.mktemp("tiny_lm"), corpus_from(tiny_data))


def common(out: Path, data: Path, **extra: Any) -> dict[str, Any]:
    """Config values shared by the tiny recipe runs."""
    return {
        "out_dir": str(out),
        "data_dir": str(data),
        "max_steps": 2,
        "batch_size": 2,
        "log_every": 1,
        **extra,
    }


@pytest.fixture(scope="session")
def stage0_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A 2-step stage-0 checkpoint of the tiny ViT."""
    from training.config import build
    from training.recipes.vision_pretrain import VisionPretrainConfig, VisionPretrainRecipe

    out = tmp_path_factory.mktemp("stage0")
    cfg = build(VisionPretrainConfig, common(out, tiny_data, vision=TINY_VISION))
    return VisionPretrainRecipe(cfg).run().checkpoint


@pytest.fixture(scope="session")
def stage1_ckpt(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_lm: Path, stage0_ckpt: Path
) -> Path:
    """A 2-step stage-1 checkpoint."""
    from training.config import build
    from training.recipes.projector_align import ProjectorAlignConfig, ProjectorAlignRecipe

    out = tmp_path_factory.mktemp("stage1")
    cfg = build(ProjectorAlignConfig, common(out, tiny_data, init_from=str(stage0_ckpt), lm_dir=str(tiny_lm)))
    return ProjectorAlignRecipe(cfg).run().checkpoint


@pytest.fixture(scope="session")
def stage2_ckpt(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> Path:
    """A 2-step stage-2 (LoRA) checkpoint."""
    from training.config import build
    from training.recipes.instruct_lora import InstructLoraConfig, InstructLoraRecipe

    out = tmp_path_factory.mktemp("stage2")
    values = common(
        out, tiny_data, init_from=str(stage1_ckpt), lm_dir=str(tiny_lm), lora={"r": 2, "alpha": 4}
    )
    return InstructLoraRecipe(build(InstructLoraConfig, values)).run().checkpoint


@pytest.fixture(scope="module")
def batcher(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_lm: Path, stage0_ckpt: Path
) -> Any:
    """The ``LlavaBatcher`` of a tiny stage-1 recipe (the tiny LM's tokenizer, the tiny ViT's images)."""
    from training.config import build
    from training.recipes.projector_align import ProjectorAlignConfig, ProjectorAlignRecipe

    values = common(
        tmp_path_factory.mktemp("conv"), tiny_data, init_from=str(stage0_ckpt), lm_dir=str(tiny_lm)
    )
    recipe = ProjectorAlignRecipe(build(ProjectorAlignConfig, values))
    recipe.build_base()
    assert recipe.batcher is not None
    return recipe.batcher
