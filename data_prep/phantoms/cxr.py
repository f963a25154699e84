"""Chest radiograph phantom renderer (PA view).

Draws a frontal chest radiograph from a :class:`CxrAnatomy` (per-patient body habitus, lung,
heart and rib geometry) and a tuple of :class:`~data_prep.phantoms.spec.Finding`. Coordinates
are normalised: ``x`` in [0, 1] from image left to right, ``y`` in [0, 1] from top to bottom.
Radiological convention for a PA view: the patient's right is on the image's LEFT, so a
``laterality: left`` finding lies in the right half of the image.

Pixel values are in [0, 1] with MONOCHROME2 meaning (dense structures, fluid and bone white;
air black). Every finding also returns its mask, so tests and grounding can check that labels
agree with pixels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from data_prep.phantoms.spec import Finding

FOV_MM = 450.0  # field of view across the image width, in millimetres
CARINA_Y = 0.36
_ZONE_FRAC = MappingProxyType({"upper": 0.22, "middle": 0.50, "lower": 0.76})


def side_sign(side: str) -> int:
    """Image x direction of the patient's ``side`` from the midline (-1 image left, +1 right)."""
    return 1 if side == "left" else -1


@dataclass(frozen=True)
class CxrAnatomy:
    """Per-patient geometry, in normalised image units.

    Attributes:
        cx: midline x.
        thorax_half: half of the inner thoracic width (lateral lung edges).
        apex_y: y of the lung apices.
        base_y: y of the costophrenic angles.
        dome: height of the diaphragmatic domes above the angles.
        med_half: half width of the mediastinum.
        ctr: cardiothoracic ratio (cardiac width / thoracic width).
        heart_cy: y of the heart centre.
        heart_ry: vertical semi-axis of the heart.
        soft_margin: soft-tissue thickness outside the ribs (body habitus).
        rib_spacing: vertical spacing of the posterior ribs.
        rib_phase: rib phase offset.
        rib_curve: curvature of the ribs.
        texture_seed: seed for lung markings.
    """

    cx: float
    thorax_half: float
    apex_y: float
    base_y: float
    dome: float
    med_half: float
    ctr: float
    heart_cy: float
    heart_ry: float
    soft_margin: float
    rib_spacing: float
    rib_phase: float
    rib_curve: float
    texture_seed: int

    def lung_center(self, side: str) -> float:
        """x of the centre of the patient's ``side`` lung."""
        return self.cx + side_sign(side) * (self.med_half + self.thorax_half) / 2.0

    @property
    def lung_half(self) -> float:
        """Half width of one lung."""
        return (self.thorax_half - self.med_half) / 2.0

    @property
    def cardiac_width(self) -> float:
        """Full width of the cardiac silhouette."""
        return self.ctr * 2.0 * self.thorax_half


def sample_anatomy(rng: np.random.Generator, *, cardiomegaly: bool = False) -> CxrAnatomy:
    """Draw a patient's chest geometry.

    Args:
        rng: random generator.
        cardiomegaly: draw a cardiothoracic ratio of 0.56-0.66 instead of 0.38-0.47.

    Returns:
        The anatomy.
    """
    base_y = float(rng.uniform(0.70, 0.79))
    return CxrAnatomy(
        cx=float(0.5 + rng.uniform(-0.02, 0.02)),
        thorax_half=float(rng.uniform(0.31, 0.37)),
        apex_y=float(rng.uniform(0.10, 0.16)),
        base_y=base_y,
        dome=float(rng.uniform(0.04, 0.07)),
        med_half=float(rng.uniform(0.05, 0.07)),
        ctr=float(rng.uniform(0.56, 0.66) if cardiomegaly else rng.uniform(0.38, 0.47)),
        heart_cy=float(base_y - rng.uniform(0.08, 0.11)),
        heart_ry=float(rng.uniform(0.10, 0.13)),
        soft_margin=float(rng.uniform(0.03, 0.10)),
        rib_spacing=float(rng.uniform(0.055, 0.07)),
        rib_phase=float(rng.uniform(0.0, 1.0)),
        rib_curve=float(rng.uniform(0.2, 0.5)),
        texture_seed=int(rng.integers(2**31)),
    )


def with_ctr(anatomy: CxrAnatomy, ctr: float) -> CxrAnatomy:
    """Return ``anatomy`` with a different cardiothoracic ratio."""
    fields = dict(anatomy.__dict__)
    fields["ctr"] = ctr
    return CxrAnatomy(**fields)


@dataclass(frozen=True)
class Acquisition:
    """Acquisition variation: exposure, contrast, noise, blur."""

    gamma: float
    contrast: float
    offset: float
    noise: float
    blur_px: float

    @staticmethod
    def sample(rng: np.random.Generator) -> Acquisition:
        """Draw acquisition settings."""
        return Acquisition(
            gamma=float(rng.uniform(0.8, 1.25)),
            contrast=float(rng.uniform(0.85, 1.15)),
            offset=float(rng.uniform(-0.05, 0.05)),
            noise=float(rng.uniform(0.008, 0.035)),
            blur_px=float(rng.uniform(0.3, 0.9)),
        )


@dataclass
class CxrRender:
    """A rendered radiograph and its geometry.

    Attributes:
        pixels: ``(size, size)`` float32 in [0, 1], MONOCHROME2 meaning.
        masks: boolean ``(size, size)`` mask per finding id (``lung_left`` etc. for anatomy).
        ctr: cardiothoracic ratio as drawn.
        cp_boxes: ``(y0, y1, x0, x1)`` pixel box of each costophrenic region, by patient side.
        centers: ``(y, x)`` pixel centre per focal finding id.
    """

    pixels: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    ctr: float = 0.0
    cp_boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    centers: dict[str, tuple[int, int]] = field(default_factory=dict)


def _segment_distance(
    xx: np.ndarray, yy: np.ndarray, p: tuple[float, float], q: tuple[float, float]
) -> np.ndarray:
    """Distance from each grid point to the segment p-q (points as (x, y))."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    t = np.clip(((xx - px) * dx + (yy - py) * dy) / (dx * dx + dy * dy + 1e-12), 0.0, 1.0)
    return np.hypot(xx - (px + t * dx), yy - (py + t * dy))


def _polyline_mask(
    xx: np.ndarray, yy: np.ndarray, points: list[tuple[float, float]], width: float
) -> np.ndarray:
    """Pixels within ``width`` of a polyline; each segment is evaluated only in its bounding box."""
    size = xx.shape[0]
    mask = np.zeros(xx.shape, dtype=bool)
    for p, q in itertools.pairwise(points):
        x0 = max(int((min(p[0], q[0]) - width) * size) - 1, 0)
        x1 = min(int((max(p[0], q[0]) + width) * size) + 2, size)
        y0 = max(int((min(p[1], q[1]) - width) * size) - 1, 0)
        y1 = min(int((max(p[1], q[1]) + width) * size) + 2, size)
        if x0 >= x1 or y0 >= y1:
            continue
        d = _segment_distance(xx[y0:y1, x0:x1], yy[y0:y1, x0:x1], p, q)
        mask[y0:y1, x0:x1] |= d < width
    return mask


class _Canvas:
    """Grid and anatomy masks at one resolution."""

    def __init__(self, a: CxrAnatomy, size: int) -> None:
        self.a = a
        self.size = size
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.yy, self.xx = np.meshgrid(coords, coords, indexing="ij")
        self.x_row = coords[None, :]  # (1, size): x-only quantities are computed once per column
        self.y_col = coords[:, None]  # (size, 1)
        self._diaphragm = {side: self._diaphragm_row(side) for side in ("right", "left")}
        self.lung_height = a.base_y - a.apex_y
        self.lungs = {side: self._lung(side) for side in ("right", "left")}
        hx = a.cx + a.cardiac_width * 0.12  # the heart extends further to the patient's left
        self.heart = ((self.xx - hx) / (a.cardiac_width / 2)) ** 2 + (
            (self.yy - a.heart_cy) / a.heart_ry
        ) ** 2 <= 1

    def diaphragm(self, side: str) -> np.ndarray:
        """y of the hemidiaphragm dome per column, shape ``(1, size)`` (broadcasts over rows)."""
        return self._diaphragm[side]

    def _diaphragm_row(self, side: str) -> np.ndarray:
        a = self.a
        u = (self.x_row - a.lung_center(side)) / a.lung_half
        return self.angle_y(side) - a.dome * np.clip(1.0 - u**2, 0.0, 1.0)

    def angle_y(self, side: str) -> float:
        """y of the costophrenic angle; the right hemidiaphragm sits a little higher."""
        return self.a.base_y - (0.02 if side == "right" else 0.0)

    def _lung(self, side: str) -> np.ndarray:
        a = self.a
        u = (self.x_row - a.lung_center(side)) / a.lung_half
        mid = (a.apex_y + a.base_y) / 2.0
        v = (self.y_col - mid) / ((a.base_y - a.apex_y) / 2.0)
        upper = (v < 0) & (u**2 + v**2 <= 1.0)
        lower = (v >= 0) & (np.abs(u) <= 1.0) & (self.y_col <= self.diaphragm(side))
        return upper | lower

    def lateral_u(self, side: str) -> np.ndarray:
        """Normalised distance across the lung, 0 at its centre and 1 at its lateral edge."""
        a = self.a
        return side_sign(side) * (self.xx - a.lung_center(side)) / a.lung_half

    def disc(self, cx: float, cy: float, r: float) -> np.ndarray:
        """Soft disc profile in [0, 1] with about one pixel of edge."""
        d = np.hypot(self.xx - cx, self.yy - cy)
        edge = 1.0 / self.size
        return np.clip((r - d) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _anatomy_image(c: _Canvas, rng: np.random.Generator) -> np.ndarray:
    a, xx, yy = c.a, c.xx, c.yy
    img = np.zeros(xx.shape, dtype=np.float32)
    body_half = a.thorax_half + a.soft_margin + 0.03
    body = ((xx - a.cx) / body_half) ** 2 + ((yy - 0.55) / 0.62) ** 2 <= 1.0
    neck = (np.abs(xx - a.cx) < 0.09) & (yy < 0.2)
    img[body | neck] = 0.50 + 0.1 * (a.soft_margin - 0.03) / 0.07
    # Ribs: periodic bands curving down laterally, inside the bony thorax.
    dist = np.abs(xx - a.cx)
    phase = (yy - a.rib_curve * dist**2 - 0.35 * dist) / a.rib_spacing + a.rib_phase
    ribs = np.clip(np.cos(2 * np.pi * phase), 0.0, 1.0) ** 3
    thorax = (dist < a.thorax_half + 0.02) & (yy > a.apex_y - 0.05) & (yy < a.base_y + 0.03)
    lungs = c.lungs["right"] | c.lungs["left"]
    # Lung markings: smoothed noise, denser towards the hila.
    tex_rng = np.random.default_rng(a.texture_seed)
    f = max(c.size // 128, 1)  # large images: smooth a coarser grid, then upsample (same look, less work)
    noise = tex_rng.standard_normal((c.size // f, c.size // f)).astype(np.float32)
    markings = ndimage.gaussian_filter(noise, sigma=max(c.size / 160.0 / f, 0.6))
    if f > 1:
        from PIL import Image

        markings = np.array(
            Image.fromarray(markings, mode="F").resize((c.size, c.size), Image.Resampling.BILINEAR)
        )
    markings /= markings.std() + 1e-6
    hilum = np.exp(-(((dist - a.med_half - 0.04) / 0.12) ** 2) - ((yy - 0.45) / 0.2) ** 2)
    img[lungs] = 0.16 + (0.025 + 0.03 * hilum[lungs]) * markings[lungs]
    img += 0.10 * ribs * thorax * body
    # Mediastinum and spine, heart, clavicles.
    med = (dist < a.med_half) & (yy < a.base_y) & (yy > 0.0) & body
    img[med] = np.maximum(img[med], 0.66)
    img += 0.05 * ((dist < 0.025) & body)
    img[c.heart] = np.maximum(img[c.heart], 0.70)
    for side in ("right", "left"):
        s = side_sign(side)
        clav = _polyline_mask(
            xx, yy, [(a.cx + s * 0.04, a.apex_y + 0.05), (a.cx + s * (a.thorax_half + 0.02), a.apex_y)], 0.012
        )
        img += 0.12 * clav
    # Below the diaphragm: abdomen.
    below = body & (yy > np.minimum(c.diaphragm("right"), c.diaphragm("left"))) & ~lungs & (yy > a.heart_cy)
    img[below] = np.maximum(img[below], 0.60)
    del rng
    return img


def _effusion(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """Fluid density filling the lung base(s) up to a meniscus that rises laterally."""
    mask = np.zeros(img.shape, dtype=bool)
    height = rng.uniform(0.05, 0.08) if f.attributes["severity"] == "small" else rng.uniform(0.16, 0.24)
    for side in sorted(f.sides()):
        lat = np.clip(c.lateral_u(side), 0.0, 1.0)
        level = c.angle_y(side) - height - 0.05 * lat
        region = c.lungs[side] & (c.yy > level)
        img[region] = np.maximum(img[region], 0.58 + 0.02 * rng.standard_normal())
        mask |= region
    out.masks[f.id] = mask


def _pneumothorax(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """A lateral/apical band without lung markings, edged by a visible pleural line."""
    a, side = c.a, str(f.attributes["laterality"])
    lat = c.lateral_u(side)
    width = rng.uniform(0.25, 0.4) + 0.25 * np.clip((a.base_y - c.yy) / c.lung_height, 0, 1)
    region = c.lungs[side] & (lat > 1.0 - width)
    img[region] = 0.07
    line = c.lungs[side] & (np.abs(lat - (1.0 - width)) < 1.5 / (c.size * a.lung_half))
    img[line] = 0.32
    out.masks[f.id] = region


def _nodule(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """A disc of the labelled size in the labelled zone (masses lobulated)."""
    a, at = c.a, f.attributes
    side = str(at["laterality"])
    cy = a.apex_y + c.lung_height * (_ZONE_FRAC[str(at["zone"])] + rng.uniform(-0.05, 0.05))
    cx = a.lung_center(side) + side_sign(side) * a.lung_half * rng.uniform(0.05, 0.45)
    r = float(at["size_mm"]) / 2.0 / FOV_MM
    prof = c.disc(cx, cy, r)
    if f.id == "lung_mass":
        for _ in range(2):
            ang = rng.uniform(0, 2 * np.pi)
            prof = np.maximum(prof, c.disc(cx + 0.5 * r * np.cos(ang), cy + 0.5 * r * np.sin(ang), 0.7 * r))
    img += 0.30 * prof
    out.masks[f.id] = prof > 0.5
    out.centers[f.id] = (int(cy * c.size), int(cx * c.size))


def _lobe_region(c: _Canvas, lobe: str) -> np.ndarray:
    """Projection of a lobe on a PA view (approximate: upper/middle/lower bands of the lung)."""
    side, part = lobe.split("_")
    t = (c.yy - c.a.apex_y) / c.lung_height
    medial = c.lateral_u(side) < 0.35
    if part == "upper":
        band = t < (0.45 if side == "right" else 0.55)
    elif part == "middle":
        band = (t >= 0.45) & (t < 0.8) & medial
    elif side == "right":
        band = (t >= 0.55) & ~((t < 0.8) & medial)
    else:
        band = t >= 0.55
    return c.lungs[side] & band


def _consolidation(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """A patchy airspace opacity over most of the labelled lobe."""
    lobe = _lobe_region(c, str(f.attributes["lobe"]))
    blob = ndimage.gaussian_filter(rng.standard_normal(img.shape).astype(np.float32), c.size / 40.0)
    region = lobe & (blob > np.quantile(blob[lobe], 0.25))
    img[region] += 0.28
    out.masks[f.id] = region


def _atelectasis(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """A plate-like band at the labelled base."""
    a, side = c.a, str(f.attributes["laterality"])
    y0 = a.base_y - rng.uniform(0.07, 0.12)
    tilt = rng.uniform(-0.04, 0.04)
    lc = a.lung_center(side)
    pts = [(lc - 0.7 * a.lung_half, y0 - tilt), (lc + 0.7 * a.lung_half, y0 + tilt)]
    region = _polyline_mask(c.xx, c.yy, pts, 0.012) & c.lungs[side]
    img[region] += 0.25
    out.masks[f.id] = region


def _edema(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """Bilateral perihilar haze and Kerley B lines at both bases."""
    a = c.a
    lungs = c.lungs["right"] | c.lungs["left"]
    dist = np.abs(c.xx - a.cx)
    haze = np.exp(-(((dist - a.med_half - 0.03) / 0.12) ** 2) - ((c.yy - 0.48) / 0.16) ** 2)
    img += 0.22 * haze * lungs
    kerley = np.zeros(img.shape, dtype=bool)
    for side in ("right", "left"):
        for k in range(4):
            y = a.base_y - 0.03 - 0.025 * k
            x0 = a.lung_center(side) + side_sign(side) * a.lung_half * 0.95
            kerley |= _polyline_mask(c.xx, c.yy, [(x0, y), (x0 - side_sign(side) * 0.04, y)], 0.004)
    img[kerley & lungs] += 0.18
    out.masks[f.id] = (haze > 0.3) & lungs


def _ett(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """A tube down the trachea with its tip above the carina."""
    x = c.a.cx + rng.uniform(-0.008, 0.008)
    tube = _polyline_mask(c.xx, c.yy, [(x, 0.0), (x, CARINA_Y - rng.uniform(0.03, 0.06))], 0.006)
    img[tube] += 0.4
    out.masks[f.id] = tube


def _cvc(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """A line from the labelled subclavian region into the SVC (on the patient's right)."""
    a, s = c.a, side_sign(str(f.attributes["laterality"]))
    svc_x = a.cx - a.med_half * 0.8
    pts = [
        (a.cx + s * (a.thorax_half + 0.02), a.apex_y + 0.03),
        (a.cx + s * 0.07, a.apex_y + 0.07),
        (svc_x, a.apex_y + 0.12),
        (svc_x, CARINA_Y + rng.uniform(0.0, 0.05)),
    ]
    line = _polyline_mask(c.xx, c.yy, pts, 0.005)
    img[line] += 0.4
    out.masks[f.id] = line


def _cardiomegaly(c: _Canvas, img: np.ndarray, f: Finding, rng: np.random.Generator, out: CxrRender) -> None:
    """Drawn by the anatomy (its cardiothoracic ratio); only the mask is recorded here."""
    out.masks[f.id] = c.heart


_DRAWERS = MappingProxyType(
    {
        "pleural_effusion": _effusion,
        "pneumothorax": _pneumothorax,
        "lung_nodule": _nodule,
        "lung_mass": _nodule,
        "consolidation": _consolidation,
        "atelectasis": _atelectasis,
        "pulmonary_edema": _edema,
        "endotracheal_tube": _ett,
        "central_venous_catheter": _cvc,
        "cardiomegaly": _cardiomegaly,
    }
)


def _draw_findings(
    c: _Canvas, img: np.ndarray, findings: tuple[Finding, ...], rng: np.random.Generator
) -> CxrRender:
    out = CxrRender(pixels=img)
    for f in findings:
        drawer = _DRAWERS.get(f.id)
        if drawer is None:
            raise ValueError(f"the chest radiograph renderer cannot draw {f.id!r}")
        drawer(c, img, f, rng, out)
    return out


def _cp_boxes(c: _Canvas) -> dict[str, tuple[int, int, int, int]]:
    a, s = c.a, c.size
    boxes = {}
    for side in ("right", "left"):
        lateral_x = a.lung_center(side) + side_sign(side) * a.lung_half * 0.55
        half_w = a.lung_half * 0.45
        x0, x1 = sorted((lateral_x - half_w, lateral_x + half_w))
        y = c.angle_y(side)
        boxes[side] = (int((y - 0.06) * s), int((y - 0.005) * s), int(x0 * s), int(x1 * s))
    return boxes


def render_cxr(
    anatomy: CxrAnatomy,
    findings: tuple[Finding, ...],
    size: int,
    rng: np.random.Generator,
    acquisition: Acquisition | None = None,
) -> CxrRender:
    """Render a PA chest radiograph.

    Args:
        anatomy: patient geometry; its ``ctr`` must exceed 0.5 iff ``cardiomegaly`` is in findings.
        findings: abnormal findings to draw.
        size: output side length in pixels (square image).
        rng: random generator for finding placement and noise.
        acquisition: exposure/noise settings; drawn from ``rng`` when None.

    Returns:
        The image (``(size, size)`` float32 in [0, 1]) with masks and geometry at ``size``.

    Raises:
        ValueError: if a finding cannot be drawn on a radiograph or the heart size contradicts
            the labels.
    """
    if size < 16:
        raise ValueError(f"size {size} is too small (minimum 16)")
    has_cm = any(f.id == "cardiomegaly" for f in findings)
    if has_cm != (anatomy.ctr > 0.5):
        raise ValueError(f"cardiothoracic ratio {anatomy.ctr:.2f} contradicts cardiomegaly={has_cm}")
    acq = acquisition or Acquisition.sample(rng)
    work = size * 2 if size < 128 else size  # supersample small images
    c = _Canvas(anatomy, work)
    img = _anatomy_image(c, rng)
    out = _draw_findings(c, img, findings, rng)
    out.masks["lung_right"] = c.lungs["right"]
    out.masks["lung_left"] = c.lungs["left"]
    out.masks["heart"] = c.heart
    out.cp_boxes = _cp_boxes(c)
    img = ndimage.gaussian_filter(out.pixels, sigma=acq.blur_px * work / size)
    if work != size:
        f = work // size
        img = img.reshape(size, f, size, f).mean(axis=(1, 3))
        out.masks = {k: m.reshape(size, f, size, f).mean(axis=(1, 3)) >= 0.5 for k, m in out.masks.items()}
        out.cp_boxes = {k: tuple(v // f for v in b) for k, b in out.cp_boxes.items()}  # type: ignore[misc]
        out.centers = {k: (y // f, x // f) for k, (y, x) in out.centers.items()}
    img = np.clip(img, 0.0, 1.0) ** acq.gamma
    img = (img - 0.5) * acq.contrast + 0.5 + acq.offset
    img = img + acq.noise * rng.standard_normal(img.shape).astype(np.float32)
    out.pixels = np.clip(img, 0.0, 1.0).astype(np.float32)
    out.ctr = anatomy.ctr
    return out
