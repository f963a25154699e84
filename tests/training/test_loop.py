"""Optimizer parameter groups of the training loop."""

from __future__ import annotations

import pytest
import torch

from training.loop import param_groups


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vision_tower = torch.nn.Linear(2, 2)
        self.projector = torch.nn.Linear(2, 2)
        self.frozen = torch.nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)


def test_one_group_without_scales() -> None:
    groups = param_groups(_Tiny(), 1e-3, {})
    assert len(groups) == 1 and groups[0]["lr"] == 1e-3
    assert len(groups[0]["params"]) == 4  # frozen layer left out


def test_scaled_part_gets_its_own_rate() -> None:
    model = _Tiny()
    groups = param_groups(model, 1e-3, {"vision_tower.": 0.1})
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    vision = {id(p) for p in model.vision_tower.parameters()}
    assert {id(p) for p in groups[1]["params"]} == vision
    assert not vision & {id(p) for p in groups[0]["params"]}


def test_nothing_trainable_gives_no_groups() -> None:
    model = _Tiny()
    for p in model.parameters():
        p.requires_grad_(False)
    assert param_groups(model, 1e-3, {"vision_tower.": 0.1}) == []
