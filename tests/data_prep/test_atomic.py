"""Atomic file replacement."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.atomic import write_atomic


def test_write_atomic_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    write_atomic(target, b"one")
    write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_write_atomic_failure_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
