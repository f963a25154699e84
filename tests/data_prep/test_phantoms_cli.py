"""`medvlm phantoms` output-path checks: a file, a folder holding a dataset, --force."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from data_prep.phantoms.generate import OutputPathError, generate

ARGS = ["--n", "3", "--seed", "2", "--size", "16", "--no-dicom"]


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_out_is_a_file_is_a_usage_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert main(["phantoms", "--out", str(afile), *ARGS]) == 2
    (message,) = _errors(caplog)
    assert "is a file, not a folder" in message and "\n" not in message
    assert afile.read_text(encoding="utf-8") == "keep me"


def test_out_below_a_file_is_a_usage_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert main(["phantoms", "--out", str(tmp_path / "afile" / "sub"), *ARGS]) == 2
    (message,) = _errors(caplog)
    assert "cannot create the output folder" in message


def test_out_is_a_file_gives_one_line_and_no_traceback(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "phantoms", "--out", str(afile), *ARGS],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "is a file" in proc.stderr


def test_existing_dataset_is_refused_unless_force(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "keep"
    assert main(["phantoms", "--out", str(out), *ARGS]) == 0
    manifest = (out / "manifest.json").read_bytes()
    with caplog.at_level(logging.ERROR):
        other = ["--n", "5", "--seed", "9", "--size", "16", "--no-dicom"]
        assert main(["phantoms", "--out", str(out), *other]) == 2
    (message,) = _errors(caplog)
    assert "already holds a dataset" in message and "--force" in message
    assert (out / "manifest.json").read_bytes() == manifest  # untouched
    assert main(["phantoms", "--out", str(out), *ARGS, "--force"]) == 0
    assert (out / "manifest.json").read_bytes() == manifest  # same arguments, same bytes


def test_images_alone_count_as_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"not ours")
    assert main(["phantoms", "--out", str(tmp_path), *ARGS]) == 2
    assert not (tmp_path / "manifest.json").exists()


def test_unrelated_files_do_not_block_and_are_kept(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "images").mkdir()  # empty: nothing to lose
    assert main(["phantoms", "--out", str(tmp_path), *ARGS]) == 0
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (tmp_path / "manifest.json").is_file()


def test_library_refuses_only_when_asked(tmp_path: Path) -> None:
    generate(tmp_path, 2, seed=1, size=16, dicom=False)
    with pytest.raises(OutputPathError, match="already holds a dataset"):
        generate(tmp_path, 2, seed=1, size=16, dicom=False, overwrite=False)
    generate(tmp_path, 2, seed=1, size=16, dicom=False)  # the library default overwrites
    with pytest.raises(OutputPathError, match="is a file"):
        generate(tmp_path / "manifest.json", 2, seed=1, size=16, dicom=False)


def test_iu_errors_out_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    assert main(["reports", "iu-errors", "--out", str(afile), "--limit", "1"]) == 2
