"""The SVS writer: OpenSlide must read its output as an Aperio slide with the pixels we wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.data import immunohistochemistry

from data_prep.slide_writer import (
    MosaicSource,
    level_sizes,
    write_pyramidal_svs,
    write_pyramidal_svs_from_source,
)


def test_openslide_reads_aperio_with_levels_mpp_and_pixels(tmp_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    img = immunohistochemistry()
    path = tmp_path / "ihc.svs"
    write_pyramidal_svs(path, img, mpp=0.25, app_mag=40, tile=128)
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "aperio"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert slide.properties["openslide.objective-power"] == "40"
    assert slide.level_dimensions == ((512, 512), (128, 128))
    assert "thumbnail" in slide.associated_images
    back = np.asarray(slide.read_region((0, 0), 0, (512, 512)).convert("RGB")).astype(int)
    assert np.abs(back - img.astype(int)).mean() < 4  # JPEG q90
    small = np.asarray(slide.read_region((0, 0), 1, (128, 128)).convert("RGB")).astype(float)
    assert abs(small.mean() - img.mean()) < 2


def test_mosaic_source_writes_a_large_slide_tile_by_tile(tmp_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    img = immunohistochemistry()
    path = tmp_path / "big.svs"
    write_pyramidal_svs_from_source(path, MosaicSource(img, 1500, 2100), tile=256, compression=None)
    slide = openslide.OpenSlide(path)
    assert slide.level_dimensions[0] == (2100, 1500)
    region = np.asarray(slide.read_region((512, 1024), 0, (512, 256)).convert("RGB"))
    np.testing.assert_array_equal(region, img[:256, :512])


def test_level_sizes_and_bad_inputs(tmp_path: Path) -> None:
    assert level_sizes(20000, 20000, tile=256, levels=None) == [
        (20000, 20000),
        (5000, 5000),
        (1250, 1250),
        (312, 312),
        (78, 78),
    ]
    assert level_sizes(512, 512, tile=256, levels=1) == [(512, 512)]
    with pytest.raises(ValueError):
        level_sizes(8, 8, tile=256, levels=4)
    with pytest.raises(ValueError, match="HxWx3"):
        write_pyramidal_svs(tmp_path / "x.svs", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_pyramidal_svs(tmp_path / "x.svs", np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramidal_svs(tmp_path / "x.svs", np.zeros((8, 8, 3), np.uint8), tile=100)
