"""H&E-like pathology phantoms: tissue patches with labelled regions, and pyramidal slides.

A patch is an RGB image at 0.5 microns per pixel: pink eosin stroma with normal glands (a white
lumen ringed by evenly spaced, uniform nuclei). Findings change it in labelled regions:

- ``tumor``: crowded, large, hyperchromatic nuclei of varying size and shape (pleomorphism), no glands;
- ``necrosis``: pale eosinophilic debris with small fragmented nuclear dust and no intact nuclei;
- ``inflammation``: a dense infiltrate of small, round, dark lymphocyte nuclei;
- ``mitosis``: one to three dark, irregular, condensed chromatin figures.

Nuclei are stamped as impulses and blurred with (anisotropic) Gaussians, which is fast at any
size. A slide (``write_slide``) is normal tissue with the patch pasted at its centre, written with
``data_prep.slide_writer.write_pyramidal_svs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from data_prep.phantoms.spec import Finding

MPP = 0.5


def _colour(r: float, g: float, b: float) -> np.ndarray:
    """A read-only RGB colour (module constants must not be changed by a caller)."""
    arr = np.array([r, g, b], dtype=np.float32)
    arr.setflags(write=False)
    return arr


_STROMA = _colour(232.0, 160.0, 196.0)
_NECROSIS = _colour(242.0, 196.0, 214.0)
_NUCLEUS = _colour(72.0, 42.0, 120.0)
_LUMEN = _colour(246.0, 242.0, 246.0)
_GLASS = _colour(244.0, 244.0, 244.0)
_PATHOLOGY_FINDINGS = frozenset({"tumor", "necrosis", "inflammation", "mitosis"})


@dataclass
class PatchRender:
    """A rendered tissue patch.

    Attributes:
        rgb: ``(size, size, 3)`` uint8.
        masks: boolean ``(size, size)`` region per finding id (``mitosis``: the figures).
        nuclear_density: ``(size, size)`` float32 nuclear stain fraction in [0, 1].
        mitosis_centers: ``(y, x)`` of each mitotic figure.
        stain: per-channel stain factors (variation between labs) applied to the patch.
    """

    rgb: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    nuclear_density: np.ndarray | None = None
    mitosis_centers: list[tuple[int, int]] = field(default_factory=list)
    stain: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def pixels(self) -> np.ndarray:
        """Float RGB in [0, 1], ``(size, size, 3)``."""
        return self.rgb.astype(np.float32) / 255.0


def _nuclei(
    shape: tuple[int, int],
    density: float,
    mask: np.ndarray,
    sigma: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Blurred impulses at random points inside ``mask``, normalised so a nucleus peaks near 1."""
    imp = np.zeros(shape, dtype=np.float32)
    n = rng.poisson(density * float(mask.sum()))
    if n == 0:
        return imp
    ys, xs = np.nonzero(mask)
    idx = rng.integers(len(ys), size=n)
    np.add.at(imp, (ys[idx], xs[idx]), 1.0)
    out = ndimage.gaussian_filter(imp, sigma=sigma)
    return out * (2 * np.pi * sigma[0] * sigma[1]) * 1.6


def _blob(shape: tuple[int, int], frac: float, rng: np.random.Generator, smooth: float) -> np.ndarray:
    """A smooth random region covering about ``frac`` of the image."""
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), smooth)
    return field_ > np.quantile(field_, 1.0 - frac)


def _glands(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lumen mask and ring of evenly spaced nuclei of normal glands (each drawn in its own window)."""
    h, w = shape
    lumen = np.zeros(shape, dtype=bool)
    ring = np.zeros(shape, dtype=np.float32)
    step = 46.0 * scale
    for gy in np.arange(step / 2, h, step):
        for gx in np.arange(step / 2, w, step):
            cy, cx = gy + rng.uniform(-9, 9) * scale, gx + rng.uniform(-9, 9) * scale
            r = rng.uniform(9, 13) * scale
            y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h)
            x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w)
            if y0 < y1 and x0 < x1:
                wy, wx = np.ogrid[y0:y1, x0:x1]
                lumen[y0:y1, x0:x1] |= (wy - cy) ** 2 + (wx - cx) ** 2 < r**2
            k = max(int(2 * np.pi * (r + 4 * scale) / (7 * scale)), 6)
            a = np.linspace(0, 2 * np.pi, k, endpoint=False)
            ys = (cy + (r + 3.5 * scale) * np.sin(a)).astype(int)
            xs = (cx + (r + 3.5 * scale) * np.cos(a)).astype(int)
            ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
            ring[ys[ok], xs[ok]] = 1.0
    sig = 1.6 * scale
    ring = ndimage.gaussian_filter(ring, sig) * (2 * np.pi * sig * sig) * 1.4
    return lumen, ring


def _regions(
    ids: set[str], shape: tuple[int, int], scale: float, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Disjoint blobs for necrosis, inflammation and tumour (in that order); the rest is normal."""
    masks: dict[str, np.ndarray] = {}
    free = np.ones(shape, dtype=bool)
    for fid, frac in (("necrosis", 0.22), ("inflammation", 0.22), ("tumor", 0.45)):
        if fid in ids:
            region = _blob(shape, frac * rng.uniform(0.8, 1.2), rng, 14 * scale) & free
            masks[fid] = region
            free &= ~region
    return masks, free


def _cell_nuclei(
    masks: dict[str, np.ndarray],
    normal: np.ndarray,
    lumen: np.ndarray,
    ring: np.ndarray,
    scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Nuclear stain of gland rings, stromal cells and each region's cells, ``(size, size)``."""
    shape = normal.shape
    nuclear = np.zeros(shape, dtype=np.float32)
    nuclear += ring * normal
    nuclear += _nuclei(
        shape, 0.002 / scale**2, normal & ~lumen, (1.5 * scale, 2.5 * scale), rng
    )  # stromal cells
    if "tumor" in masks:
        for sig in ((2.2, 2.8), (3.0, 3.0), (2.0, 3.8), (3.6, 2.4)):  # pleomorphic nuclei
            nuclear += _nuclei(shape, 0.002 / scale**2, masks["tumor"], (sig[0] * scale, sig[1] * scale), rng)
    if "inflammation" in masks:
        nuclear += 1.3 * _nuclei(
            shape, 0.03 / scale**2, masks["inflammation"], (1.3 * scale, 1.3 * scale), rng
        )
    if "necrosis" in masks:
        nuclear += 0.7 * _nuclei(shape, 0.01 / scale**2, masks["necrosis"], (0.6 * scale, 0.6 * scale), rng)
    return nuclear


def _mitotic_figures(
    where: np.ndarray, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One to three condensed-chromatin figures inside ``where`` (anywhere if it is empty).

    Returns:
        The figures' stain ``(size, size)`` float32 and their ``(y, x)`` centres.
    """
    shape = where.shape
    size = shape[0]
    ys, xs = np.nonzero(where if where.any() else np.ones(shape, dtype=bool))
    fig = np.zeros(shape, dtype=np.float32)
    centers: list[tuple[int, int]] = []
    for _ in range(int(rng.integers(1, 4))):
        j = int(rng.integers(len(ys)))
        cy, cx = int(ys[j]), int(xs[j])
        centers.append((cy, cx))
        for _arm in range(6):  # a clump of condensed chromatin arms
            dy, dx = rng.normal(0, 1.8 * scale, 2)
            y, x = int(np.clip(cy + dy, 0, size - 1)), int(np.clip(cx + dx, 0, size - 1))
            fig[y, x] += 1.0
    fig = ndimage.gaussian_filter(fig, 1.0 * scale) * (2 * np.pi * scale * scale) * 1.5
    return fig, centers


def _stain(
    nuclear: np.ndarray,
    lumen: np.ndarray,
    necrosis: np.ndarray | None,
    scale: float,
    rng: np.random.Generator,
    stain: tuple[float, float, float] | None,
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Eosin background, haematoxylin nuclei, lab stain factors and noise.

    Returns:
        Float RGB ``(size, size, 3)`` (not yet clipped) and the stain factors used.
    """
    shape = nuclear.shape
    base = np.empty((*shape, 3), dtype=np.float32)
    base[:] = _STROMA
    base[lumen] = _LUMEN
    if necrosis is not None:
        base[necrosis] = _NECROSIS
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5 * scale)
    base += 10.0 * texture[..., None]
    rgb = base * (1.0 - nuclear[..., None]) + _NUCLEUS * nuclear[..., None]
    factors = tuple(float(v) for v in rng.uniform(0.93, 1.07, size=3)) if stain is None else stain
    rgb *= np.asarray(factors, dtype=np.float32)  # stain variation between labs
    rgb += rng.normal(0, 3.0, rgb.shape).astype(np.float32)
    return rgb, (factors[0], factors[1], factors[2])


def render_patch(
    findings: tuple[Finding, ...],
    size: int,
    rng: np.random.Generator,
    scale: float | None = None,
    stain: tuple[float, float, float] | None = None,
) -> PatchRender:
    """Render an H&E-like patch with the findings in labelled regions.

    Args:
        findings: pathology findings (``tumor``, ``necrosis``, ``inflammation``, ``mitosis``).
        size: side length in pixels.
        rng: random generator.
        scale: feature scale (nucleus and gland size); ``size / 256`` when None, so a patch
            looks the same at any size.
        stain: per-channel stain factors; drawn from ``rng`` (0.93-1.07) when None.

    Returns:
        The patch and its region masks.

    Raises:
        ValueError: on a finding that is not a pathology finding.
    """
    ids = {f.id for f in findings}
    bad = ids - _PATHOLOGY_FINDINGS
    if bad:
        raise ValueError(f"cannot draw {sorted(bad)} on a pathology patch")
    shape = (size, size)
    scale = size / 256.0 if scale is None else scale
    masks, normal = _regions(ids, shape, scale, rng)
    lumen, ring = _glands(shape, scale, rng)
    lumen &= normal
    nuclear = _cell_nuclei(masks, normal, lumen, ring, scale, rng)
    centers: list[tuple[int, int]] = []
    if "mitosis" in ids:
        fig, centers = _mitotic_figures(masks.get("tumor", normal & ~lumen), scale, rng)
        masks["mitosis"] = fig > 0.5
        nuclear += 1.6 * fig
    nuclear = np.clip(nuclear, 0.0, 1.0)
    rgb, factors = _stain(nuclear, lumen, masks.get("necrosis"), scale, rng, stain)
    return PatchRender(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8),
        masks=masks,
        nuclear_density=nuclear,
        mitosis_centers=centers,
        stain=factors,
    )


def slide_image(patch: PatchRender, rng: np.random.Generator, factor: int = 4) -> np.ndarray:
    """A larger slide: normal tissue on glass, with ``patch`` pasted at the centre.

    Args:
        patch: the labelled patch (its findings are the slide's findings).
        rng: random generator.
        factor: slide side = ``factor`` x patch side.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    size = patch.rgb.shape[0]
    side = size * factor
    # normal tissue at the patch's magnification
    tissue = render_patch((), side, rng, scale=size / 256.0, stain=patch.stain).rgb.astype(np.float32)
    yy, xx = np.ogrid[:side, :side]
    outline = ((yy - side / 2) / (side * 0.46)) ** 2 + ((xx - side / 2) / (side * 0.42)) ** 2 <= 1.0
    img = np.where(outline[..., None], tissue, _GLASS)
    c = side // 2 - size // 2
    img[c : c + size, c : c + size] = patch.rgb
    return img.astype(np.uint8)


def write_slide(path: Path, patch: PatchRender, rng: np.random.Generator) -> Path:
    """Write a pyramidal SVS slide holding ``patch`` at its centre (0.5 mpp, 20x).

    Args:
        path: output ``.svs`` file.
        patch: the labelled patch.
        rng: random generator.

    Returns:
        ``path``.

    Raises:
        OSError: if the file cannot be written.
    """
    from data_prep.slide_writer import write_pyramidal_svs

    write_pyramidal_svs(path, slide_image(patch, rng), mpp=MPP, app_mag=20, tile=256)
    return path
