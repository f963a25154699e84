"""resolve_model: a folder of built-in parts (a training checkpoint) is assembled as the built-in model is."""

from __future__ import annotations

from pathlib import Path

from tests.medvlm.test_builtin import _seed_lm, _weights
from training.eval.runner import resolve_model


def test_parts_folder_is_assembled_with_its_own_adapter(tmp_path: Path, tiny_lm: Path) -> None:
    home = tmp_path / "home"
    _seed_lm(home, tiny_lm)
    checkpoint = _weights(tiny_lm, tmp_path / "stage2" / "final")
    model_dir, adapter, version = resolve_model(str(checkpoint), home=home)
    assert model_dir.parent == home / "builtin" and (model_dir / "config.json").is_file()
    assert adapter == str(checkpoint / "adapter")
    assert version is not None and version.startswith("builtin-test+") and "+builtin-lora-test+" in version
    _, chosen, unknown = resolve_model(str(checkpoint), str(tmp_path / "other-adapter"), home=home)
    assert chosen == str(tmp_path / "other-adapter") and unknown is None  # not the built-in adapter
    without = _weights(tiny_lm, tmp_path / "stage1" / "final", adapter=False, seed=1)
    other_dir, none, base_version = resolve_model(str(without), home=home)
    assert none is None and other_dir != model_dir  # different parts, different assembled folder
    assert base_version is not None and "lora" not in base_version


def test_plain_model_folder_is_used_as_it_is(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path), "a") == (tmp_path, "a", None)
