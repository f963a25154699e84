"""`medvlm ingest --out` and `--no-source`: PNG names and JSON lines carry no input names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.cli import main
from data_prep.pseudonym import PseudonymKey, study_pseudonym
from tests.data_prep._files import corpus_file

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


def _phi_folder(tmp: Path) -> Path:
    folder = tmp / "SMITH^JANE_MRN12345"
    folder.mkdir()
    shutil.copy(corpus_file("CT_small.dcm"), folder / "1.3.6.1.4.1.5962.1.1.9.1.1.20040826185059.5457.dcm")
    (folder / "DOE_JOHN.bin").write_bytes(b"not an image")
    return folder


def test_png_names_are_study_id_and_index(
    tmp_path: Path, key: PseudonymKey, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = _phi_folder(tmp_path)
    out = tmp_path / "pngs"
    assert main(["ingest", "--json", "--out", str(out), str(folder)]) == 1  # the .bin line fails
    lines = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
    [ok] = [d for d in lines if d["status"] == "ok"]
    sid = study_pseudonym(key, CT_STUDY)
    assert ok["study_id"] == sid and Path(ok["image"]).name == f"{sid}-0001.png"
    assert [p.name for p in out.iterdir()] == [f"{sid}-0001.png"]
    # a second run into the same folder does not overwrite the first run's file
    assert main(["ingest", "--json", "--out", str(out), str(folder)]) == 1
    capfd.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [f"{sid}-0001-2.png", f"{sid}-0001.png"]


def test_no_source_hides_input_names(
    tmp_path: Path, key: PseudonymKey, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = _phi_folder(tmp_path)
    png = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png)
    assert main(["ingest", "--json", "--no-source", str(png), str(folder)]) == 1
    out, err = capfd.readouterr()
    lines = [json.loads(x) for x in out.splitlines()]
    assert [d["source"] for d in lines] == ["input-1#1", "input-2#1", "input-2#2"]
    assert [d["status"] for d in lines] == ["ok", "error", "ok"]
    assert lines[1]["error"] == "file 2 of the folder (no known suffix, 12 bytes) is not a DICOM file."
    for text in (out, err):
        assert "SMITH" not in text and "DOE_JOHN" not in text and "5962.1.1.9" not in text
    # without the flag, source echoes the caller's own path (documented as the one non-PHI-free field)
    assert main(["ingest", "--json", str(folder)]) == 1
    assert "SMITH" in capfd.readouterr().out


def test_out_that_is_a_file_is_one_usage_error(
    tmp_path: Path, key: PseudonymKey, capfd: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    src = str(corpus_file("CT_small.dcm"))
    assert main(["ingest", src, src, "--out", str(afile)]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "--out" in err and "Traceback" not in err
    assert afile.read_text() == "keep me"
    assert main(["ingest", src, "--out", str(afile / "sub")]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "cannot be created" in err
