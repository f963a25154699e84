"""Whole-slide images: open, thumbnail, tissue mask, tiling by microns per pixel, top-k tiles.

Backends, tried in order: OpenSlide (openslide-python + openslide-bin: SVS, generic tiled TIFF,
NDPI, MRXS ...), wsidicom for DICOM-WSI folders/files, tiffslide as a fallback for TIFFs
OpenSlide rejects. All reads return RGB uint8 with any alpha flattened onto white, and every
region read is capped by :attr:`IngestLimits.max_slide_region_pixels`.

Tiles are planned in microns: a 224-px tile at 0.5 µm/px covers ``224 * 0.5 / mpp0`` level-0
pixels, read from the finest level that is not coarser than the target and resized if needed.
Objective power is never used (it does not fix the pixel size).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.errors import LimitExceededError, SlideError
from data_prep.types import ImageView, IngestLimits

logger = logging.getLogger(__name__)

SLIDE_SUFFIXES = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
)
THUMBNAIL_SIDE = 1024


@dataclass(frozen=True)
class SlideInfo:
    """Pyramid facts of an opened slide.

    Attributes:
        backend: ``openslide``, ``wsidicom`` or ``tiffslide``.
        vendor: vendor string reported by the backend (e.g. ``aperio``), or None.
        level_dimensions: ``(width, height)`` per level, level 0 first.
        level_downsamples: downsample of each level relative to level 0.
        mpp: microns per pixel at level 0 (x), or None when the file does not say.
    """

    backend: str
    vendor: str | None
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None


def flatten_rgba(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``H x W x 4`` RGBA uint8 array onto white; RGB input is returned as is."""
    if rgba.ndim == 3 and rgba.shape[2] == 3:
        return rgba
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return rgb  # a view: callers that need contiguous memory copy it themselves
    a = alpha.astype(np.uint16)[..., None]
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


class SlideReader:
    """An open slide with one read API over OpenSlide, wsidicom or tiffslide. Use as a context manager."""

    def __init__(self, handle: Any, info: SlideInfo, *, name: str, limits: IngestLimits) -> None:
        self._handle = handle
        self.info = info
        self.name = name
        self.limits = limits

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's file handles."""
        close = getattr(self._handle, "close", None)
        if close is not None:
            close()

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """Read a region as RGB uint8.

        Args:
            x: left edge in level-0 pixels.
            y: top edge in level-0 pixels.
            level: pyramid level to read from.
            width: width in pixels of that level.
            height: height in pixels of that level.

        Returns:
            ``height x width x 3`` uint8, alpha flattened onto white.

        Raises:
            LimitExceededError: the region is over the pixel cap.
            SlideError: the backend failed.
        """
        if width < 1 or height < 1:
            raise SlideError(f"empty region requested from {self.name}")
        if width * height > self.limits.max_slide_region_pixels:
            raise LimitExceededError(
                f"a {width}x{height} region of {self.name} is over the "
                f"{self.limits.max_slide_region_pixels}-pixel region limit"
            )
        if not 0 <= level < len(self.info.level_dimensions):
            raise SlideError(f"{self.name} has no level {level}")
        try:
            if self.info.backend == "wsidicom":
                img = self._handle.read_region((x, y), self._wsidicom_level(level), (width, height))
            else:
                img = self._handle.read_region((x, y), level, (width, height))
            arr = np.asarray(img)
        except Exception as e:
            raise SlideError(f"reading a region of {self.name} failed ({type(e).__name__})") from e
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        return flatten_rgba(arr)

    def _wsidicom_level(self, level: int) -> int:
        # wsidicom addresses levels by their power-of-two pyramid index, not by position.
        return round(math.log2(self.info.level_downsamples[level]))

    def thumbnail(self, max_side: int = THUMBNAIL_SIDE) -> np.ndarray:
        """A whole-slide RGB thumbnail whose longer side is at most ``max_side`` pixels.

        Reads the smallest level at least ``max_side`` wide (or the coarsest) and resizes it.
        """
        from PIL import Image

        w0, h0 = self.info.level_dimensions[0]
        scale = max(w0, h0) / max_side
        level = 0
        for i, ds in enumerate(self.info.level_downsamples):
            if ds <= max(scale, 1.0) and self._fits(i):
                level = i
        if not self._fits(level):
            level = len(self.info.level_dimensions) - 1
        lw, lh = self.info.level_dimensions[level]
        region = self.read_region(0, 0, level, lw, lh)
        tw, th = max(1, round(w0 / max(scale, 1.0))), max(1, round(h0 / max(scale, 1.0)))
        if (tw, th) != (lw, lh):
            region = np.asarray(Image.fromarray(region).resize((tw, th), Image.Resampling.BOX))
        return region

    def _fits(self, level: int) -> bool:
        lw, lh = self.info.level_dimensions[level]
        return lw * lh <= self.limits.max_slide_region_pixels


def _openslide_info(handle: Any, backend: str = "openslide") -> SlideInfo:
    """Pyramid facts from an OpenSlide or tiffslide handle (same API, prefixed property names)."""
    props = handle.properties
    mpp = props.get(f"{backend}.mpp-x")
    return SlideInfo(
        backend=backend,
        vendor=props.get(f"{backend}.vendor"),
        level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
        level_downsamples=tuple(float(d) for d in handle.level_downsamples),
        mpp=float(mpp) if mpp else None,
    )


WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
"""VL Whole Slide Microscopy Image Storage."""


def is_dicom_wsi(ds: Any) -> bool:
    """Whether a pydicom Dataset is a DICOM whole-slide microscopy instance."""
    return str(ds.get("SOPClassUID", "") or "") == WSI_SOP_CLASS


def _open_wsidicom(path: Path | Sequence[Path]) -> tuple[Any, SlideInfo]:
    from wsidicom import WsiDicom

    handle = WsiDicom.open(path if isinstance(path, Path) else list(path))
    levels = list(handle.levels)
    base = levels[0]
    dims = tuple((int(lv.size.width), int(lv.size.height)) for lv in levels)
    downs = tuple(float(base.size.width) / float(lv.size.width) for lv in levels)
    mpp = getattr(handle, "mpp", None)
    mpp_x = float(mpp.width) if mpp is not None else None
    return handle, SlideInfo("wsidicom", "dicom", dims, downs, mpp_x)


def open_slide(
    path: Path | Sequence[Path], *, limits: IngestLimits | None = None, name: str | None = None
) -> SlideReader:
    """Open a whole-slide image with the first backend that reads it.

    Args:
        path: a slide file, a folder of DICOM-WSI instances, or a list of DICOM-WSI files.
        limits: read caps (defaults when None).
        name: what to call the slide in messages and logs (default: the file or folder name as
            given, or "the slide" for a list of files); callers pass a position label for a file
            inside a zip or study folder, whose name could be PHI.

    Returns:
        An open :class:`SlideReader`.

    Raises:
        SlideError: no backend can read it, or it has no pyramid levels.
    """
    limits = limits or IngestLimits()
    if not isinstance(path, Path):
        files = list(path)
        name = name or "the slide"
        try:
            handle, info = _open_wsidicom(files)
        except Exception as e:
            raise SlideError(
                f"the DICOM whole-slide files of {name} cannot be opened ({type(e).__name__})"
            ) from e
        return _checked(SlideReader(handle, info, name=name, limits=limits))
    name = path.name if name is None else name
    failures: list[str] = []
    is_dicom = path.is_dir() or path.suffix.lower() == ".dcm"
    if is_dicom:
        try:
            handle, info = _open_wsidicom(path)
            return _checked(SlideReader(handle, info, name=name, limits=limits))
        except SlideError:
            raise
        except Exception as e:
            failures.append(f"wsidicom: {type(e).__name__}")
    else:
        try:
            import openslide

            handle = openslide.OpenSlide(str(path))
            return _checked(SlideReader(handle, _openslide_info(handle), name=name, limits=limits))
        except SlideError:
            raise
        except Exception as e:
            failures.append(f"openslide: {type(e).__name__}")
        try:
            import tiffslide

            handle = tiffslide.TiffSlide(str(path))
            info = _openslide_info(handle, "tiffslide")
            return _checked(SlideReader(handle, info, name=name, limits=limits))
        except SlideError:
            raise
        except Exception as e:
            failures.append(f"tiffslide: {type(e).__name__}")
    logger.info("no slide backend read %s (%s)", name, "; ".join(failures))
    raise SlideError(f"{name} is not a whole-slide image any installed reader can open")


def _checked(reader: SlideReader) -> SlideReader:
    dims = reader.info.level_dimensions
    if not dims or any(w < 1 or h < 1 for w, h in dims):
        reader.close()
        raise SlideError(f"{reader.name} has no readable pyramid levels")
    return reader


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue mask by Otsu's threshold on HSV saturation (stained tissue is saturated, glass is not).

    Args:
        rgb: ``H x W x 3`` uint8 thumbnail.

    Returns:
        ``H x W`` bool mask; all False when the saturation is flat (a blank slide).
    """
    from skimage.filters import threshold_otsu

    rgbf = rgb.astype(np.float32)
    cmax = rgbf.max(axis=2)
    cmin = rgbf.min(axis=2)
    sat = np.where(cmax > 0, (cmax - cmin) / np.maximum(cmax, 1.0), 0.0)
    if float(sat.max() - sat.min()) < 0.02:
        return np.zeros(sat.shape, dtype=bool)
    threshold = float(threshold_otsu(sat))
    return np.asarray(sat > max(threshold, 0.05))


@dataclass(frozen=True)
class TileSpec:
    """One planned tile.

    Attributes:
        x: left edge in level-0 pixels.
        y: top edge in level-0 pixels.
        footprint: side of the tile's area in level-0 pixels.
        level: level read from.
        read_size: side read at that level, in that level's pixels.
        out_size: side of the tile returned (resized from ``read_size`` when different).
        mpp: microns per pixel of the returned tile (None when the slide has no mpp).
        tissue: fraction of the tile's area in the tissue mask.
        score: informativeness used to rank tiles (tissue fraction x mean saturation).
    """

    x: int
    y: int
    footprint: int
    level: int
    read_size: int
    out_size: int
    mpp: float | None
    tissue: float
    score: float

    def describe(self, slide_mpp: float | None) -> str:
        """What this tile is, for :attr:`ImageView.description`."""
        mpp = f"{self.mpp:g} µm/px" if self.mpp else "unknown µm/px (slide has no MPP)"
        size_um = f" = {self.footprint * slide_mpp:.0f} µm" if slide_mpp else ""
        return (
            f"slide tile at level-0 x={self.x}, y={self.y}, footprint {self.footprint} px{size_um}, "
            f"read from level {self.level} ({self.read_size} px), {self.out_size} px at {mpp}, "
            f"tissue {self.tissue:.2f}"
        )


def choose_level(info: SlideInfo, target_mpp: float) -> int:
    """Finest-enough level: the coarsest level whose mpp is not coarser than ``target_mpp``."""
    if info.mpp is None:
        return 0
    best = 0
    for i, d in enumerate(info.level_downsamples):
        if info.mpp * d <= target_mpp * 1.001:
            best = i
    return best


def plan_tiles(
    info: SlideInfo,
    mask: np.ndarray,
    saturation: np.ndarray | None = None,
    *,
    tile_px: int = 224,
    target_mpp: float = 0.5,
    min_tissue: float = 0.25,
) -> list[TileSpec]:
    """Plan a grid of tiles at a target resolution, keeping those over a tissue fraction.

    Args:
        info: the slide's pyramid.
        mask: tissue mask computed on a thumbnail covering the whole slide.
        saturation: optional saturation image (same shape as mask) for ranking.
        tile_px: tile side in output pixels.
        target_mpp: output microns per pixel (ignored when the slide has no mpp: level 0 is used).
        min_tissue: minimum tissue fraction of a kept tile.

    Returns:
        Tiles in row-major order.

    Raises:
        ValueError: ``tile_px`` or ``target_mpp`` not positive.
    """
    if tile_px < 1 or target_mpp <= 0:
        raise ValueError("tile_px and target_mpp must be positive")
    w0, h0 = info.level_dimensions[0]
    footprint = tile_px if info.mpp is None else max(1, round(tile_px * target_mpp / info.mpp))
    level = choose_level(info, target_mpp)
    read_size = max(1, round(footprint / info.level_downsamples[level]))
    out_mpp = target_mpp if info.mpp is not None else None
    mh, mw = mask.shape
    sx, sy = mw / w0, mh / h0
    integral = np.pad(mask.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sat_int = (
        np.pad(saturation.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        if saturation is not None
        else None
    )
    tiles: list[TileSpec] = []
    for y in range(0, h0 - footprint + 1, footprint):
        r0, r1 = int(y * sy), max(int(y * sy) + 1, math.ceil((y + footprint) * sy))
        for x in range(0, w0 - footprint + 1, footprint):
            c0, c1 = int(x * sx), max(int(x * sx) + 1, math.ceil((x + footprint) * sx))
            r1c, c1c = min(r1, mh), min(c1, mw)
            area = max(1, (r1c - r0) * (c1c - c0))
            frac = float(integral[r1c, c1c] - integral[r0, c1c] - integral[r1c, c0] + integral[r0, c0]) / area
            if frac < min_tissue:
                continue
            score = frac
            if sat_int is not None:
                s = sat_int[r1c, c1c] - sat_int[r0, c1c] - sat_int[r1c, c0] + sat_int[r0, c0]
                score = frac * float(s) / area
            tiles.append(TileSpec(x, y, footprint, level, read_size, tile_px, out_mpp, frac, score))
    return tiles


def top_tiles(tiles: Sequence[TileSpec], k: int) -> list[TileSpec]:
    """The ``k`` highest-scoring tiles (ties broken by position), returned in row-major order."""
    ranked = sorted(tiles, key=lambda t: (-t.score, t.y, t.x))[: max(0, k)]
    return sorted(ranked, key=lambda t: (t.y, t.x))


def _resized(arr: np.ndarray, tile: TileSpec) -> np.ndarray:
    if tile.read_size == tile.out_size:
        return arr
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(arr))
    return np.asarray(img.resize((tile.out_size, tile.out_size), Image.Resampling.BILINEAR))


def read_tile(reader: SlideReader, tile: TileSpec) -> np.ndarray:
    """Read one planned tile as ``out_size x out_size x 3`` uint8."""
    return _resized(reader.read_region(tile.x, tile.y, tile.level, tile.read_size, tile.read_size), tile)


MAX_RUN = 16
"""Most adjacent tiles read with one backend call (a horizontal strip)."""


def tile_runs(tiles: Sequence[TileSpec], max_run: int = MAX_RUN) -> list[list[TileSpec]]:
    """Split tiles into runs of horizontally adjacent tiles that one strip read can serve.

    Tiles join a run when they share row, level and read size, touch the previous tile, and
    their footprint is exactly ``read_size`` pixels of that level (so strip pixels map 1:1).
    """
    runs: list[list[TileSpec]] = []
    for t in tiles:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and len(runs[-1]) < max_run
            and t.y == last.y
            and t.level == last.level
            and t.read_size == last.read_size
            and t.x == last.x + last.footprint
            and t.footprint == last.footprint
        ):
            runs[-1].append(t)
        else:
            runs.append([t])
    return runs


def _read_run(reader: SlideReader, run: list[TileSpec]) -> list[np.ndarray]:
    first = run[0]
    down = reader.info.level_downsamples[first.level]
    exact = abs(first.read_size * down - first.footprint) < 1e-6
    if len(run) == 1 or not exact:
        return [read_tile(reader, t) for t in run]
    rs = first.read_size
    strip = reader.read_region(first.x, first.y, first.level, rs * len(run), rs)
    return [_resized(strip[:, i * rs : (i + 1) * rs], t) for i, t in enumerate(run)]


def iter_tiles(reader: SlideReader, tiles: Sequence[TileSpec], *, workers: int = 2) -> Iterator[np.ndarray]:
    """Read tiles in order, as strips of adjacent tiles, ``workers`` strips at a time.

    OpenSlide reads release the GIL, so threads overlap JPEG decoding. Arrays may be views into
    a strip; copy them if they must be contiguous.
    """
    runs = tile_runs(tiles)
    if workers <= 1:
        for run in runs:
            yield from _read_run(reader, run)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for arrays in pool.map(lambda run: _read_run(reader, run), runs):
            yield from arrays


def saturation_of(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in 0..1 of an RGB uint8 image."""
    rgbf = rgb.astype(np.float32)
    cmax = rgbf.max(axis=2)
    return np.where(cmax > 0, (cmax - rgbf.min(axis=2)) / np.maximum(cmax, 1.0), 0.0)


def slide_views(
    path: Path | Sequence[Path],
    *,
    max_tiles: int = 8,
    tile_px: int = 224,
    target_mpp: float = 0.5,
    limits: IngestLimits | None = None,
    name: str | None = None,
) -> list[ImageView]:
    """Thumbnail then the top-k most informative tissue tiles of a slide.

    Args:
        path: the slide (a file, a DICOM-WSI folder, or a list of DICOM-WSI files).
        max_tiles: number of tiles (k).
        tile_px: tile side in pixels.
        target_mpp: tile resolution in µm/px.
        limits: read caps.
        name: what to call the slide in messages (see :func:`open_slide`).

    Returns:
        ``[thumbnail, tile, ...]`` views of kind ``slide``.

    Raises:
        SlideError: the slide cannot be opened or read.
        LimitExceededError: a read is over the region cap.
    """
    with open_slide(path, limits=limits, name=name) as reader:
        info = reader.info
        notes: list[str] = []
        if info.mpp is None:
            notes.append("the slide does not state its microns per pixel; tiles are taken at level 0")
        thumb = reader.thumbnail()
        mask = tissue_mask(thumb)
        if not mask.any():
            notes.append("no tissue found by the saturation threshold")
        w0, h0 = info.level_dimensions[0]
        mpp_txt = f"{info.mpp:g} µm/px" if info.mpp else "unknown µm/px"
        views = [
            ImageView(
                pixels=np.ascontiguousarray(thumb),
                modality="SM",
                body_part=None,
                kind="slide",
                description=f"slide thumbnail {thumb.shape[1]}x{thumb.shape[0]} of level 0 {w0}x{h0} "
                f"at {mpp_txt}, {info.backend} ({info.vendor or 'unknown vendor'}), "
                f"tissue {float(mask.mean()):.2f} of area",
                warnings=tuple(notes),
            )
        ]
        sat = saturation_of(thumb)
        plan = plan_tiles(info, mask, sat, tile_px=tile_px, target_mpp=target_mpp)
        if not plan and mask.any():  # sparse tissue: take the best tiles that touch it at all
            plan = plan_tiles(info, mask, sat, tile_px=tile_px, target_mpp=target_mpp, min_tissue=1e-6)
        for tile in top_tiles(plan, max_tiles):
            views.append(
                ImageView(
                    pixels=np.ascontiguousarray(read_tile(reader, tile)),
                    modality="SM",
                    body_part=None,
                    kind="slide",
                    description=tile.describe(info.mpp),
                    warnings=tuple(notes),
                )
            )
    return views
