"""Session fixtures: tiny checkpoints of every supported family, built once, offline."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.medvlm import tiny_models

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny_vlms")


@pytest.fixture(scope="session")
def tokenizer_dir(tiny_root: Path) -> Path:
    return tiny_models.smollm2_tokenizer_dir(tiny_root)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_root: Path, tokenizer_dir: Path) -> Callable[[str], Path]:
    """``tiny_model_dir(family)`` builds (once) and returns the tiny checkpoint folder."""

    def get(family: str) -> Path:
        return tiny_models.build(family, tiny_root, tokenizer_dir)

    return get


@pytest.fixture(scope="session")
def llava_dir(tiny_model_dir: Callable[[str], Path]) -> Path:
    return tiny_model_dir("llava")


@pytest.fixture
def llava(llava_dir: Path) -> Any:
    """A freshly loaded tiny LLaVA (tests may attach adapters to it)."""
    import medvlm

    return medvlm.load(llava_dir, device="cpu")
