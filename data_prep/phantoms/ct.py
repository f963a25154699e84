"""CT phantoms: short axial series in Hounsfield units, chest or head.

Axial slices are shown in radiological convention: viewed from the feet, the patient's right is
on the image's LEFT and anterior is at the top. A ``laterality: left`` finding is drawn in the
right half of the image.

Chest: lungs (about -850 HU) whose size and the heart's presence change with slice level, so the
zone of a nodule (upper/middle/lower third of the series) can be read from the anatomy;
``lung_nodule`` is a sphere of the labelled size, ``pleural_effusion`` a dependent (posterior)
fluid crescent (about 15 HU). Head: skull, grey/white matter, ventricles;
``intracranial_hemorrhage`` is a hyperdense (60-80 HU) collection and ``cerebral_infarct`` a
hypodense (15-22 HU) cortical wedge in the labelled hemisphere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from data_prep.phantoms.catalogue import Catalogue
from data_prep.phantoms.spec import Finding, sample_attributes

N_SLICES = 8
SLICE_MM = 5.0
FOV_MM = MappingProxyType({"chest": 380.0, "head": 240.0})
WINDOWS = MappingProxyType(
    {"chest": (-300.0, 1600.0), "head": (40.0, 80.0)}
)  # (centre, width) of the model-ready view
REGION_FINDINGS = MappingProxyType(
    {
        "chest": ("lung_nodule", "pleural_effusion"),
        "head": ("intracranial_hemorrhage", "cerebral_infarct"),
    }
)
_ZONE_T = MappingProxyType({"upper": 0.19, "middle": 0.5, "lower": 0.81})


def side_sign(side: str) -> int:
    """Image x direction of the patient's ``side`` (radiological convention)."""
    return 1 if side == "left" else -1


@dataclass
class CtRender:
    """A rendered CT series.

    Attributes:
        hu: ``(N_SLICES, size, size)`` int16 Hounsfield units, slice 0 most cranial.
        region: ``chest`` or ``head``.
        key_slice: index of the slice shown as the model-ready view.
        pixels: the key slice windowed to [0, 1] (``WINDOWS[region]``).
        masks: ``(N_SLICES, size, size)`` boolean mask per finding id.
        mm_per_px: in-plane pixel spacing.
    """

    hu: np.ndarray
    region: str
    key_slice: int
    pixels: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    mm_per_px: float = 1.0


def sample_ct_findings(catalogue: Catalogue, rng: np.random.Generator) -> tuple[str, tuple[Finding, ...]]:
    """Draw a region and 0-2 findings of that region.

    Args:
        catalogue: findings catalogue.
        rng: random generator.

    Returns:
        ``(region, findings)``; findings validated against the catalogue.
    """
    region = "chest" if rng.uniform() < 0.5 else "head"
    pool = REGION_FINDINGS[region]
    k = int(rng.choice(3, p=[0.34, 0.33, 0.33]))
    chosen = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
    findings = tuple(Finding(pool[i], sample_attributes(catalogue.findings[pool[i]], rng)) for i in chosen)
    for f in findings:
        catalogue.validate(f.id, f.attributes, "ct")
    return region, findings


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map Hounsfield units to [0, 1] through a window (float32)."""
    return np.clip((hu.astype(np.float32) - (center - width / 2)) / width, 0.0, 1.0)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _chest(
    size: int, findings: tuple[Finding, ...], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    yy, xx = _grid(size)
    hu = np.zeros((N_SLICES, size, size), dtype=np.float32)
    masks = {f.id: np.zeros(hu.shape, dtype=bool) for f in findings}
    body_rx, body_ry = rng.uniform(0.40, 0.45), rng.uniform(0.28, 0.33)
    lung_scale = rng.uniform(0.9, 1.1)
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), size / 100)
    mm_px = FOV_MM["chest"] / size
    key = int(rng.integers(2, N_SLICES - 2))
    for k in range(N_SLICES):
        t = (k + 0.5) / N_SLICES
        img = np.full((size, size), -1000.0, dtype=np.float32)
        body = _ellipse(yy, xx, 0.5, 0.5, body_ry, body_rx)
        img[body] = -100.0  # subcutaneous fat
        img[_ellipse(yy, xx, 0.5, 0.5, body_ry - 0.025, body_rx - 0.03)] = 40.0
        grow = lung_scale * (0.55 + 0.45 * np.sin(np.pi * min(t * 0.9 + 0.1, 1.0)))
        lungs = {}
        for side in ("right", "left"):
            cx = 0.5 + side_sign(side) * 0.17
            lung = _ellipse(yy, xx, 0.48, cx, 0.2 * grow, 0.12 * grow)
            lungs[side] = lung
            img[lung] = -850.0 + 25.0 * texture[lung]
        if t > 0.3:  # heart appears from the middle third down, larger lower
            h = min((t - 0.3) / 0.5, 1.0)
            img[_ellipse(yy, xx, 0.42, 0.53, 0.11 * h + 0.02, 0.12 * h + 0.02)] = 40.0
        if t > 0.8:  # liver dome under the right lung
            img[_ellipse(yy, xx, 0.55, 0.5 + side_sign("right") * 0.16, 0.16 * (t - 0.75) / 0.25, 0.13)] = (
                55.0
            )
        img[_ellipse(yy, xx, 0.36, 0.55 - 0.04 * t, 0.03, 0.03)] = 45.0  # aorta
        img[_ellipse(yy, xx, 0.72, 0.5, 0.045, 0.05)] = 700.0  # vertebral body
        ang = np.arctan2(yy - 0.5, (xx - 0.5) * body_ry / body_rx)
        rad = np.hypot((yy - 0.5) / body_ry, (xx - 0.5) / body_rx)
        ribs = (np.abs(rad - 0.9) < 0.03) & (np.cos(ang * 9 + k) > 0.6)
        img[ribs] = 600.0
        for f in findings:
            at = f.attributes
            if f.id == "pleural_effusion":
                depth = 0.25 if at["severity"] == "small" else 0.6
                for side in sorted(f.sides()):
                    cx = 0.5 + side_sign(side) * 0.17
                    ry = 0.2 * grow
                    crescent = lungs[side] & (yy > 0.48 + ry * (1 - 2 * depth * (0.6 + 0.4 * t)))
                    img[crescent] = 15.0
                    masks[f.id][k] |= crescent
                    del cx
            elif f.id == "lung_nodule":
                zt = _ZONE_T[str(at["zone"])]
                zc = zt * N_SLICES * SLICE_MM
                r_mm = float(at["size_mm"]) / 2
                dz = (k + 0.5) * SLICE_MM - zc
                if abs(dz) < r_mm:
                    r = np.sqrt(r_mm**2 - dz**2) / mm_px / size
                    side = str(at["laterality"])
                    cx = 0.5 + side_sign(side) * 0.17 + side_sign(side) * 0.04
                    disc = _ellipse(yy, xx, 0.45, cx, max(r, 0.6 / size), max(r, 0.6 / size)) & lungs[side]
                    img[disc] = 30.0
                    masks[f.id][k] |= disc
        hu[k] = img
    for f in findings:
        if f.id == "lung_nodule":
            key = int(np.clip(round(_ZONE_T[str(f.attributes["zone"])] * N_SLICES - 0.5), 0, N_SLICES - 1))
    return hu, masks, key


def _head(
    size: int, findings: tuple[Finding, ...], rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    yy, xx = _grid(size)
    hu = np.zeros((N_SLICES, size, size), dtype=np.float32)
    masks = {f.id: np.zeros(hu.shape, dtype=bool) for f in findings}
    rx, ry = rng.uniform(0.33, 0.37), rng.uniform(0.40, 0.45)
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), size / 80)
    lesion_slice = int(rng.integers(3, 6))
    placements = {
        f.id: (rng.uniform(0.35, 0.6), rng.uniform(0.10, 0.17), rng.uniform(0.04, 0.07), rng.uniform(60, 80))
        for f in findings
    }
    for k in range(N_SLICES):
        t = (k + 0.5) / N_SLICES
        s = np.sqrt(max(1.0 - ((t - 0.45) / 0.65) ** 2, 0.2))
        img = np.full((size, size), -1000.0, dtype=np.float32)
        skull = _ellipse(yy, xx, 0.5, 0.5, ry * s, rx * s)
        brain = _ellipse(yy, xx, 0.5, 0.5, ry * s - 0.03, rx * s - 0.03)
        img[skull] = 1200.0
        cortex = brain & ~_ellipse(yy, xx, 0.5, 0.5, ry * s - 0.07, rx * s - 0.07)
        img[brain] = 29.0 + 1.5 * texture[brain]
        img[cortex] = 39.0 + 1.5 * texture[cortex]
        if 0.3 < t < 0.75:  # lateral ventricles
            for sd in (-1, 1):
                img[_ellipse(yy, xx, 0.47, 0.5 + sd * 0.05, 0.12, 0.03)] = 6.0
        img[(np.abs(xx - 0.5) < 0.004) & brain] = 45.0  # falx
        for f in findings:
            sgn = side_sign(str(f.attributes["laterality"]))
            cy, off, r, dens = placements[f.id]
            if abs(k - lesion_slice) > 1:
                continue
            shrink = 1.0 if k == lesion_slice else 0.6
            if f.id == "intracranial_hemorrhage":
                region = _ellipse(yy, xx, cy, 0.5 + sgn * off, r * shrink, r * 0.8 * shrink) & brain
                img[region] = dens
            else:  # cerebral_infarct: a wedge from the cortex towards the ventricle
                ang = np.arctan2(yy - 0.5, (xx - 0.5) * sgn)
                dist = np.hypot((yy - 0.5) / (ry * s), (xx - 0.5) / (rx * s))
                region = (
                    brain
                    & (np.abs(ang - (cy - 0.5)) < 0.35 * shrink)
                    & (dist > 0.45)
                    & (sgn * (xx - 0.5) > 0.02)
                )
                img[region] = 18.0 + texture[region]
            masks[f.id][k] |= region
        hu[k] = img
    return hu, masks, lesion_slice


def render_ct(region: str, findings: tuple[Finding, ...], size: int, rng: np.random.Generator) -> CtRender:
    """Render a short axial CT series.

    Args:
        region: ``chest`` or ``head``.
        findings: findings of that region (``REGION_FINDINGS``).
        size: in-plane side length in pixels.
        rng: random generator.

    Returns:
        The series in HU with the windowed key slice and per-finding masks.

    Raises:
        ValueError: on an unknown region or a finding that does not belong to it.
    """
    if region not in REGION_FINDINGS:
        raise ValueError(f"unknown CT region {region!r}")
    wrong = [f.id for f in findings if f.id not in REGION_FINDINGS[region]]
    if wrong:
        raise ValueError(f"findings {wrong} cannot be drawn on a {region} CT")
    hu, masks, key = (_chest if region == "chest" else _head)(size, findings, rng)
    hu += rng.normal(0.0, rng.uniform(3.0, 10.0), hu.shape).astype(np.float32)
    hu_i = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return CtRender(
        hu=hu_i,
        region=region,
        key_slice=key,
        pixels=window(hu_i[key], *WINDOWS[region]),
        masks=masks,
        mm_per_px=FOV_MM[region] / size,
    )
