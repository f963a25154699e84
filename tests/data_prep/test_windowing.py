"""Windowing, presets and MONOCHROME1 on real files (CT_small, the RG1_UNCR chest radiograph)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from data_prep.dicom import dicom_view, read_dataset
from data_prep.pseudonym import PseudonymKey
from data_prep.types import IngestLimits
from data_prep.windowing import CT_PRESETS, apply_window, get_preset
from tests.data_prep._files import corpus_file


def test_apply_window_follows_the_dicom_linear_function() -> None:
    v = np.array([-2000, -1350, -600, 149, 150, 5000], dtype=np.float32)
    out = apply_window(v, -600, 1500)
    assert out[0] == 0 and out[1] == 0 and out[-1] == 255 and out[-2] == 255
    assert 126 <= out[2] <= 129
    assert apply_window(np.array([0.0, 1.0]), 0.5, 1).tolist() == [0, 255]


def test_presets_exist_and_unknown_preset_is_refused() -> None:
    assert set(CT_PRESETS) == {"lung", "mediastinum", "bone", "brain", "abdomen", "stroke"}
    with pytest.raises(ValueError, match="known presets"):
        get_preset("liver-ish")


def test_ct_air_is_darkest_under_lung_and_black_under_mediastinum(key: PseudonymKey) -> None:
    path = corpus_file("CT_small.dcm")
    ds = read_dataset(path, name=path.name, limits=IngestLimits())
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    air = hu < -800
    tissue = (hu > 0) & (hu < 100)
    assert air.sum() > 50 and tissue.sum() > 50
    lung, _ = dicom_view(ds, name=path.name, limits=IngestLimits(), key=key, preset="lung")
    # W1500/L-600 maps -1000 HU to 23% grey and this file's air (about -850 HU) to about 35%:
    # the darkest part of the image, well below soft tissue (the lung window is wide by design)
    assert apply_window(np.array([-1000.0]), -600, 1500)[0] == 60
    assert lung.pixels[air].mean() < 0.4 * 255
    assert lung.pixels[air].max() < lung.pixels[tissue].min()
    assert lung.window is not None and lung.window.preset == "lung"
    assert "lung" in lung.description
    med, _ = dicom_view(ds, name=path.name, limits=IngestLimits(), key=key, preset="mediastinum")
    assert med.pixels[air].max() == 0
    bone, _ = dicom_view(ds, name=path.name, limits=IngestLimits(), key=key, preset="bone")
    assert bone.pixels[tissue].mean() < med.pixels[tissue].mean()


def test_monochrome1_radiograph_is_inverted(key: PseudonymKey) -> None:
    path = corpus_file("RG1_UNCR.dcm")
    ds = read_dataset(path, name=path.name, limits=IngestLimits())
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    view, decoded = dicom_view(ds, name=path.name, limits=IngestLimits(), key=key)
    stored = decoded.stored.astype(np.float64)[::8, ::8]
    shown = view.pixels.astype(np.float64)[::8, ::8]
    assert np.corrcoef(stored.ravel(), shown.ravel())[0, 1] < -0.9  # high stored value = dark
    assert "MONOCHROME1 inverted" in view.description
    assert view.modality == "CR" and view.body_part == "CHEST" and view.pixels.shape == (1955, 1841)


def test_multiframe_frame_choice_and_palette_and_rgb(key: PseudonymKey) -> None:
    path = corpus_file("emri_small.dcm")
    ds = pydicom.dcmread(path)
    lim = IngestLimits()
    v3, d3 = dicom_view(ds, name=path.name, limits=lim, key=key, frame=3)
    assert d3.index == 3 and d3.frames == 10 and "frame 4 of 10" in v3.description
    np.testing.assert_array_equal(d3.stored, ds.pixel_array[3])
    _, dmid = dicom_view(ds, name=path.name, limits=lim, key=key)
    assert dmid.index == 5
    with pytest.raises(ValueError, match="out of range"):
        dicom_view(ds, name=path.name, limits=lim, key=key, frame=10)
    pal = corpus_file("OBXXXX1A.dcm")
    pv, _ = dicom_view(pydicom.dcmread(pal), name=pal.name, limits=lim, key=key)
    assert pv.pixels.ndim == 3 and pv.pixels.dtype == np.uint8 and "palette" in pv.description
    us = corpus_file("US1_UNCR.dcm")
    uv, _ = dicom_view(pydicom.dcmread(us), name=us.name, limits=lim, key=key)
    assert uv.pixels.shape[-1] == 3 and uv.window is None
    assert any("burned-in" in w for w in uv.warnings)


def test_enhanced_multiframe_uses_per_frame_functional_groups(key: PseudonymKey) -> None:
    from pydicom.dataset import Dataset

    from tests.data_prep._synth import ct_slice

    ds = ct_slice(0, z=0.0, instance=1, series_uid="1.2.3")
    del ds.RescaleIntercept, ds.RescaleSlope
    frames = np.stack([np.full((16, 16), 100, np.uint16), np.full((16, 16), 100, np.uint16)])
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    shared = Dataset()
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = 0, 400
    shared.FrameVOILUTSequence = [voi]
    per = []
    for intercept in (-1000, 0):
        item, pvt = Dataset(), Dataset()
        pvt.RescaleIntercept, pvt.RescaleSlope, pvt.RescaleType = intercept, 1, "HU"
        item.PixelValueTransformationSequence = [pvt]
        per.append(item)
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = per
    v0, _ = dicom_view(ds, name="enh", limits=IngestLimits(), key=key, frame=0)
    v1, _ = dicom_view(ds, name="enh", limits=IngestLimits(), key=key, frame=1)
    assert v0.pixels.max() == 0  # -900 HU under C0/W400: black
    assert v1.pixels.min() == v1.pixels.max() == 192  # +100 HU: (100 + 200) / 399 * 255 = 191.7
    assert v0.window is not None and v0.window.preset == "file" and v0.window.width == 400


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
        "SC_ybr_full_uncompressed.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_gdcm_KY.dcm",  # JPEG 2000
    ],
)
def test_colour_encodings_render_like_the_rgb_original(name: str, key: PseudonymKey) -> None:
    ref_path = corpus_file("SC_rgb.dcm")
    ref, _ = dicom_view(pydicom.dcmread(ref_path), name=ref_path.name, limits=IngestLimits(), key=key)
    path = corpus_file(name)
    view, _ = dicom_view(pydicom.dcmread(path), name=name, limits=IngestLimits(), key=key)
    assert view.pixels.shape == ref.pixels.shape == (100, 100, 3)
    assert np.abs(view.pixels.astype(int) - ref.pixels.astype(int)).mean() < 4


@pytest.mark.parametrize(
    ("name", "what"), [("vlut_04.dcm", "voi-lut"), ("mlut_18.dcm", "modality LUT applied")]
)
def test_lut_sequences_are_applied_monotonically(name: str, what: str, key: PseudonymKey) -> None:
    path = corpus_file(name)
    ds = pydicom.dcmread(path)
    view, decoded = dicom_view(ds, name=name, limits=IngestLimits(), key=key)
    assert what in view.description
    order = np.argsort(decoded.stored.ravel(), kind="stable")
    shown = view.pixels.ravel()[order].astype(int)
    assert np.all(np.diff(shown) >= 0)  # both LUTs in these files are increasing
    assert shown[-1] - shown[0] > 100
