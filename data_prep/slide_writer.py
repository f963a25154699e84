"""Write pyramidal, Aperio-style (SVS) tiled TIFFs that OpenSlide reads as vendor ``aperio``.

No sample whole-slide image ships in any installable package, so tests, benchmarks and the
synthetic-pathology generator write their own from real bundled stain images
(``skimage.data.immunohistochemistry()``). The layout follows what OpenSlide's Aperio reader
expects (see docs/INGESTION.md):

* page 0: full-resolution level, tiled, ImageDescription
  ``Aperio Image Library ...|AppMag = 20|MPP = 0.5`` (OpenSlide detects the vendor from it);
* page 1: a small stripped thumbnail (OpenSlide exposes it as the ``thumbnail`` associated image);
* pages 2..: reduced levels (4x each, like Aperio scanners), tiled, ``subfiletype=1``.

Every page is written with ``metadata=None`` (otherwise tifffile adds its own JSON description and
OpenSlide reports ``generic-tiff``). Levels are written as successive top-level pages, not SubIFDs,
which OpenSlide does not see.

Large slides are written tile by tile from a :class:`RegionSource`, so a 20,000 x 20,000 slide
never needs the full 1.2 GB array in memory (:class:`MosaicSource`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

LEVEL_FACTOR = 4
"""Downsample between successive pyramid levels (Aperio scanners use 4)."""
THUMBNAIL_MAX_SIDE = 768
_APERIO_HEADER = "Aperio Image Library v12.0.15"


class RegionSource(Protocol):
    """Something that can render any region of a slide at an integer downsample.

    ``height`` and ``width`` are the full-resolution size in pixels.
    """

    @property
    def height(self) -> int: ...

    @property
    def width(self) -> int: ...

    def region(self, y: int, x: int, h: int, w: int, downsample: int) -> np.ndarray:
        """Return an ``h x w x 3`` uint8 region whose top-left is ``(y, x)`` in level coordinates.

        Level coordinates are full-resolution coordinates divided by ``downsample``. Pixels
        outside the slide are white.
        """
        ...


def _block_mean(block: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor x factor`` blocks of an ``H x W x 3`` array (H, W multiples of factor)."""
    if factor == 1:
        return block
    h, w, c = block.shape
    reshaped = block.reshape(h // factor, factor, w // factor, factor, c).astype(np.float32)
    return np.rint(reshaped.mean(axis=(1, 3))).astype(np.uint8)


@dataclass(frozen=True)
class ArraySource:
    """A slide held in memory as one ``H x W x 3`` uint8 array; reduced levels are area averages."""

    image: np.ndarray

    def __post_init__(self) -> None:
        _check_rgb(self.image)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def region(self, y: int, x: int, h: int, w: int, downsample: int) -> np.ndarray:
        d = downsample
        out = np.full((h * d, w * d, 3), 255, dtype=np.uint8)
        y0, x0 = y * d, x * d
        y1, x1 = min(y0 + h * d, self.height), min(x0 + w * d, self.width)
        if y1 > y0 and x1 > x0:
            out[: y1 - y0, : x1 - x0] = self.image[y0:y1, x0:x1]
        return _block_mean(out, d)


@dataclass(frozen=True)
class MosaicSource:
    """A large slide made by repeating a small texture (e.g. a real IHC image) in a grid.

    Each level repeats the texture resized to ``texture_size / downsample``, so regions at any
    level cost memory proportional to the region, never to the slide.
    """

    texture: np.ndarray
    slide_height: int
    slide_width: int
    _cache: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_rgb(self.texture)
        if self.slide_height < 1 or self.slide_width < 1:
            raise ValueError(f"slide size must be positive, got {self.slide_height}x{self.slide_width}")

    @property
    def height(self) -> int:
        return self.slide_height

    @property
    def width(self) -> int:
        return self.slide_width

    def _texture_at(self, downsample: int) -> np.ndarray:
        # A per-instance cache of the resized texture; the source is built by the caller, not shared.
        if downsample not in self._cache:
            th, tw = self.texture.shape[:2]
            if th % downsample == 0 and tw % downsample == 0:
                small = _block_mean(self.texture, downsample)
            else:
                from skimage.transform import resize

                size = (max(1, round(th / downsample)), max(1, round(tw / downsample)))
                small = (resize(self.texture, size, anti_aliasing=True) * 255).round().astype(np.uint8)
            self._cache[downsample] = small
        return self._cache[downsample]

    def region(self, y: int, x: int, h: int, w: int, downsample: int) -> np.ndarray:
        tex = self._texture_at(downsample)
        th, tw = tex.shape[:2]
        rows = np.arange(y, y + h) % th
        cols = np.arange(x, x + w) % tw
        out = tex[rows[:, None], cols[None, :]]
        level_h = math.ceil(self.slide_height / downsample)
        level_w = math.ceil(self.slide_width / downsample)
        if y + h > level_h:
            out[max(0, level_h - y) :] = 255
        if x + w > level_w:
            out[:, max(0, level_w - x) :] = 255
        return out


def _check_rgb(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"slide image must be an HxWx3 array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"slide image must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"slide image must be non-empty, got shape {image.shape}")


def level_sizes(height: int, width: int, *, tile: int, levels: int | None) -> list[tuple[int, int]]:
    """Sizes ``(height, width)`` of each pyramid level, full resolution first.

    Args:
        height: full-resolution height in pixels.
        width: full-resolution width in pixels.
        tile: tile side; with ``levels=None`` levels are added until the longer side fits one tile.
        levels: exact number of levels, or None for automatic.

    Returns:
        One ``(height, width)`` per level, each ``LEVEL_FACTOR`` times smaller than the previous.

    Raises:
        ValueError: if ``levels`` is below 1 or would shrink a level below one pixel.
    """
    if levels is not None and levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    sizes = [(height, width)]
    while True:
        if levels is not None and len(sizes) >= levels:
            break
        h, w = sizes[-1]
        if levels is None and max(h, w) <= tile:
            break
        nh, nw = h // LEVEL_FACTOR, w // LEVEL_FACTOR
        if nh < 1 or nw < 1:
            raise ValueError(f"cannot make {levels} levels from a {height}x{width} image")
        sizes.append((nh, nw))
    return sizes


def _tiles(
    source: RegionSource, level_h: int, level_w: int, tile: int, downsample: int
) -> Iterator[np.ndarray]:
    """Yield full ``tile x tile x 3`` tiles of one level in row-major order (edges padded white)."""
    for ty in range(0, level_h, tile):
        for tx in range(0, level_w, tile):
            yield np.ascontiguousarray(source.region(ty, tx, tile, tile, downsample))


def _thumbnail(source: RegionSource) -> np.ndarray:
    down = max(1, math.ceil(max(source.height, source.width) / THUMBNAIL_MAX_SIDE))
    th, tw = max(1, source.height // down), max(1, source.width // down)
    return source.region(0, 0, th, tw, down)


def write_pyramidal_svs_from_source(
    path: Path,
    source: RegionSource,
    *,
    mpp: float = 0.5,
    app_mag: int = 20,
    tile: int = 256,
    levels: int | None = None,
    compression: str | None = "jpeg",
) -> None:
    """Write a pyramidal Aperio-style SVS from a region source, tile by tile.

    Args:
        path: output file (conventionally ``*.svs``); parent folders must exist.
        source: renders regions at integer downsamples (:class:`ArraySource`, :class:`MosaicSource`).
        mpp: microns per pixel at full resolution (``MPP`` in the description).
        app_mag: apparent objective magnification (``AppMag``); informational only.
        tile: tile side in pixels, a positive multiple of 16 (a TIFF requirement).
        levels: number of pyramid levels, or None to add 4x levels until one tile covers a level.
        compression: ``"jpeg"`` (as Aperio scanners), another tifffile codec name, or None.

    Raises:
        ValueError: on a bad tile size, mpp, magnification or level count.
        OSError: if the file cannot be written.
    """
    import tifffile

    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    if not (mpp > 0 and math.isfinite(mpp)):
        raise ValueError(f"mpp must be a positive number, got {mpp}")
    if app_mag <= 0:
        raise ValueError(f"app_mag must be positive, got {app_mag}")
    sizes = level_sizes(source.height, source.width, tile=tile, levels=levels)
    h0, w0 = sizes[0]
    codec: dict[str, object] = {}
    if compression is not None:
        codec["compression"] = compression
        if compression == "jpeg":
            codec["compressionargs"] = {"level": 90}
    comp_name = "JPEG" if compression == "jpeg" else (compression or "RAW").upper()
    base_desc = (
        f"{_APERIO_HEADER}\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile}x{tile}) {comp_name}/RGB Q=90"
        f"|AppMag = {app_mag}|MPP = {mpp:.4f}|Filename = synthetic"
    )
    logger.info("writing %d-level %dx%d slide to %s", len(sizes), w0, h0, path.name)
    with tifffile.TiffWriter(path, bigtiff=h0 * w0 * 3 > 2**31) as tw:
        for index, (lh, lw) in enumerate(sizes):
            downsample = LEVEL_FACTOR**index
            desc = base_desc if index == 0 else f"{_APERIO_HEADER}\r\n{w0}x{h0} -> {lw}x{lh} {comp_name}/RGB"
            tw.write(
                _tiles(source, lh, lw, tile, downsample),
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                subfiletype=0 if index == 0 else 1,
                description=desc,
                metadata=None,
                **codec,  # type: ignore[arg-type]
            )
            if index == 0:
                thumb = _thumbnail(source)
                tw.write(
                    thumb,
                    photometric="rgb",
                    description=f"{_APERIO_HEADER}\r\n{w0}x{h0} -> {thumb.shape[1]}x{thumb.shape[0]}",
                    metadata=None,
                    **codec,  # type: ignore[arg-type]
                )


def write_pyramidal_svs(
    path: Path,
    image: np.ndarray,
    *,
    mpp: float = 0.5,
    app_mag: int = 20,
    tile: int = 256,
    levels: int | None = None,
    compression: str | None = "jpeg",
) -> None:
    """Write an in-memory ``H x W x 3`` uint8 image as a pyramidal Aperio-style SVS.

    Args:
        path: output file (conventionally ``*.svs``).
        image: the full-resolution slide, ``H x W x 3`` uint8 RGB.
        mpp: microns per pixel at full resolution.
        app_mag: apparent objective magnification.
        tile: tile side in pixels, a positive multiple of 16.
        levels: number of pyramid levels, or None for automatic (4x steps until one tile fits).
        compression: ``"jpeg"``, another tifffile codec name, or None for uncompressed.

    Raises:
        ValueError: if the image is not ``H x W x 3`` uint8, or on bad options.
        OSError: if the file cannot be written.
    """
    write_pyramidal_svs_from_source(
        path, ArraySource(image), mpp=mpp, app_mag=app_mag, tile=tile, levels=levels, compression=compression
    )
