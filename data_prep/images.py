"""Plain images (PNG, JPEG, BMP, non-pyramidal TIFF) as :class:`ImageView`, with a pixel cap."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from data_prep.errors import EmptyInputError, LimitExceededError, UnsupportedFormatError
from data_prep.types import ImageView, IngestLimits

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


def image_view(source: Path | bytes, *, name: str, limits: IngestLimits) -> ImageView:
    """Read a plain image as grey (HxW) or RGB (HxWx3) uint8.

    Args:
        source: a path or the file's bytes.
        name: display name for messages.
        limits: pixel and byte caps (checked from the header, before decoding).

    Returns:
        The view (``kind="image"``, no modality).

    Raises:
        EmptyInputError: empty file.
        LimitExceededError: over the byte or pixel cap.
        UnsupportedFormatError: Pillow cannot read it.
    """
    from PIL import Image, UnidentifiedImageError

    data = source if isinstance(source, bytes) else source.read_bytes()
    if not data:
        raise EmptyInputError(f"{name} is an empty file")
    if len(data) > limits.max_file_bytes:
        raise LimitExceededError(f"{name} is over the {limits.max_file_bytes}-byte file limit")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > limits.max_pixels:
                raise LimitExceededError(
                    f"{name} is {w}x{h} pixels, over the {limits.max_pixels}-pixel limit"
                )
            mode = im.mode
            im.draft("RGB", im.size)
            if mode in ("L", "I;16", "I", "F"):
                arr = np.asarray(im)
                if arr.dtype != np.uint8:
                    lo, hi = float(arr.min()), float(arr.max())
                    arr = ((arr - lo) * (255.0 / max(hi - lo, 1.0))).round().astype(np.uint8)
                desc = f"{im.format} image {w}x{h}, greyscale ({mode})"
            else:
                rgba = im.convert("RGBA")
                a = np.asarray(rgba)
                alpha = a[..., 3:4].astype(np.uint16)
                arr = ((a[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(
                    np.uint8
                )
                desc = f"{im.format} image {w}x{h}, {mode} shown as RGB (alpha flattened onto white)"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnsupportedFormatError(f"{name} is not an image format that can be read") from e
    except Image.DecompressionBombError as e:
        raise LimitExceededError(f"{name} is too many pixels (decompression bomb guard)") from e
    return ImageView(
        pixels=np.ascontiguousarray(arr), modality=None, body_part=None, kind="image", description=desc
    )
