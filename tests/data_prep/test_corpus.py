"""`medvlm ingest` over every pydicom/pydicom-data file with pixel data (real files nobody here wrote)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from data_prep.pseudonym import PseudonymKey


def test_ingest_cli_over_the_pixel_corpus(
    pixel_corpus: list[Path], key: PseudonymKey, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert len(pixel_corpus) >= 150
    code = main(["ingest", "--json", *map(str, pixel_corpus)])
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(pixel_corpus)
    ok = [d for d in lines if d["status"] == "ok"]
    bad = [d for d in lines if d["status"] == "error"]
    assert len(ok) >= 155, [d["error"] for d in bad]
    assert code == (1 if bad else 0)
    assert "Traceback" not in err and "Traceback" not in out
    for d in bad:
        msg = d["error"]
        assert msg and "\n" not in msg and msg.endswith(".") and len(msg) <= 300
        assert "Traceback" not in msg
    for d in ok:
        assert d["kind"] == "dicom" and d["frames"] >= 1 and d["shape"]
        assert d["study_id"] is None or d["study_id"].startswith("S-")
        assert set(d) >= {
            "source",
            "status",
            "kind",
            "modality",
            "body_part",
            "photometric",
            "frames",
            "shape",
            "window",
            "study_id",
            "image",
            "warnings",
        }
    # the deliberately broken files are among the failures, with the reason named
    by_name = {Path(d["source"]).name: d for d in lines}
    assert by_name["MR_truncated.dcm"]["status"] == "error"
    assert "truncated or corrupt" in by_name["MR_truncated.dcm"]["error"]
    assert "transfer syntax" in by_name["meta_missing_tsyntax.dcm"]["error"]
    # pseudonymous ids never repeat the DICOM StudyInstanceUID
    import pydicom

    ds = pydicom.dcmread(pixel_corpus[0], force=True, stop_before_pixels=True)
    uid = str(ds.get("StudyInstanceUID", "x"))
    assert all(uid not in json.dumps(d) for d in lines)
