"""``medvlm check-reports`` end to end over real DICOM files (pydicom's corpus) with a scripted model.

The export holds a study folder named like a patient ("DOE^JOHN"), a CT the chest model's scope
refuses, a corrupt file, a missing folder and an empty report; the job checks what it can, records
one line per study, never names a folder, and resumes where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file

from app.cli import main
from app.commands import model as model_cmd
from app.commands import reportcheck as command
from app.reportcheck.job import ModelMeta
from app.reportcheck.verdict import ImageChecker
from app.store import AuditKey, Store, make_engine
from data_prep.pseudonym import PseudonymKey
from medvlm import GenerationSettings, ModelScope
from medvlm.assistant import Assistant
from tests.app.reportcheck.fakes import ScriptedBackend

SITE_KEY = "report-check-test-site-key-0123"
PHI = ("DOE^JOHN", "DOE", "JOHN", "DOE^JANE", "ACC-0042", "Smith")
LATERALITY = (
    "FINDINGS: There is a small left pleural effusion, discussed with Dr. Smith. No pneumothorax.\n"
    "IMPRESSION: Small right pleural effusion."
)
NORMAL = "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax.\nIMPRESSION: Normal chest."
EFFUSION = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Small left pleural effusion."


def _real(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not available offline")
    return Path(str(path))


@pytest.fixture
def export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A hospital export: study folders, a JSONL of reports, and a scripted model wired in."""
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", SITE_KEY)
    monkeypatch.setenv("MEDVLM_HOME", str(tmp_path / "home"))
    studies = tmp_path / "export"
    chest, ct = _real("RG1_UNCR.dcm"), _real("CT_small.dcm")
    for folder, source in (("DOE^JOHN", chest), ("ACC-0042", chest), ("CT-0001", ct), ("EMPTY-0001", chest)):
        (studies / folder).mkdir(parents=True)
        shutil.copy(source, studies / folder / f"{folder}.dcm")
    (studies / "DOE^JANE").mkdir()
    (studies / "DOE^JANE" / "DOE^JANE.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 40)
    rows = [
        ("DOE^JOHN", LATERALITY),  # rules: wrong laterality
        ("ACC-0042", NORMAL),  # the model sees an effusion the report negates (grounded)
        ("CT-0001", EFFUSION),  # a CT: the chest model's scope refuses it; rules only
        ("DOE^JANE", NORMAL),  # corrupt DICOM
        ("MISSING-0001", NORMAL),  # no such folder
        ("EMPTY-0001", "  "),  # empty report
        ("../outside", NORMAL),  # not a plain folder name
    ]
    reports = tmp_path / "reports.jsonl"
    reports.write_text("".join(json.dumps({"study": s, "report": r}) + "\n" for s, r in rows))

    def fake_checker(args: argparse.Namespace) -> tuple[ImageChecker, ModelMeta]:
        backend = ScriptedBackend(present=frozenset({"pleural effusion"}))
        scope = ModelScope(frozenset({"CR", "DX"}), frozenset({"CHEST"}), name="the built-in model")
        settings = GenerationSettings(max_new_tokens=8, scope=scope)
        checker = ImageChecker(Assistant(backend), settings, args.image_check, model_cmd.views_to_request)
        info = backend.info()
        return checker, ModelMeta(info.model_version, info.adapter_version, True, model_cmd.SYNTHETIC_NOTICE)

    monkeypatch.setattr(command, "build_checker", fake_checker)
    return {
        "studies": studies,
        "reports": reports,
        "out": tmp_path / "results.jsonl",
        "db": tmp_path / "db.sqlite",
    }


def _run(export: dict[str, Path], *extra: str) -> int:
    argv = ["-v", "check-reports", "--studies", str(export["studies"]), "--reports", str(export["reports"])]
    argv += ["--out", str(export["out"]), "--db-url", f"sqlite:///{export['db']}", *extra]
    return main(argv)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_batch_end_to_end_without_phi(
    export: dict[str, Path], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert _run(export, "--json") == 1  # some studies failed
    out, err = capsys.readouterr()
    records = _records(export["out"])
    assert [r["row"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    by_row = {r["row"]: r for r in records}
    assert all(r["study_id"].startswith("S-") and len(r["study_id"]) == 22 for r in records)
    assert len({r["study_id"] for r in records}) == 7

    john = by_row[1]
    assert john["status"] == "checked" and john["verdict"] == "error" and john["has_error"]
    assert john["error_type"] == "wrong_laterality" and john["image_checked"] and john["grounded"] is True
    (rule,) = [e for e in john["evidence"] if e["source"] == "consistency"]
    assert rule["check"] == "laterality_conflict" and [s["section"] for s in rule["sentences"]] == [
        "findings",
        "impression",
    ]
    assert john["model"] == "scripted@0123456789ab" and john["adapter"] == "adapter@ba9876543210"
    assert john["synthetic_only_model"] is True and "synthetic" in john["notice"]
    assert john["views"] and "CR" in john["views"][0] and john["audit"] == {"recorded": 9}
    # Both chest studies hold the same real file: one DICOM study id, two export ids.
    assert john["dicom_study_id"].startswith("S-") and john["dicom_study_id"] == by_row[2]["dicom_study_id"]

    acc = by_row[2]
    assert acc["verdict"] == "error" and acc["error_types"] == ["negation_flip"]
    (image,) = acc["evidence"]
    assert image["source"] == "image" and image["finding"] == "pleural_effusion" and image["grounded"] is True
    assert acc["image_check"]["grounded_answers"] == 8 and acc["image_check"]["ungrounded_answers"] == 0

    ct = by_row[3]
    assert ct["status"] == "checked" and ct["image_check"]["refused"] and not ct["image_checked"]
    assert ct["verdict"] == "no_error" and ct["grounded"] is None

    failed = {r["row"]: r["error"] for r in records if r["status"] == "failed"}
    assert set(failed) == {4, 5, 6, 7}
    assert "reading the images failed" in failed[4] and "does not exist" in failed[5] and "empty" in failed[6]
    assert "plain folder name" in failed[7]
    assert all(e.endswith(".") and "\n" not in e for e in failed.values())

    summary = json.loads(out)
    assert summary["studies"] == 7 and summary["checked"] == 3 and summary["failed"] == 4
    assert summary["verdicts"] == {"error": 2, "possible_error": 0, "no_error": 1}
    assert summary["error_types"] == {"negation_flip": 1, "wrong_laterality": 1}
    assert [f["row"] for f in summary["failures"]] == [4, 5, 6, 7]

    # No folder, file or patient name anywhere: results, stdout, stderr, log records, database.
    key = AuditKey.derive(PseudonymKey(SITE_KEY.encode(), "env"))
    store = Store.open(make_engine(f"sqlite:///{export['db']}"), key)
    # Rows 1-3: the rules' result and 8 questions each (row 3's refused questions are recorded too).
    assert store.stats().interactions == 3 * 9 and store.stats().actors["service"] == 1
    assert store.stats().actors["clinician"] == 0  # the job is recorded as a service, not a person
    assert store.verify().ok
    texts = [export["out"].read_text(), out, err, caplog.text, export["db"].read_bytes().decode("latin-1")]
    for text in texts:
        for name in PHI:
            assert name not in text


def test_resume_skips_done_studies_and_repairs_a_cut_line(
    export: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(export, "--limit", "2", "--no-db", "--image-check", "none") == 0
    first = _records(export["out"])
    assert [r["row"] for r in first] == [1, 2]
    assert _run(export, "--no-db", "--image-check", "none") == 2  # results exist: --resume needed
    assert "--resume" in capsys.readouterr().err
    with export["out"].open("a") as handle:  # a run killed in the middle of a line
        handle.write('{"study_id": "S-00')
    # Rules only: the images are not read, so the corrupt study (row 4) passes this time.
    assert _run(export, "--resume", "--no-db", "--image-check", "none", "--json") == 1
    records = _records(export["out"])  # every line parses: the cut line was dropped
    assert records[:2] == first
    assert [r["row"] for r in records] == [1, 2, 3, 4, 5, 6, 7]
    summary = json.loads(capsys.readouterr().out)
    assert summary["this_run"] == {"checked": 2, "failed": 3, "skipped": 2, "duplicates": 0}
    assert summary["studies"] == 7 and len({r["study_id"] for r in records}) == 7
    assert _run(export, "--resume", "--no-db", "--image-check", "none") == 1  # the failures stay failures
    assert len(_records(export["out"])) == 7
    assert _run(export, "--retry-failed", "--no-db", "--image-check", "none") == 2  # needs --resume
    assert "--resume" in capsys.readouterr().err
    # The missing study arrives: a retry checks the three failed studies again, and only those.
    (export["studies"] / "MISSING-0001").mkdir()
    shutil.copy(_real("RG1_UNCR.dcm"), export["studies"] / "MISSING-0001" / "x.dcm")
    retry = ["--resume", "--retry-failed", "--no-db", "--image-check", "none", "--json"]
    assert _run(export, *retry) == 1  # the empty report and the bad name still fail
    summary = json.loads(capsys.readouterr().out)
    assert summary["this_run"] == {"checked": 1, "failed": 2, "skipped": 4, "duplicates": 0}
    assert summary["studies"] == 7 and summary["checked"] == 5 and summary["failed"] == 2
    records = _records(export["out"])
    assert len(records) == 10 and [r["row"] for r in records[7:]] == [5, 6, 7]
    assert records[7]["status"] == "checked"


def test_a_second_run_on_the_same_results_file_is_refused(
    export: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from app.reportcheck.job import ResultsFile

    with ResultsFile(export["out"]).lock():
        assert _run(export, "--resume", "--no-db", "--image-check", "none") == 2
    assert "another check-reports run" in capsys.readouterr().err
    assert _run(export, "--resume", "--no-db", "--image-check", "none") == 1  # released: it runs


def test_csv_reports_and_text_summary(
    export: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = tmp_path / "reports.csv"
    with reports.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Study_Folder", "Report_Text"])
        writer.writerow(["DOE^JOHN", LATERALITY])
        writer.writerow(["CT-0001", EFFUSION])
    export["reports"] = reports
    assert _run(export, "--no-db") == 0
    out = capsys.readouterr().out
    assert "2 studies: 2 checked, 0 failed" in out and "wrong_laterality" in out and "synthetic" in out
    assert "DOE" not in out


def test_unreadable_inputs_are_one_sentence(
    export: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    export["studies"] = export["studies"] / "nope"
    assert _run(export, "--no-db") == 2
    bad = export["reports"].with_suffix(".csv")
    bad.write_text("name,text\nx,y\n")
    export["studies"] = export["studies"].parent
    export["reports"] = bad
    assert _run(export, "--no-db") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "study column" in err


@pytest.mark.slow
def test_builtin_model_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real built-in model (prepared under $MEDVLM_HOME; about 20 s once prepared) on a CR and a CT."""
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", SITE_KEY)
    studies = tmp_path / "export"
    for folder, name in (("DOE^JOHN", "RG1_UNCR.dcm"), ("CT-0001", "CT_small.dcm")):
        (studies / folder).mkdir(parents=True)
        shutil.copy(_real(name), studies / folder / "image.dcm")
    reports = tmp_path / "reports.jsonl"
    reports.write_text(
        json.dumps({"study": "DOE^JOHN", "report": LATERALITY})
        + "\n"
        + json.dumps({"study": "CT-0001", "report": NORMAL})
        + "\n"
    )
    out = tmp_path / "results.jsonl"
    argv = ["check-reports", "--studies", str(studies), "--reports", str(reports), "--out", str(out)]
    assert main([*argv, "--no-db", "--image-check", "both"]) == 0
    cr, ct = _records(out)
    assert cr["model"].startswith("builtin-") and cr["synthetic_only_model"] and "synthetic" in cr["notice"]
    assert cr["image_checked"] and len(cr["image_check"]["answers"]) == 9 and cr["has_error"]
    assert all(a["grounded"] in (True, False) for a in cr["image_check"]["answers"])
    assert ct["image_check"]["refused"] and not ct["image_checked"]  # outside the built-in model's scope
    assert "DOE" not in out.read_text()
