"""Read image dimensions from compressed frame headers before decoding (decompression-bomb guard).

A DICOM file can say Rows=16, Columns=16 while its JPEG or JPEG 2000 codestream says
60,000 x 60,000; decoders allocate what the codestream says. This module parses only the
headers of the first fragments (JPEG SOF markers, JPEG 2000 SIZ marker, JP2 ``ihdr`` box) so
that such a frame is refused before any decoder runs. RLE and JPEG-LS carry no separate size
that could exceed Rows/Columns this way (JPEG-LS is checked through its SOF55 marker).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from data_prep.errors import LimitExceededError, PixelDataError

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
_MAX_FRAGMENTS = 8


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(rows, columns)`` from a JPEG / JPEG-LS start-of-frame marker, or None if not found."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF_MARKERS and i + 9 <= n:
            rows, cols = struct.unpack(">HH", data[i + 5 : i + 9])
            return int(rows), int(cols)
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        i += 2 + length
    return None


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """``(rows, columns)`` from a JPEG 2000 codestream SIZ marker or a JP2 ``ihdr`` box."""
    if data.startswith(b"\xff\x4f\xff\x51") and len(data) >= 24:
        xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[8:24])
        return int(ysiz - yosiz), int(xsiz - xosiz)
    at = data.find(b"ihdr", 0, 4096) if data.startswith(b"\x00\x00\x00\x0cjP") else -1
    if at >= 0 and len(data) >= at + 12:
        height, width = struct.unpack(">II", data[at + 4 : at + 12])
        return int(height), int(width)
    return None


def _fragments(pixel_data: bytes) -> Iterator[bytes]:
    from pydicom.encaps import generate_fragments

    for i, fragment in enumerate(generate_fragments(pixel_data)):
        if i >= _MAX_FRAGMENTS:
            return
        yield bytes(fragment[:65536])


def check_compressed_frames(ds: Any, *, name: str, rows: int, columns: int, max_pixels: int) -> None:
    """Refuse compressed frames whose codestream is larger than Rows/Columns or the pixel cap.

    Args:
        ds: the Dataset (only encapsulated pixel data is inspected).
        name: the input's name for messages.
        rows: the Dataset's Rows.
        columns: the Dataset's Columns.
        max_pixels: the pixel cap per frame.

    Raises:
        LimitExceededError: a codestream claims more pixels than the cap.
        PixelDataError: a codestream claims a larger size than Rows x Columns.
    """
    meta = getattr(ds, "file_meta", None)
    tsyntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    elem = ds.get("PixelData") if "PixelData" in ds else None
    if elem is None or tsyntax is None or not getattr(tsyntax, "is_compressed", False):
        return
    try:
        fragments = list(_fragments(elem))
    except Exception as e:  # a broken item structure is the decoder's to report
        if isinstance(e, MemoryError):
            raise
        return
    for fragment in fragments:
        size = jpeg_size(fragment) or j2k_size(fragment)
        if size is None:
            continue
        r, c = size
        if r * c > max_pixels:
            raise LimitExceededError(
                f"{name} holds a compressed frame of {c}x{r} pixels, over the {max_pixels}-pixel limit"
            )
        if r > rows or c > columns:
            raise PixelDataError(
                f"{name} holds a compressed frame of {c}x{r} pixels but declares {columns}x{rows}"
            )
