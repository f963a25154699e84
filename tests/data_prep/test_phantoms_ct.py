"""CT phantoms: HU labels agree with pixels; series written as real DICOM with HU rescale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from data_prep.phantoms.catalogue import load_catalogue
from data_prep.phantoms.ct import N_SLICES, REGION_FINDINGS, render_ct, sample_ct_findings
from data_prep.phantoms.generate import generate, iter_samples
from data_prep.phantoms.spec import Finding

SIZE = 64


def _half(mask: np.ndarray, side: str) -> bool:
    """True if every pixel of the mask lies in the patient's ``side`` half (left = image right)."""
    xs = np.nonzero(mask)[-1]
    return bool((xs >= SIZE // 2).all() if side == "left" else (xs < SIZE // 2).all())


@pytest.mark.parametrize("side", ["left", "right"])
def test_head_lesions_have_the_right_density_and_side(side: str) -> None:
    for fid, lo, hi in (("intracranial_hemorrhage", 55, 90), ("cerebral_infarct", 5, 28)):
        r = render_ct("head", (Finding(fid, {"laterality": side}),), SIZE, np.random.default_rng(1))
        mask = r.masks[fid]
        assert mask[r.key_slice].sum() > 10 and _half(mask, side)
        assert lo < float(r.hu[mask].mean()) < hi
        mirror = mask[:, :, ::-1]
        assert 25 < float(r.hu[mirror & ~mask].mean()) < 45  # the other hemisphere is normal brain


@pytest.mark.parametrize("zone", ["upper", "middle", "lower"])
def test_chest_nodule_sits_in_the_labelled_lung_and_zone(zone: str) -> None:
    f = Finding("lung_nodule", {"laterality": "right", "zone": zone, "size_mm": 20})
    r = render_ct("chest", (f,), SIZE, np.random.default_rng(2))
    mask = r.masks["lung_nodule"]
    slices = np.nonzero(mask.any(axis=(1, 2)))[0]
    third = {"upper": 0, "middle": 1, "lower": 2}[zone]
    centre = (float(slices.mean()) + 0.5) / N_SLICES  # fraction of the series from the top
    assert third / 3 <= centre <= (third + 1) / 3
    assert r.key_slice in slices and _half(mask, "right")
    assert float(r.hu[mask].mean()) > -100  # soft tissue inside aerated lung
    assert r.pixels.shape == (SIZE, SIZE) and r.pixels.min() >= 0.0 and r.pixels.max() <= 1.0


def test_chest_effusion_is_posterior_fluid_on_the_labelled_side() -> None:
    for sev in ("small", "large"):
        f = Finding("pleural_effusion", {"laterality": "left", "severity": sev})
        r = render_ct("chest", (f,), SIZE, np.random.default_rng(3))
        mask = r.masks["pleural_effusion"]
        ys = np.nonzero(mask)[1]
        assert _half(mask, "left") and ys.min() >= SIZE * 0.45  # dependent: posterior = bottom
        assert abs(float(r.hu[mask].mean()) - 15) < 10
    small = render_ct(
        "chest",
        (Finding("pleural_effusion", {"laterality": "left", "severity": "small"}),),
        SIZE,
        np.random.default_rng(3),
    )
    assert r.masks["pleural_effusion"].sum() > 1.5 * small.masks["pleural_effusion"].sum()


def test_region_and_findings_are_consistent() -> None:
    cat = load_catalogue()
    for seed in range(30):
        region, findings = sample_ct_findings(cat, np.random.default_rng(seed))
        assert all(f.id in REGION_FINDINGS[region] for f in findings)
    with pytest.raises(ValueError, match="cannot be drawn"):
        render_ct(
            "head",
            (Finding("lung_nodule", {"laterality": "left", "zone": "upper", "size_mm": 9}),),
            32,
            np.random.default_rng(0),
        )


def test_ct_questions_only_ask_about_the_region() -> None:
    for s in iter_samples(30, seed=6, kinds=("ct",), size=32):
        assert s.ct is not None and s.spec.region == s.ct.region
        asked = {qa.finding for qa in s.qas if qa.template == "existence"}
        assert asked <= set(REGION_FINDINGS[s.ct.region])


def test_ct_series_dicom_stores_hu_with_rescale(tmp_path: Path) -> None:
    generate(tmp_path, 4, seed=2, kinds=("ct",), size=32, dicom=True)
    samples = {s.spec.study_id: s for s in iter_samples(4, seed=2, kinds=("ct",), size=32)}
    for sid, sample in samples.items():
        files = sorted((tmp_path / "dicom" / sid).glob("*.dcm"))
        assert len(files) == N_SLICES
        dss = [pydicom.dcmread(p) for p in files]
        assert len({ds.SeriesInstanceUID for ds in dss}) == 1
        zs = [float(ds.ImagePositionPatient[2]) for ds in dss]
        assert zs == sorted(zs, reverse=True)
        assert [float(v) for v in dss[0].ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert sample.ct is not None
        for k, ds in enumerate(dss):
            assert ds.Modality == "CT" and float(ds.RescaleIntercept) == -1024
            hu = apply_modality_lut(ds.pixel_array, ds)
            assert np.array_equal(hu.astype(np.int16), sample.ct.hu[k])
        assert float(dss[0].WindowWidth) == (80 if sample.ct.region == "head" else 1600)
