"""Pathology phantoms: region labels agree with nuclear density and colour; slides are readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_prep.phantoms.generate import generate, iter_samples
from data_prep.phantoms.pathology import render_patch, slide_image
from data_prep.phantoms.spec import Finding


def _f(*ids: str) -> tuple[Finding, ...]:
    return tuple(Finding(i, {}) for i in ids)


@pytest.mark.parametrize("size", [64, 256])
def test_tumor_and_inflammation_are_dense_and_necrosis_is_anuclear(size: int) -> None:
    for seed in range(3):
        r = render_patch(_f("tumor", "necrosis", "inflammation"), size, np.random.default_rng(seed))
        d = r.nuclear_density
        assert d is not None
        normal = ~(r.masks["tumor"] | r.masks["necrosis"] | r.masks["inflammation"])
        assert d[r.masks["tumor"]].mean() > 1.5 * d[normal].mean()
        assert d[r.masks["inflammation"]].mean() > 1.5 * d[normal].mean()
        assert d[r.masks["necrosis"]].mean() < 0.5 * d[normal].mean()
        # necrosis is pale pink: brighter than tumour in every channel
        assert (r.rgb[r.masks["necrosis"]].mean(axis=0) > r.rgb[r.masks["tumor"]].mean(axis=0)).all()


def test_tumor_nuclei_are_pleomorphic() -> None:
    from scipy import ndimage

    r = render_patch(_f("tumor"), 256, np.random.default_rng(4))
    assert r.nuclear_density is not None
    labels, n = ndimage.label((r.nuclear_density > 0.5) & r.masks["tumor"])
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    ref, m = ndimage.label((r.nuclear_density > 0.5) & ~r.masks["tumor"])
    ref_sizes = ndimage.sum_labels(np.ones_like(ref), ref, index=np.arange(1, m + 1))
    assert n > 20 and sizes.std() / sizes.mean() > ref_sizes.std() / ref_sizes.mean()


def test_mitoses_are_dark_figures_inside_the_tumor() -> None:
    r = render_patch(_f("tumor", "mitosis"), 256, np.random.default_rng(1))
    assert 1 <= len(r.mitosis_centers) <= 3
    for y, x in r.mitosis_centers:
        assert r.masks["tumor"][y, x]
    assert r.masks["mitosis"].any() and r.rgb[r.masks["mitosis"]].mean() < 110


def test_absent_findings_leave_no_region_and_bad_ids_raise() -> None:
    r = render_patch((), 64, np.random.default_rng(0))
    assert r.masks == {} and r.rgb.shape == (64, 64, 3) and r.rgb.dtype == np.uint8
    with pytest.raises(ValueError, match="cannot draw"):
        render_patch(_f("pneumothorax"), 64, np.random.default_rng(0))


def test_slide_holds_the_patch_at_its_centre() -> None:
    r = render_patch(_f("necrosis"), 64, np.random.default_rng(2))
    img = slide_image(r, np.random.default_rng(3), factor=4)
    c = 128 - 32
    assert img.shape == (256, 256, 3) and np.array_equal(img[c : c + 64, c : c + 64], r.rgb)


def test_generated_slides_open_with_openslide_and_ingest(tmp_path: Path) -> None:
    ingest = pytest.importorskip("data_prep.ingest", reason="data_prep.ingest not available")
    openslide = pytest.importorskip("openslide", reason="openslide not installed")
    generate(tmp_path, 2, seed=3, kinds=("slide",), size=128, dicom=True)
    slides = sorted((tmp_path / "dicom").glob("*.svs"))
    assert len(slides) == 2
    for path in slides:
        s = openslide.OpenSlide(str(path))
        assert s.dimensions == (512, 512) and abs(float(s.properties["openslide.mpp-x"]) - 0.5) < 1e-6
        s.close()
    reports = list(ingest.ingest_path(slides))
    assert [r.status for r in reports] == ["ok", "ok"], [r.error for r in reports]
    sample = next(iter_samples(1, seed=3, kinds=("slide",), size=128))
    assert sample.pixels.shape == (128, 128, 3)
