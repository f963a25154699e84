"""Series: ordering by position along the normal, spacing checks, splitting and 2D views."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from data_prep.ingest import IngestOptions, ingest_path, load_views
from data_prep.pseudonym import PseudonymKey
from data_prep.series import assemble_volume, montage_indices, series_views, spacing_check
from data_prep.types import IngestLimits
from tests.data_prep._synth import ct_slice, write


def _series(n: int = 6, *, gap: float = 2.5, drop: int | None = None, with_ipp: bool = True) -> list:
    uid = generate_uid()
    out = []
    for i in range(n):
        if i == drop:
            continue
        # InstanceNumber runs opposite to position: ordering must follow the geometry
        out.append(ct_slice(i * 100, z=i * gap if with_ipp else None, instance=n - i, series_uid=uid))
    return out[::-1][1::2] + out[::-1][0::2]  # shuffled


def test_volume_is_ordered_by_position_not_instance_number(key: PseudonymKey) -> None:
    vol = assemble_volume(_series(), name="s", limits=IngestLimits(), key=key)
    assert vol.values[:, 5, 5].tolist() == [0, 100, 200, 300, 400, 500]
    assert vol.spacing == 2.5 and not vol.warnings
    assert vol.study_id is not None and vol.study_id.startswith("S-")


def test_missing_slice_and_missing_positions_warn(key: PseudonymKey) -> None:
    vol = assemble_volume(_series(drop=3), name="s", limits=IngestLimits(), key=key)
    assert any("irregular slice spacing" in w for w in vol.warnings)
    nopos = assemble_volume(_series(with_ipp=False), name="s", limits=IngestLimits(), key=key)
    assert any("InstanceNumber" in w for w in nopos.warnings)
    assert nopos.values[:, 5, 5].tolist() == [500, 400, 300, 200, 100, 0]  # by InstanceNumber
    assert spacing_check(np.array([0.0, 1.0, 1.0, 2.0]))[1][0].startswith("1 duplicate")


def test_views_key_slice_montage_mip_and_multiwindow(key: PseudonymKey) -> None:
    vol = assemble_volume(_series(), name="s", limits=IngestLimits(), key=key)
    views = series_views(vol, preset="mediastinum")
    assert [v.kind for v in views] == ["dicom-series"] * 4
    key_view, montage, mip, multi = views
    assert "key slice 4 of 6" in key_view.description and "mediastinum" in key_view.description
    assert montage.pixels.shape == (48, 48) and "montage of slices [1, 2, 3, 4, 5, 6]" in montage.description
    assert "maximum intensity projection" in mip.description
    assert mip.pixels[5, 5] == 255  # 500 HU is above the mediastinum window
    assert multi.pixels.shape == (16, 16, 3) and "R=lung" in multi.description
    assert montage_indices(100, 9) == [0, 12, 25, 37, 50, 62, 74, 87, 99]


def test_ingest_folder_and_zip_split_by_series(key: PseudonymKey, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    for n, ds in enumerate(_series() + _series(n=3)):
        write(ds, str(folder / f"f{n:02d}.dcm"))
    reports = list(ingest_path([folder], options=IngestOptions(key=key, out=tmp_path / "png")))
    assert [r.kind for r in reports] == ["dicom-series", "dicom-series"]
    assert sorted(r.frames or 0 for r in reports) == [3, 6]
    assert all(r.status == "ok" and r.image and Path(r.image).exists() for r in reports)
    assert reports[0].study_id == reports[1].study_id
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"study/{p.name}")
    zreports = list(ingest_path([archive], options=IngestOptions(key=key)))
    assert sorted(r.frames or 0 for r in zreports) == [3, 6]
    assert all("#series-" in r.source for r in zreports)
    views = load_views(archive, key=key)
    assert len(views) == 8 and views[0].kind == "dicom-series"


def test_a_bad_slice_is_left_out_and_reported(key: PseudonymKey, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    slices = _series()
    slices[2].PixelData = slices[2].PixelData[:100]  # truncated
    for n, ds in enumerate(slices):
        write(ds, str(folder / f"f{n}.dcm"))
    reports = list(ingest_path([folder], options=IngestOptions(key=key)))
    errors = [r for r in reports if r.status == "error"]
    series = [r for r in reports if r.kind == "dicom-series"]
    assert len(errors) == 1 and errors[0].source == f"{folder}#file-3"  # f2.dcm, by position only
    assert series[0].frames == 5 and any("left out" in w for w in series[0].warnings)


def test_zip_inside_a_folder_is_read_but_not_a_zip_inside_a_zip(key: PseudonymKey, tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        for n, ds in enumerate(_series(n=3)):
            path = tmp_path / f"s{n}.dcm"
            write(ds, str(path))
            zf.write(path, path.name)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inner.zip").write_bytes(inner.read_bytes())
    [report] = list(ingest_path([folder], options=IngestOptions(key=key)))
    assert report.kind == "dicom-series" and report.frames == 3
    assert report.source == f"{folder}#file-1#series-1"  # the zip is the folder's file 1
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "inner.zip")
    [nested] = list(ingest_path([outer], options=IngestOptions(key=key)))
    assert nested.status == "error" and "not a DICOM file" in (nested.error or "")
