"""Reading the export: CSV and JSONL reports, plain folder names, names scrubbed from messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.reportcheck.inputs import ReportsFileError, read_reports, scrub_names, study_id, study_path
from data_prep.pseudonym import PseudonymKey

KEY = PseudonymKey(b"inputs-test-site-key-0123", "test")


def test_jsonl_rows_and_problems(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"Study": "A1", "Report_Text": "No effusion."}\n\nnot json\n[1]\n{"report": "x"}\n')
    entries = read_reports(path)
    assert [(e.row, e.folder, e.report, e.problem is None) for e in entries] == [
        (1, "A1", "No effusion.", True),
        (3, "", "", False),
        (4, "", "", False),
        (5, "", "x", False),
    ]
    assert "A1" not in repr(entries[0]) and "No effusion" not in repr(entries[0])
    ids = {study_id(KEY, e) for e in entries}
    assert len(ids) == 4 and all(i.startswith("S-") for i in ids)


def test_csv_needs_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("name,text\nx,y\n")
    with pytest.raises(ReportsFileError, match="study column"):
        read_reports(path)
    with pytest.raises(ReportsFileError, match="does not exist"):
        read_reports(tmp_path / "none.csv")


def test_study_path_takes_plain_names_only(tmp_path: Path) -> None:
    (tmp_path / "DOE^JOHN").mkdir()
    (entry,) = [e for e in read_reports(_jsonl(tmp_path, "DOE^JOHN")) if e.folder]
    assert study_path(tmp_path, entry) == tmp_path / "DOE^JOHN"
    for name in ("..", "../DOE^JOHN", "a/b", "missing"):
        (bad,) = read_reports(_jsonl(tmp_path, name))
        with pytest.raises(ValueError) as info:
            study_path(tmp_path, bad)
        assert name not in str(info.value)


def test_scrub_names_keeps_windows_and_drops_paths(tmp_path: Path) -> None:
    folder = tmp_path / "DOE^JOHN"
    folder.mkdir()
    (folder / "JOHN_DOE_1.dcm").write_bytes(b"")
    message = f"JOHN_DOE_1.dcm in {folder} failed; DOE^JOHN; window C15000/W30000; /srv/pacs/x.dcm"
    clean = scrub_names(message, folder)
    assert "DOE" not in clean and "JOHN" not in clean and "/srv" not in clean
    assert "C15000/W30000" in clean


def _jsonl(tmp_path: Path, folder: str) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_text(f'{{"study": "{folder}", "report": "No effusion."}}\n')
    return path
