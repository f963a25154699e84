"""Names inside a zip or study folder are PHI: errors, warnings, sources and logs name members by position.

A member folder named like a patient ("DOE^JOHN/...") that is corrupt, a zip bomb, a path outside
the zip, a link or an unreadable slide gets one clear sentence that says which member (its
position, suffix and size) and what failed, and neither that sentence, the report's ``source``,
the CLI's output nor any log record (caplog at DEBUG) contains "DOE" or "JOHN".
"""

from __future__ import annotations

import logging
import re
import stat
import zipfile
from pathlib import Path

import pytest

from app.cli import main
from data_prep.deid import deidentify_path
from data_prep.errors import IngestError, one_sentence
from data_prep.ingest import IngestOptions, ingest_path
from data_prep.pseudonym import PseudonymKey
from data_prep.views import load_views
from tests.data_prep._files import corpus_file

PATIENT = ("DOE", "JOHN")


def _clean(text: str) -> None:
    for part in PATIENT:
        assert part not in text.upper(), text


def _one_sentence(text: str) -> None:
    assert text.endswith(".") and text.count(". ") == 0 and "\n" not in text, text


def _zip(tmp: Path, members: dict[str, bytes], *, link: str | None = None) -> Path:
    archive = tmp / "study.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return archive


def _good() -> bytes:
    return corpus_file("CT_small.dcm").read_bytes()


CASES = {
    "corrupt": (
        {"DOE^JOHN/scan.dcm": _good()[:-5000]},
        None,
        r"^file 1 of the zip \(\.dcm, [\d,]+ bytes\) is truncated",
    ),
    "bomb": (
        {"DOE^JOHN/bomb.dcm": b"\x00" * (5 * 1024 * 1024)},
        None,
        r"^file 1 of the zip .* compression ratio over 200",
    ),
    "traversal": (
        {"../DOE^JOHN/x.dcm": _good()},
        None,
        r"^file 1 of the zip .* has a '\.\.' component in its path",
    ),
    "absolute": ({"/DOE^JOHN/x.dcm": _good()}, None, r"^file 1 of the zip .* has an absolute path"),
    "link": ({}, "DOE^JOHN/link.dcm", r"^file 1 of the zip \(\.dcm, [\d,]+ bytes\) is a symbolic link"),
    "not dicom": (
        {"DOE^JOHN/notes.DOE": b"hello" * 50},
        None,
        r"^file 1 of the zip \(no known suffix, 250 bytes\)",
    ),
    "bad slide": (
        {"DOE^JOHN/JOHN.svs": b"II*\x00" + b"\x00" * 100},
        None,
        r"^file 1 of the zip \(\.svs, 104 bytes\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_zip_member_errors_name_no_member(
    case: str, tmp_path: Path, key: PseudonymKey, caplog: pytest.LogCaptureFixture
) -> None:
    members, link, pattern = CASES[case]
    archive = _zip(tmp_path, members, link=link)
    caplog.set_level(logging.DEBUG)
    # load_views (the app's entry): the error raised
    with pytest.raises(IngestError) as info:
        load_views(archive, key=key)
    sentence = one_sentence(info.value)
    _clean(sentence)
    _one_sentence(sentence)
    assert re.search(pattern, sentence), sentence
    # ingest_path (the CLI's): the report's source and error
    [report] = list(ingest_path([archive], options=IngestOptions(key=key)))
    assert report.status == "error" and report.source == f"{archive}#file-1"
    _clean(report.error or "")
    _one_sentence(report.error or "")
    assert re.search(pattern, report.error or ""), report.error
    for record in caplog.records:
        _clean(record.getMessage())


def test_good_members_load_and_bad_ones_are_warned_about_by_position(
    tmp_path: Path, key: PseudonymKey, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _zip(
        tmp_path,
        {"DOE^JOHN/a.dcm": _good(), "DOE^JOHN/b.dcm": _good()[:-5000], "../DOE^JOHN/c.dcm": _good()},
    )
    caplog.set_level(logging.DEBUG)
    [view, *_] = load_views(archive, key=key)
    assert view.warnings[-2:] == (
        "file 2 of 3 was left out because it is truncated or corrupt.",
        "file 3 of 3 was left out because it was refused as unsafe.",
    )
    reports = list(ingest_path([archive], options=IngestOptions(key=key)))
    assert [r.source for r in reports] == [
        f"{archive}#file-{n}" for n in (2, 3, 1)
    ]  # failures first, then ok
    for text in [*view.warnings, *(r.error or "" for r in reports), *(r.message for r in caplog.records)]:
        _clean(text)


def test_study_folder_and_cli_output_name_no_member(
    tmp_path: Path, key: PseudonymKey, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "study"
    (folder / "DOE^JOHN").mkdir(parents=True)
    (folder / "DOE^JOHN" / "JOHN_DOE.dcm").write_bytes(_good()[:-5000])
    (folder / "DOE^JOHN" / "ok.dcm").write_bytes(_good())
    (folder / "DOE^JOHN" / "inner.zip").write_bytes(
        _zip(tmp_path, {"DOE/x.dcm": b"\x00" * (5 << 20)}).read_bytes()
    )
    caplog.set_level(logging.DEBUG)
    assert main(["-v", "ingest", str(folder)]) == 1
    out, err = capfd.readouterr()
    _clean(out)
    _clean(err)
    lines = out.splitlines()
    # sorted paths: DOE^JOHN/JOHN_DOE.dcm, DOE^JOHN/inner.zip, DOE^JOHN/ok.dcm
    assert f"ERROR {folder}#file-1: file 1 of the folder (.dcm, 34,206 bytes) is truncated or corrupt" in out
    assert f"ERROR {folder}#file-2#file-1: file 1 of the zip (.dcm, 5,242,880 bytes) has a compression" in out
    assert f"ok {folder}#file-3: dicom CT" in out
    assert len(lines) == 3 and "Traceback" not in err
    for record in caplog.records:
        _clean(record.getMessage())


def test_deid_names_no_member(tmp_path: Path, key: PseudonymKey, caplog: pytest.LogCaptureFixture) -> None:
    archive = _zip(
        tmp_path, {"DOE^JOHN/a.dcm": _good(), "DOE^JOHN/b.dcm": b"not dicom" * 10}, link="DOE/l.dcm"
    )
    caplog.set_level(logging.DEBUG)
    reports = list(deidentify_path(archive, tmp_path / "out", key=key))
    assert [r.status for r in reports] == ["ok", "error", "error"]
    assert reports[1].error == "file 2 of the zip (.dcm, 90 bytes) is not a DICOM file."
    for r in reports:
        _clean(f"{r.source} {r.output} {r.error}")
    for record in caplog.records:
        _clean(record.getMessage())


def test_header_values_are_not_echoed(tmp_path: Path, key: PseudonymKey) -> None:
    import pydicom

    ds = pydicom.dcmread(corpus_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "DOE JOHN"
    ds.save_as(tmp_path / "a.dcm")
    with pytest.raises(IngestError) as info:
        load_views(tmp_path / "a.dcm", key=key)
    _clean(one_sentence(info.value))
    _one_sentence(one_sentence(info.value))
