"""Two gloo processes (accelerate, DDP on CPU) end with identical weights after a stage-0 run."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.training.conftest import common
from tests.training.tiny import TINY_VISION


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _worker(rank: int, world: int, port: int, out: str, data: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from training.config import build
    from training.recipes.vision_pretrain import VisionPretrainConfig, VisionPretrainRecipe

    cfg = build(VisionPretrainConfig, common(Path(out), Path(data), vision=TINY_VISION, batch_size=3))
    recipe = VisionPretrainRecipe(cfg)
    recipe.setup()
    assert recipe.accelerator.num_processes == world
    seen = recipe._indices()
    recipe.train()
    torch.save({"state": recipe.model.state_dict(), "indices": seen}, Path(out) / f"rank{rank}.pt")
    recipe.cleanup()


def test_two_gloo_processes_end_identical(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPU and gloo on a GPU machine too (the spawned ranks inherit this): two ranks cannot share one
    # GPU under NCCL, which is what accelerate picks when a GPU is visible
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), str(tiny_data)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert set(r0["indices"]).isdisjoint(r1["indices"])  # each rank trained on its own slice
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    assert (tmp_path / "final" / "trainable.safetensors").is_file()
    assert (tmp_path / "final" / "rng-rank1.pt").is_file()
