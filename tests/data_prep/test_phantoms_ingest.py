"""Generated DICOM files and CT series ingest with status ok; de-identification keeps labels true."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from data_prep.phantoms.generate import generate, iter_samples

ingest = pytest.importorskip("data_prep.ingest", reason="data_prep.ingest (ingestion helper) not available")
deid = pytest.importorskip("data_prep.deid", reason="data_prep.deid (ingestion helper) not available")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    generate(out, 8, seed=5, kinds=("cxr", "ct"), size=64, dicom=True)
    return out


def test_every_generated_dicom_ingests_ok(dataset: Path) -> None:
    inputs = sorted((dataset / "dicom").iterdir())
    reports = list(ingest.ingest_path(inputs))
    assert len(reports) == len(inputs) == 8
    for r in reports:
        assert r.status == "ok", (r.source, r.error)
    kinds = {Path(r.source).name.split("-")[0]: r.kind for r in reports}
    assert kinds["ct"] == "dicom-series"
    shapes = {r.shape for r in reports if Path(r.source).name.startswith("ct")}
    assert all(s is not None and 8 in s for s in shapes)


def test_deidentification_keeps_pixels_and_geometry(dataset: Path) -> None:
    samples = {s.spec.study_id: s for s in iter_samples(8, seed=5, kinds=("cxr", "ct"), size=64)}
    files = sorted((dataset / "dicom").glob("cxr-*.dcm")) + sorted(
        (dataset / "dicom").glob("ct-*/slice_003.dcm")
    )
    for path in files:
        ds = pydicom.dcmread(path)
        sid = path.stem if path.suffix == ".dcm" and path.stem.startswith("cxr") else path.parent.name
        result = deid.deidentify_dataset(ds, key="phantom-test-key-0123456789")
        clean = result.dataset
        assert "PHANTOM" not in str(clean.get("PatientName", ""))
        assert np.array_equal(clean.pixel_array, ds.pixel_array)
        for tag in ("PhotometricInterpretation", "Rows", "Columns", "PixelSpacing"):
            assert clean.get(tag) == ds.get(tag), tag
        sample = samples[sid]
        if sample.ct is not None:
            assert (
                float(clean.RescaleIntercept) == -1024
                and clean.ImageOrientationPatient == ds.ImageOrientationPatient
            )
            assert [float(v) for v in clean.ImagePositionPatient] == [
                float(v) for v in ds.ImagePositionPatient
            ]
        else:
            # the labels refer to patient sides: the PA orientation must survive de-identification
            assert list(clean.PatientOrientation) == ["L", "F"] and clean.ViewPosition == "PA"
            arr = clean.pixel_array.astype(np.float32) / 4095
            if clean.PhotometricInterpretation == "MONOCHROME1":
                arr = 1 - arr
            assert np.abs(arr - sample.pixels).max() < 1e-3


def test_medvlm_ingest_cli_reports_every_study_ok(
    dataset: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json

    from app.cli import main

    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", "phantom-test-key-0123456789abcdef")
    monkeypatch.setenv("MEDVLM_HOME", str(tmp_path))
    assert main(["ingest", "--json", str(dataset / "dicom")]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 8 and all(rec["status"] == "ok" for rec in lines)


def test_ingested_radiographs_show_what_was_rendered(dataset: Path) -> None:
    """MONOCHROME1 and MONOCHROME2 files both come back with the rendered polarity (lungs dark)."""
    from data_prep.pseudonym import PseudonymKey

    samples = {s.spec.study_id: s for s in iter_samples(8, seed=5, kinds=("cxr", "ct"), size=64)}
    seen = set()
    key = PseudonymKey(b"phantom-test-key-0123456789abcdef", "test")
    for path in sorted((dataset / "dicom").glob("cxr-*.dcm")):
        seen.add(str(pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation))
        view = ingest.load_views(path, key=key)[0]
        expected = samples[path.stem].pixels
        assert view.pixels.shape == expected.shape
        corr = np.corrcoef(view.pixels.astype(np.float64).ravel(), expected.ravel())[0, 1]
        assert corr > 0.9, (path.name, corr)
    assert seen == {"MONOCHROME1", "MONOCHROME2"}
