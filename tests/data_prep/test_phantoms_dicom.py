"""Generated radiographs are real DICOM: pixel module tags, both photometric interpretations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from data_prep.phantoms.generate import generate, iter_samples


def test_dicom_round_trip_and_variety(tmp_path: Path) -> None:
    generate(tmp_path, 12, seed=4, size=32, dicom=True)
    samples = {s.spec.study_id: s for s in iter_samples(12, seed=4, size=32)}
    seen = set()
    for path in sorted((tmp_path / "dicom").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        seen.add((ds.Modality, ds.PhotometricInterpretation))
        assert ds.Rows == ds.Columns == 32 and ds.BitsStored == 12 and ds.SamplesPerPixel == 1
        assert ds.ViewPosition == "PA" and list(ds.PatientOrientation) == ["L", "F"]
        assert float(ds.PixelSpacing[0]) > 0
        arr = ds.pixel_array.astype(np.float32) / 4095.0
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = 1.0 - arr
        expected = samples[ds.AccessionNumber].pixels
        assert np.abs(arr - expected).max() < 1e-3
    assert {m for m, _ in seen} == {"CR", "DX"}
    assert {p for _, p in seen} == {"MONOCHROME1", "MONOCHROME2"}


def test_dicom_is_reproducible(tmp_path: Path) -> None:
    generate(tmp_path / "a", 3, seed=1, size=32)
    generate(tmp_path / "b", 3, seed=1, size=32)
    for a in sorted((tmp_path / "a" / "dicom").glob("*.dcm")):
        assert a.read_bytes() == (tmp_path / "b" / "dicom" / a.name).read_bytes()
