"""Intensity handling for greyscale DICOM: modality LUT, VOI windowing, presets, MONOCHROME1.

Implements the linear VOI function of DICOM PS3.3 C.11.2.1.2 with numpy (float32), which is
exact and several times faster than going through MONAI's intensity transforms for a single
window; the result is always uint8 in 0..255, 0 black.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_prep.types import WindowInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowPreset:
    """A named CT window in Hounsfield units."""

    name: str
    center: float
    width: float


CT_PRESETS: dict[str, WindowPreset] = {
    p.name: p
    for p in (
        WindowPreset("lung", -600.0, 1500.0),
        WindowPreset("mediastinum", 50.0, 350.0),
        WindowPreset("bone", 400.0, 1800.0),
        WindowPreset("brain", 40.0, 80.0),
        WindowPreset("abdomen", 40.0, 400.0),
        WindowPreset("stroke", 40.0, 40.0),
    )
}
"""Named CT presets (centre, width in HU), after common radiology defaults."""

MULTI_WINDOW_PRESETS: tuple[str, str, str] = ("lung", "mediastinum", "bone")
"""The three CT windows placed in the R, G and B channels of a multi-window view."""


def get_preset(name: str) -> WindowPreset:
    """Look up a CT preset by name.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    try:
        return CT_PRESETS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(CT_PRESETS))
        raise ValueError(f"unknown window preset {name!r}; known presets: {known}") from None


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values to uint8 with the DICOM linear VOI function.

    Args:
        values: any-shape numeric array (e.g. HU).
        center: window centre.
        width: window width (values below 1 are treated as 1, as the standard requires).

    Returns:
        uint8 array of the same shape; ``<= center - 0.5 - (width-1)/2`` maps to 0.
    """
    w = max(float(width), 1.0)
    c = float(center)
    if w == 1.0:
        return np.where(values > c - 0.5, 255, 0).astype(np.uint8)
    scale = np.float32(255.0 / (w - 1.0))
    offset = np.float32((c - 0.5) - (w - 1.0) / 2.0)
    out = (values.astype(np.float32, copy=False) - offset) * scale
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out, out=out).astype(np.uint8)


def minmax_to_uint8(values: np.ndarray) -> tuple[np.ndarray, WindowInfo]:
    """Stretch the full value range to 0..255 (used when no window is known).

    Returns:
        The uint8 array and a :class:`WindowInfo` with preset ``"minmax"``.
    """
    lo = float(np.min(values)) if values.size else 0.0
    hi = float(np.max(values)) if values.size else 0.0
    width = max(hi - lo, 1.0)
    center = lo + width / 2.0 + 0.5
    return apply_window(values, center, width + 1.0), WindowInfo(center, width + 1.0, "minmax")


def modality_lut(arr: np.ndarray, ds: Any) -> tuple[np.ndarray, bool]:
    """Apply the modality LUT (rescale slope/intercept or a Modality LUT Sequence).

    Args:
        arr: stored values of one frame.
        ds: the pydicom Dataset (or functional-group view) the values come from.

    Returns:
        ``(values, rescaled)``: values in output units (HU for CT) and whether a LUT applied.
    """
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32), True
    slope = _first_float(ds.get("RescaleSlope"), 1.0)
    intercept = _first_float(ds.get("RescaleIntercept"), 0.0)
    if slope == 1.0 and intercept == 0.0:
        return arr, False
    out = arr.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out, True


def _first_float(value: Any, default: float) -> float:
    """First number of a possibly multi-valued DICOM DS/IS element, or ``default``."""
    if value is None:
        return default
    if hasattr(value, "value"):
        value = value.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        if not value:
            return default
        value = value[0]
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if np.isfinite(out) else default


def file_window(ds: Any) -> tuple[float, float] | None:
    """The file's first WindowCenter/WindowWidth pair, or None if absent or invalid."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center = _first_float(ds.get("WindowCenter"), float("nan"))
    width = _first_float(ds.get("WindowWidth"), float("nan"))
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return center, width


def to_display(
    values: np.ndarray,
    ds: Any,
    *,
    preset: str | None,
    monochrome1: bool,
    raw_stored: np.ndarray | None = None,
) -> tuple[np.ndarray, WindowInfo]:
    """Window greyscale values for display: preset, else VOI LUT, else file window, else min-max.

    Args:
        values: modality-LUT output of one frame (HU for CT).
        ds: Dataset (or functional-group view) providing VOI attributes.
        preset: a name from :data:`CT_PRESETS`, or None to use the file's own VOI.
        monochrome1: invert so that the result reads as MONOCHROME2 (0 = black).
        raw_stored: stored values, needed only for a VOI LUT Sequence.

    Returns:
        ``(uint8 image, window)``.

    Raises:
        ValueError: for an unknown preset.
    """
    if preset is not None:
        p = get_preset(preset)
        out, info = apply_window(values, p.center, p.width), WindowInfo(p.center, p.width, p.name)
    elif "VOILUTSequence" in ds and raw_stored is not None and file_window(ds) is None:
        out, info = _voi_lut_sequence(values, ds)
    else:
        win = file_window(ds)
        if win is not None:
            out, info = apply_window(values, *win), WindowInfo(win[0], win[1], "file")
        else:
            out, info = minmax_to_uint8(values)
    if monochrome1:
        np.subtract(255, out, out=out)
    return out, info


def _voi_lut_sequence(values: np.ndarray, ds: Any) -> tuple[np.ndarray, WindowInfo]:
    """Apply the first VOI LUT of a VOI LUT Sequence, then scale its output range to 8 bits."""
    from pydicom.pixels import apply_voi

    item = ds.VOILUTSequence[0]
    try:
        bits = int(item.LUTDescriptor[2])
        lut_out = np.asarray(apply_voi(values, ds, index=0), dtype=np.float32)
    except (AttributeError, IndexError, ValueError, TypeError) as e:
        logger.debug("VOI LUT sequence unusable (%s); using min-max", type(e).__name__)
        return minmax_to_uint8(values)
    top = float(2**bits - 1) if 1 <= bits <= 16 else float(max(lut_out.max(), 1.0))
    out = np.rint(np.clip(lut_out * (255.0 / top), 0, 255)).astype(np.uint8)
    return out, WindowInfo(None, None, "voi-lut")
