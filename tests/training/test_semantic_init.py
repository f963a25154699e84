"""Semantic projector initialisation: label words in, label evidence out."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import common
from training.config import build
from training.recipes.projector_align import ProjectorAlignConfig, ProjectorAlignRecipe
from training.semantic_init import init_projector, label_text, read_stage0_head


def test_label_text_spells_out_attributes() -> None:
    assert label_text("pleural_effusion") == "pleural effusion"
    assert label_text("pneumothorax:laterality=left") == "left pneumothorax"
    assert label_text("lung_nodule:lobe=right_upper") == "right upper lobe lung nodule"
    assert label_text("unknown_thing") == "unknown thing"


def test_label_text_attribute_only_keeps_the_value_words() -> None:
    assert label_text("pneumothorax:laterality=left", attribute_only=True) == "left"
    assert label_text("lung_nodule:lobe=right_upper", attribute_only=True) == "right upper lobe"
    assert label_text("pleural_effusion", attribute_only=True) == "pleural effusion"


def _projector(hidden: int, width: int) -> SimpleNamespace:
    return SimpleNamespace(
        linear_1=torch.nn.Linear(hidden, width), act=torch.nn.GELU(), linear_2=torch.nn.Linear(width, width)
    )


def _forward(p: SimpleNamespace, x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = p.linear_2(p.act(p.linear_1(x)))
    return out


def test_patch_with_label_evidence_maps_to_that_labels_embedding() -> None:
    torch.manual_seed(0)
    hidden, width, n_labels = 8, 16, 3
    head_w = torch.eye(n_labels, hidden) * 4.0  # label k fires on feature k
    head_b = torch.full((n_labels,), -2.0)
    targets = torch.nn.functional.normalize(torch.randn(n_labels, width), dim=-1) * 3.0
    projector = _projector(hidden, width)
    features = torch.randn(32, 4, hidden)
    scale = init_projector(projector, head_w, head_b, targets, features)
    assert scale > 0
    with torch.no_grad():
        patch = torch.zeros(1, hidden)
        patch[0, 1] = 2.0  # strong evidence for label 1 only
        out = _forward(projector, patch)[0]
        background = _forward(projector, torch.zeros(1, hidden))[0]
    cosines = torch.nn.functional.cosine_similarity(out.unsqueeze(0), targets)
    assert int(cosines.argmax()) == 1 and float(cosines[1]) > 0.9
    assert float(background.norm()) < 0.3 * float(out.norm())


def test_init_projector_rejects_mismatched_shapes() -> None:
    projector = _projector(8, 16)
    with pytest.raises(ValueError, match="do not fit"):
        init_projector(projector, torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, 16), torch.zeros(2, 4, 5))


def test_read_stage0_head_refuses_a_later_stage(stage1_ckpt: Path) -> None:
    with pytest.raises(ValueError, match="stage-0"):
        read_stage0_head(stage1_ckpt)


def test_stage1_semantic_init_in_bf16_trains_from_the_head(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage0_ckpt: Path
) -> None:
    values = common(
        tmp_path,
        tiny_data,
        init_from=str(stage0_ckpt),
        lm_dir=str(tiny_lm),
        semantic_init=True,
        mixed_precision="bf16",
        max_steps=0,
    )
    ckpt = ProjectorAlignRecipe(build(ProjectorAlignConfig, values)).run().checkpoint
    parts = load_file(str(ckpt / "parts.safetensors"))
    _, head_w, head_b = read_stage0_head(stage0_ckpt)
    n = head_w.shape[0]
    assert torch.equal(parts["multi_modal_projector.linear_1.weight"][:n], head_w)
    assert torch.equal(parts["multi_modal_projector.linear_1.bias"][:n], head_b)
    trained = ProjectorAlignRecipe(
        build(ProjectorAlignConfig, {**values, "max_steps": 2, "out_dir": str(tmp_path / "b")})
    ).run()
    assert trained.final_loss == trained.final_loss  # finite under bf16 autocast (NaN != NaN)
