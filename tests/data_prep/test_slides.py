"""Whole-slide images written by data_prep.slide_writer from a real IHC stain image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.data import immunohistochemistry

from data_prep.errors import LimitExceededError, SlideError
from data_prep.ingest import IngestOptions, ingest_path, load_views
from data_prep.pseudonym import PseudonymKey
from data_prep.slide_writer import MosaicSource, write_pyramidal_svs, write_pyramidal_svs_from_source
from data_prep.slides import (
    choose_level,
    flatten_rgba,
    open_slide,
    plan_tiles,
    slide_views,
    tissue_mask,
    top_tiles,
)
from data_prep.types import IngestLimits


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2,048 x 1,536 slide at 0.25 µm/px: the IHC image tiled 2 x 3 on a glass background."""
    ihc = immunohistochemistry()
    canvas = np.full((1536, 2048, 3), 245, dtype=np.uint8)
    canvas[256:1280, 256:1792] = np.tile(ihc, (2, 3, 1))
    path = tmp_path_factory.mktemp("slides") / "ihc.svs"
    write_pyramidal_svs(path, canvas, mpp=0.25, app_mag=40, tile=256)
    return path


def test_views_are_thumbnail_then_top_tiles_at_half_micron(svs: Path) -> None:
    views = slide_views(svs, max_tiles=5)
    assert views[0].description.startswith("slide thumbnail")
    assert len(views) == 6
    for v in views[1:]:
        assert v.pixels.shape == (224, 224, 3) and v.kind == "slide" and v.modality == "SM"
        assert "0.5 µm/px" in v.description and "footprint 448 px = 112 µm" in v.description
        assert "read from level 0 (448 px)" in v.description
    # tiles come from the tissue, not the glass
    for v in views[1:]:
        assert v.pixels.std() > 20


def test_tiling_is_planned_in_microns(svs: Path) -> None:
    with open_slide(svs) as reader:
        info = reader.info
        assert info.mpp == pytest.approx(0.25) and info.backend == "openslide" and info.vendor == "aperio"
        assert choose_level(info, 0.5) == 0  # level 1 is 1.0 µm/px: too coarse
        assert choose_level(info, 1.0) == 1
        thumb = reader.thumbnail(256)
        mask = tissue_mask(thumb)
        plan = plan_tiles(info, mask, tile_px=224, target_mpp=1.0)
        assert plan and all(t.level == 1 and t.read_size == 224 and t.footprint == 896 for t in plan)
        k = top_tiles(plan, 2)
        assert len(k) == 2 and all(t.tissue >= 0.25 for t in k)
        with pytest.raises(LimitExceededError):
            reader.read_region(0, 0, 0, 5000, 5000)
        region = reader.read_region(0, 0, 0, 64, 64)
        assert region.shape == (64, 64, 3) and region.dtype == np.uint8


def test_blank_slide_has_no_tissue_and_no_tiles(tmp_path: Path) -> None:
    path = tmp_path / "blank.svs"
    write_pyramidal_svs(path, np.full((600, 600, 3), 240, dtype=np.uint8))
    views = slide_views(path, max_tiles=4)
    assert len(views) == 1 and any("no tissue" in w for w in views[0].warnings)


def test_rgba_is_flattened_onto_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[0, 1] = (0, 0, 0, 0)
    rgba[1, 0] = (0, 0, 0, 128)
    out = flatten_rgba(rgba)
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    assert out[1, 0].tolist() == [127, 127, 127]


def test_bad_slides_fail_with_slide_errors(tmp_path: Path, key: PseudonymKey) -> None:
    fake = tmp_path / "fake.svs"
    fake.write_bytes(b"not a slide")
    with pytest.raises(SlideError, match="not a whole-slide image"):
        open_slide(fake)
    good = tmp_path / "g.svs"
    write_pyramidal_svs(good, immunohistochemistry()[:256, :256], mpp=0.5)
    reports = list(ingest_path([fake, good], options=IngestOptions(key=key, out=tmp_path / "png")))
    assert reports[0].status == "error" and reports[1].status == "ok"
    assert reports[1].kind == "slide" and reports[1].shape == (256, 256, 3)
    assert reports[1].extra["mpp"] == pytest.approx(0.5) and reports[1].image


def test_large_mosaic_slide_reads_regions_under_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "big.svs"
    write_pyramidal_svs_from_source(path, MosaicSource(immunohistochemistry(), 3000, 3000), mpp=0.5)
    views = load_views(path, max_tiles=3, limits=IngestLimits(max_slide_region_pixels=2048 * 2048))
    assert len(views) == 4 and views[0].pixels.shape[0] <= 1024


def test_dicom_wsi_through_wsidicom(tmp_path: Path, key: PseudonymKey) -> None:
    from tests.data_prep._synth import write_dicom_wsi

    ihc = immunohistochemistry()
    folder = tmp_path / "wsi"
    folder.mkdir()
    write_dicom_wsi(str(folder), ihc, mpp=0.5, tile=128, levels=2)
    with open_slide(folder) as reader:
        assert reader.info.backend == "wsidicom" and reader.info.mpp == pytest.approx(0.5)
        assert reader.info.level_dimensions == ((512, 512), (256, 256))
        region = reader.read_region(0, 0, 1, 64, 64)
        assert region.shape == (64, 64, 3)
        full = reader.read_region(0, 0, 0, 512, 512)
        assert np.abs(full.astype(int) - ihc.astype(int)).mean() < 5
    views = load_views(folder, max_tiles=2, key=key)
    assert views[0].kind == "slide" and "wsidicom" in views[0].description
    reports = list(ingest_path([folder], options=IngestOptions(key=key)))
    assert [(r.kind, r.status) for r in reports] == [("slide", "ok")]
    assert reports[0].extra["backend"] == "wsidicom" and reports[0].shape == (512, 512, 3)


def test_strip_reads_match_single_tile_reads(svs: Path) -> None:
    from data_prep.slides import iter_tiles, read_tile, tile_runs

    with open_slide(svs) as reader:
        thumb = reader.thumbnail(256)
        plan = plan_tiles(reader.info, tissue_mask(thumb), tile_px=224, target_mpp=0.5, min_tissue=0.0)
        runs = tile_runs(plan)
        assert len(runs) < len(plan) and sum(len(r) for r in runs) == len(plan)
        strips = list(iter_tiles(reader, plan, workers=2))
        singles = [read_tile(reader, t) for t in plan]
    assert len(strips) == len(singles)
    for a, b in zip(strips, singles, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tiffslide_fallback_reads_a_stripped_tiff_openslide_refuses(tmp_path: Path) -> None:
    pytest.importorskip("tiffslide")
    import tifffile

    path = tmp_path / "stripped.tif"
    image = np.tile(immunohistochemistry(), (2, 2, 1))
    # 20,000 pixels per cm = 0.5 µm/px; no tiles, so OpenSlide's generic TIFF reader refuses it
    tifffile.imwrite(path, image, photometric="rgb", resolution=(20000, 20000), resolutionunit="CENTIMETER")
    with open_slide(path) as reader:
        assert reader.info.backend == "tiffslide" and reader.info.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(reader.read_region(0, 0, 0, 512, 512), image[:512, :512])
    views = slide_views(path, max_tiles=2)
    assert len(views) == 3 and "tiffslide" in views[0].description
