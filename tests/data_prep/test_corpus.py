"""`medvlm ingest` over every pydicom/pydicom-data file with pixel data (real files nobody here wrote).

One CLI run (``--json --no-source --out DIR``) serves two checks: the shape of every line, and that
no identifying value of any file that ingested ok (names, IDs, institution, non-registered UIDs,
dates) reaches stdout, stderr or a written file name.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from data_prep.pseudonym import PseudonymKey

_ID_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "InstitutionName",
    "StudyID",
)
_LINE = re.compile(r"^input-(\d+)#1$")


def _values(elem_value: Any) -> list[str]:
    if isinstance(elem_value, list | tuple) or type(elem_value).__name__ == "MultiValue":
        return [str(v).strip() for v in elem_value]
    return [str(elem_value).strip()] if elem_value not in (None, "") else []


def _identifiers(path: Path) -> set[str]:
    """Identifying values of one file: names and IDs (4+ characters, 6+ if all digits), dates (6+), UIDs."""
    import pydicom
    from pydicom.uid import UID_dictionary

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        found: set[str] = set()
        for kw in _ID_KEYWORDS:
            found |= {v for v in _values(ds.get(kw)) if len(v) >= 4}
        for elem in ds.iterall():
            if elem.VR == "UI":
                found |= {v.rstrip("\x00") for v in _values(elem.value) if v not in UID_dictionary}
            elif elem.VR in ("DA", "DT"):
                found |= {v for v in _values(elem.value) if len(v) >= 6}
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            found |= {v for v in _values(meta.get("MediaStorageSOPInstanceUID")) if v not in UID_dictionary}
    # a short all-digit value ("0010", "4900") also occurs as a shape, window or PNG index: digits
    # count from 6 characters, like dates
    return {v for v in found if len(v) >= (6 if v.isdigit() else 4)}


def test_ingest_cli_over_the_pixel_corpus(
    pixel_corpus: list[Path], key: PseudonymKey, capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert len(pixel_corpus) >= 150
    png_dir = tmp_path / "png"
    code = main(["ingest", "--json", "--no-source", "--out", str(png_dir), *map(str, pixel_corpus)])
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(pixel_corpus)
    # one line per file, in order: input-N#1 is pixel_corpus[N - 1]
    by_file = {}
    for d in lines:
        match = _LINE.match(d["source"])
        assert match, d["source"]
        by_file[pixel_corpus[int(match.group(1)) - 1]] = d
    assert len(by_file) == len(pixel_corpus)
    ok = {p: d for p, d in by_file.items() if d["status"] == "ok"}
    bad = [d for d in lines if d["status"] == "error"]
    assert len(ok) >= 155, [d["error"] for d in bad]
    assert code == (1 if bad else 0)
    assert "Traceback" not in err and "Traceback" not in out
    for d in bad:
        msg = d["error"]
        assert msg and "\n" not in msg and msg.endswith(".") and len(msg) <= 300
        assert "Traceback" not in msg
    written = sorted(p.name for p in png_dir.iterdir())
    assert len(written) == len(ok)
    assert all(re.fullmatch(r"(S-[0-9a-f]{20}|nostudy)-\d{4}(-\d+)?\.png", n) for n in written), written
    for d in ok.values():
        assert d["kind"] == "dicom" and d["frames"] >= 1 and d["shape"]
        assert d["study_id"] is not None and re.fullmatch(r"S-[0-9a-f]{20}", d["study_id"]), d["study_id"]
        assert Path(d["image"]).name in written
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
    names = {p.name: d for p, d in by_file.items()}
    assert names["MR_truncated.dcm"]["status"] == "error"
    assert "truncated or corrupt" in names["MR_truncated.dcm"]["error"]
    assert "transfer syntax" in names["meta_missing_tsyntax.dcm"]["error"]
    # no identifying value of any file that ingested ok reaches stdout, stderr or a PNG name
    file_names = "\n".join(written)
    leaks = []
    for path in ok:
        for value in _identifiers(path):
            for where, text in (("stdout", out), ("stderr", err), ("file names", file_names)):
                if value in text:
                    leaks.append((path.name, value, where))
    assert not leaks, leaks[:10]
    assert sum(len(_identifiers(p)) for p in ok) > 500  # the check above had something to find
