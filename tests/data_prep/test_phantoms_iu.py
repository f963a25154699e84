"""Error injection on real report text (IU X-ray reports read at run time, never stored in the repo)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from app.cli import main
from data_prep.phantoms.iu_reports import (
    IuReportsError,
    find_iu_archive,
    iter_iu_reports,
    parse_report_xml,
    write_iu_errors,
)

# A made-up report in the archive's XML layout (no IU text is copied here).
_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{uid}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation></eCitation>"""


def _archive(tmp_path: Path, reports: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / "reports.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for uid, findings, impression in reports:
            data = _XML.replace(b"{uid}", uid.encode())
            data = data.replace(b"{findings}", findings.encode()).replace(
                b"{impression}", impression.encode()
            )
            info = tarfile.TarInfo(f"ecgen-radiology/{uid}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _outside(text: str, spans: list[list[int]]) -> str:
    out, pos = [], 0
    for a, b in sorted(spans):
        out.append(text[pos:a])
        pos = b
    return "".join(out) + text[pos:]


def test_parse_and_inject_on_a_made_up_archive(tmp_path: Path) -> None:
    rows = [
        (
            str(i),
            f"There is a small {side} pleural effusion. No pneumothorax. Heart size is normal.",
            f"{side} effusion.",
        )
        for i, side in zip(range(40), ["left", "right"] * 20, strict=True)
    ]
    rows.append(("99", "", ""))  # empty reports are skipped
    archive = _archive(tmp_path, rows)
    reports = list(iter_iu_reports(archive))
    assert len(reports) == 40 and reports[0].text.startswith("FINDINGS: There is a small")
    manifest = write_iu_errors(tmp_path / "out", seed=1, archive=archive)
    assert manifest["n"] == 40
    records = []
    for split in ("train", "val", "test"):
        lines = (tmp_path / "out" / split / "iu_report_errors.jsonl").read_text().splitlines()
        records += [json.loads(line) for line in lines]
    assert len(records) == 40
    assert 0.3 < sum(r["has_error"] for r in records) / 40 < 0.7
    for r in records:
        assert _outside(r["report"], r["spans"]) == _outside(r["original_report"], r["original_spans"])
        assert (r["report"] != r["original_report"]) == r["has_error"]
    types = {r["error_type"] for r in records if r["has_error"]}
    assert {"wrong_laterality", "wrong_severity", "negation_flip"} <= types


def test_malformed_xml_and_missing_archive_raise(tmp_path: Path) -> None:
    with pytest.raises(IuReportsError, match="malformed"):
        parse_report_xml(b"<eCitation>")
    with pytest.raises(IuReportsError, match="reading"):
        list(iter_iu_reports(tmp_path / "missing.tgz"))


def test_real_iu_reports_when_installed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        find_iu_archive()
    except IuReportsError as e:
        pytest.skip(f"IU reports not installed: {e}")
    assert main(["reports", "iu-errors", "--out", str(tmp_path), "--limit", "300", "--seed", "2"]) == 0
    assert "wrote 300" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "iu_manifest.json").read_text())
    assert manifest["n"] == 300 and "CC BY-NC-ND" in manifest["source"]
    records = [
        json.loads(line)
        for split in ("train", "val", "test")
        for line in (tmp_path / split / "iu_report_errors.jsonl").read_text().splitlines()
    ]
    assert len(records) == 300
    for r in records:
        assert _outside(r["report"], r["spans"]) == _outside(r["original_report"], r["original_spans"])
    assert len({r["error_type"] for r in records}) >= 5
