"""Single DICOM files: read safely, decode one frame, and render an 8-bit :class:`ImageView`.

Steps, each wrapped so a failure names the file and the step (never a DICOM value):

1. :func:`read_dataset` checks size limits, parses with pydicom (with a forced parse only for
   files that then look like DICOM), and rejects files that are not DICOM.
2. :func:`decode_frame` checks Rows/Columns/frames against :class:`IngestLimits`, then decodes one
   frame with pydicom's pixel backends (pylibjpeg: JPEG, JPEG-LS, JPEG 2000; RLE; native).
3. :func:`render_frame` applies the modality LUT, VOI (preset, VOI LUT, file window or min-max),
   MONOCHROME1 inversion, or palette/RGB conversion, using per-frame functional groups for
   enhanced multi-frame objects.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.codec_sniff import check_compressed_frames
from data_prep.errors import (
    CorruptFileError,
    EmptyInputError,
    FrameRangeError,
    IngestError,
    LimitExceededError,
    MissingAttributeError,
    NotDicomError,
    PixelDataError,
    UnsupportedFormatError,
)
from data_prep.pseudonym import PseudonymKey, study_pseudonym
from data_prep.types import ImageView, IngestLimits, WindowInfo
from data_prep.windowing import modality_lut, to_display

logger = logging.getLogger(__name__)

BURNED_IN_PRONE_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM"})
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_FG_KEYWORDS = (
    "RescaleSlope",
    "RescaleIntercept",
    "WindowCenter",
    "WindowWidth",
    "VOILUTSequence",
    "ModalityLUTSequence",
)


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame and the facts needed to render it.

    Attributes:
        stored: decoded values as returned by the codec (``H x W`` or ``H x W x 3``).
        index: zero-based frame index.
        frames: number of frames in the object.
        photometric: PhotometricInterpretation of ``stored`` (YBR already converted to RGB).
    """

    stored: np.ndarray
    index: int
    frames: int
    photometric: str


def sanitize_warning(message: str) -> str:
    """Strip quoted values (which could be PHI) and file paths from a library warning."""
    text = _QUOTED.sub("'…'", message)
    text = re.sub(r"(/[^\s]+)+", "<path>", text)
    return " ".join(text.split())[:200]


@contextmanager
def captured_warnings(sink: list[str]) -> Iterator[None]:
    """Collect library warnings raised inside the block into ``sink`` (sanitised, de-duplicated)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = sanitize_warning(str(w.message))
        if text not in sink:
            sink.append(text)


# PhotometricInterpretation's defined terms (PS3.3 C.7.6.3.1.2); anything else is not shown.
_PHOTOMETRIC_TERMS = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "XYB"}
    | {"YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}
)


def _transfer_syntax_name(tsyntax: object) -> str:
    """The registered name of a transfer syntax; an unregistered UID is a header value, so not shown."""
    name = getattr(tsyntax, "name", None)
    if not name or name == str(tsyntax):
        return "an unregistered transfer syntax"
    return str(name)


def _short(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return sanitize_warning(first)[:160]


def read_dataset(source: Path | bytes, *, name: str, limits: IngestLimits) -> Any:
    """Parse a DICOM file (or its bytes) into a pydicom Dataset.

    Args:
        source: a path, or the file's bytes (e.g. a zip member).
        name: what to call the input in messages (a file name, never a DICOM value).
        limits: size limits.

    Returns:
        The pydicom ``FileDataset``.

    Raises:
        EmptyInputError: the file is empty.
        LimitExceededError: the file is larger than ``limits.max_file_bytes``.
        NotDicomError: the bytes are not DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, bytes):
        size, data = len(source), source
    else:
        try:
            size = source.stat().st_size
        except OSError as e:
            raise IngestError(f"cannot read {name}: {e.strerror or type(e).__name__}") from e
        data = None
    if size == 0:
        raise EmptyInputError(f"{name} is an empty file")
    if size > limits.max_file_bytes:
        raise LimitExceededError(f"{name} is {size} bytes, over the {limits.max_file_bytes}-byte file limit")
    if data is None:
        try:
            data = Path(source).read_bytes()  # type: ignore[arg-type]
        except OSError as e:
            raise IngestError(f"cannot read {name}: {e.strerror or type(e).__name__}") from e
    eof_notes: list[str] = []
    try:
        with _eof_warnings(eof_notes):
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except InvalidDicomError:
        ds = None  # no preamble/prefix: try a forced parse below, accepted only if it looks like DICOM
    except Exception as e:
        raise NotDicomError(f"{name} could not be parsed as DICOM ({_short(e)})") from e
    if ds is None:
        try:
            with _eof_warnings(eof_notes):
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
            plausible = any(k in ds for k in ("SOPClassUID", "PixelData", "Rows", "StudyInstanceUID"))
        except Exception as e:
            raise NotDicomError(f"{name} is not a DICOM file") from e
        if not plausible:
            raise NotDicomError(f"{name} is not a DICOM file")
    if eof_notes or _ends_early(ds, len(data)):
        raise CorruptFileError(
            f"{name} is truncated or corrupt: the file ends before the data its elements declare"
        )
    return ds


_EOF_MARKERS = ("End of file", "EOF", "ended unexpectedly")


@contextmanager
def _eof_warnings(sink: list[str]) -> Iterator[None]:
    """Record pydicom's end-of-file warnings in ``sink``; re-issue every other warning unchanged.

    pydicom stops quietly (with a warning, not an error) when a file ends inside an undefined-length
    element; callers' :func:`captured_warnings` still see the other warnings.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        if any(m in text for m in _EOF_MARKERS):
            sink.append(text)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _ends_early(ds: Any, size: int) -> bool:
    """Whether pydicom stopped reading before the end of the file's declared elements.

    Two signs, both on the top-level raw elements (read with no deferral, so every value is in
    memory): a value shorter than its declared length (the file ends inside it), or bytes left
    after the last complete element that do not make a whole element header (the file ends inside
    a header, which pydicom skips silently). Deflated data sets are checked on the first sign only,
    because their offsets are in the inflated stream.
    """
    last = None
    for elem in ds.elements():
        value = getattr(elem, "value", None)
        length = getattr(elem, "length", None)
        if not hasattr(elem, "value_tell") or length is None:
            continue
        if isinstance(value, bytes) and length != 0xFFFFFFFF and len(value) < length:
            return True
        last = elem
    meta = getattr(ds, "file_meta", None)
    deflated = str(getattr(meta, "TransferSyntaxUID", "") or "") == "1.2.840.10008.1.2.1.99"
    if last is None or deflated:
        return False
    if last.length != 0xFFFFFFFF:
        end = int(last.value_tell) + int(last.length)
    elif isinstance(last.value, bytes):
        end = int(last.value_tell) + len(last.value) + 8  # plus the sequence delimitation item
    else:
        return False
    return 0 < size - end < 8


def _int_attr(ds: Any, keyword: str, name: str, default: int | None = None) -> int:
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            if default is None:
                raise MissingAttributeError(f"{name} has no {keyword}, which is needed to decode the image")
            return default
        return int(value)
    except MissingAttributeError:
        raise
    except Exception as e:
        raise MissingAttributeError(f"{name} has an invalid {keyword}") from e


def frame_count(ds: Any, name: str) -> int:
    """NumberOfFrames (1 when absent).

    Raises:
        MissingAttributeError: if the value is not a positive integer.
    """
    n = _int_attr(ds, "NumberOfFrames", name, default=1)
    if n < 1:
        raise MissingAttributeError(f"{name} has an invalid NumberOfFrames")
    return n


def check_limits(ds: Any, name: str, limits: IngestLimits) -> int:
    """Check Rows/Columns/frames/bytes against limits before any decoding.

    Returns:
        The number of frames.

    Raises:
        MissingAttributeError: a needed attribute is missing or invalid.
        LimitExceededError: a limit is exceeded.
    """
    rows = _int_attr(ds, "Rows", name)
    cols = _int_attr(ds, "Columns", name)
    spp = _int_attr(ds, "SamplesPerPixel", name, default=1)
    bits = _int_attr(ds, "BitsAllocated", name)
    frames = frame_count(ds, name)
    if rows < 1 or cols < 1 or spp < 1 or bits < 1:
        raise MissingAttributeError(f"{name} has non-positive image dimensions")
    if rows * cols > limits.max_pixels:
        raise LimitExceededError(f"{name} is {cols}x{rows} pixels, over the {limits.max_pixels}-pixel limit")
    if frames > limits.max_frames:
        raise LimitExceededError(f"{name} has {frames} frames, over the {limits.max_frames}-frame limit")
    total = rows * cols * spp * max(1, bits // 8) * frames
    if total > limits.max_uncompressed_bytes:
        raise LimitExceededError(
            f"{name} would decode to {total} bytes, over the {limits.max_uncompressed_bytes}-byte limit"
        )
    return frames


def decode_frame(ds: Any, *, name: str, limits: IngestLimits, frame: int | None = None) -> DecodedFrame:
    """Decode one frame of a DICOM image.

    Args:
        ds: the Dataset from :func:`read_dataset`.
        name: the input's name for messages.
        limits: size limits, checked before decoding.
        frame: zero-based frame index; None picks the middle frame of a multi-frame object.

    Returns:
        The decoded frame.

    Raises:
        MissingAttributeError: no pixel data, no transfer syntax, or missing image attributes.
        LimitExceededError: over a limit.
        UnsupportedFormatError: no installed decoder handles the transfer syntax.
        PixelDataError: truncated pixel data, dimensions that do not match it, or a failed decode.
        ValueError: ``frame`` is out of range.
    """
    from pydicom.pixels import pixel_array

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise MissingAttributeError(f"{name} has no pixel data")  # truncation is caught by read_dataset
    meta = getattr(ds, "file_meta", None)
    tsyntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if tsyntax is None:
        raise MissingAttributeError(f"{name} has no transfer syntax UID, so its pixel data cannot be decoded")
    frames = check_limits(ds, name, limits)
    check_compressed_frames(
        ds,
        name=name,
        rows=_int_attr(ds, "Rows", name),
        columns=_int_attr(ds, "Columns", name),
        max_pixels=limits.max_pixels,
    )
    index = frames // 2 if frame is None else frame
    if not 0 <= index < frames:
        raise FrameRangeError(f"frame {index} is out of range for {name}, which has {frames} frame(s)")
    ts_name = _transfer_syntax_name(tsyntax)
    try:
        arr = pixel_array(ds, index=index if frames > 1 else None)
    except NotImplementedError as e:
        raise UnsupportedFormatError(f"{name} uses {ts_name}, which no installed decoder supports") from e
    except Exception as e:
        text = str(e)
        if "no (0002,0010)" in text or ("Transfer Syntax UID" in text and "missing" in text.lower()):
            raise MissingAttributeError(f"{name} has no transfer syntax UID") from e
        if "less than expected" in text or "truncated" in text.lower():
            raise PixelDataError(
                f"{name} has less pixel data than Rows x Columns x frames implies (truncated or wrong size)"
            ) from e
        if "no pixel data decoders" in text.lower() or "plugins are missing" in text.lower():
            raise UnsupportedFormatError(f"{name} uses {ts_name}, which no installed decoder supports") from e
        if isinstance(e, AttributeError | KeyError):
            raise MissingAttributeError(f"{name} lacks an attribute needed to decode it ({_short(e)})") from e
        if "Unable to decode" in text:
            raise PixelDataError(
                f"decoding the pixel data of {name} ({ts_name}) failed: the data is corrupt or invalid"
            ) from e
        raise PixelDataError(f"decoding the pixel data of {name} ({ts_name}) failed: {_short(e)}") from e
    if arr.ndim == 3 and frames == 1 and arr.shape[-1] not in (3, 4):
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric and photometric not in _PHOTOMETRIC_TERMS:
        photometric = "UNRECOGNISED"  # a header value outside the standard's terms is never echoed
    if photometric.startswith("YBR"):
        photometric = "RGB"  # pydicom's decoders convert YBR_FULL(_422) to RGB; J2K YBR_ICT/RCT decode to RGB
    return DecodedFrame(stored=arr, index=index, frames=frames, photometric=photometric)


def frame_attributes(ds: Any, index: int) -> Any:
    """Merge top-level, shared and per-frame functional-group attributes for one frame.

    Returns:
        A Dataset holding rescale and VOI attributes that apply to frame ``index``.
    """
    from pydicom.dataset import Dataset

    out = Dataset()
    for kw in _FG_KEYWORDS:
        if kw in ds:
            setattr(out, kw, ds.get(kw))
    groups = []
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and index < len(per_frame):
        groups.append(per_frame[index])
    for group in groups:
        for seq_kw in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            seq = group.get(seq_kw)
            if seq:
                for kw in _FG_KEYWORDS:
                    if kw in seq[0]:
                        setattr(out, kw, seq[0].get(kw))
    return out


def _to_uint8_colour(arr: np.ndarray, bits: int) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    shift = max(0, bits - 8)
    return np.clip(arr.astype(np.int64) >> shift, 0, 255).astype(np.uint8)


def render_frame(
    ds: Any, decoded: DecodedFrame, *, name: str, preset: str | None = None
) -> tuple[np.ndarray, WindowInfo | None, str, list[str]]:
    """Turn decoded values into an 8-bit image.

    Returns:
        ``(pixels, window, description of the steps, warnings)``; pixels HxW or HxWx3 uint8.

    Raises:
        PixelDataError: palette or colour conversion failed.
        UnsupportedFormatError: an unsupported photometric interpretation.
    """
    arr = decoded.stored
    photometric = decoded.photometric
    notes: list[str] = []
    steps: list[str] = []
    bits = int(ds.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = np.asarray(apply_color_lut(arr, ds))
        except Exception as e:
            raise PixelDataError(f"applying the palette of {name} failed: {_short(e)}") from e
        lut_bits = 16 if rgb.dtype != np.uint8 else 8
        return _to_uint8_colour(rgb, lut_bits), None, "palette colour LUT applied", notes
    if arr.ndim == 3:
        if arr.shape[-1] == 4:
            arr = arr[..., :3]
        if arr.shape[-1] != 3:
            raise UnsupportedFormatError(f"{name} has {arr.shape[-1]} samples per pixel")
        return _to_uint8_colour(arr, bits), None, f"{photometric or 'colour'} shown as RGB", notes
    if photometric not in ("MONOCHROME1", "MONOCHROME2", ""):
        raise UnsupportedFormatError(f"{name} has an unsupported photometric interpretation ({photometric})")
    attrs = frame_attributes(ds, decoded.index)
    values, rescaled = modality_lut(arr, attrs)
    if rescaled:
        steps.append("modality LUT applied")
    modality = str(ds.get("Modality", "") or "")
    if preset is not None and modality != "CT":
        notes.append(f"window preset {preset} is meant for CT but this image is {modality or 'unknown'}")
    mono1 = photometric == "MONOCHROME1"
    try:
        pixels, window = to_display(values, attrs, preset=preset, monochrome1=mono1, raw_stored=arr)
    except ValueError:
        raise
    except Exception as e:
        raise PixelDataError(f"windowing {name} failed: {_short(e)}") from e
    if window.preset == "minmax":
        steps.append("full range stretched (no window in file)")
    elif window.center is not None:
        steps.append(f"window C{window.center:g}/W{window.width:g} ({window.preset})")
    else:
        steps.append(f"window from {window.preset}")
    if mono1:
        steps.append("MONOCHROME1 inverted")
    return pixels, window, ", ".join(steps), notes


def dataset_warnings(ds: Any) -> list[str]:
    """Warnings any reader of this image should see (burned-in text)."""
    out: list[str] = []
    if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
        out.append("BurnedInAnnotation is YES: the pixels may show identifying text")
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in BURNED_IN_PRONE_MODALITIES:
        out.append(f"{modality} images often carry burned-in text; check the pixels before sharing")
    return out


def study_id_of(ds: Any, key: PseudonymKey | None) -> str | None:
    """Pseudonymous study id from StudyInstanceUID.

    A file without a StudyInstanceUID gets one derived from its SOPInstanceUID (or the file meta's
    MediaStorageSOPInstanceUID), hashed under a separate prefix so that it cannot equal a real
    study's id: such a file is a study of its own. None without a key, or with neither UID.
    """
    if key is None:
        return None
    uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    if uid:
        return study_pseudonym(key, uid)
    meta = getattr(ds, "file_meta", None)
    instance = (
        str(ds.get("SOPInstanceUID", "") or "").strip()
        or str((meta.get("MediaStorageSOPInstanceUID", "") if meta is not None else "") or "").strip()
    )
    return study_pseudonym(key, f"instance:{instance}") if instance else None


def dicom_view(
    ds: Any,
    *,
    name: str,
    limits: IngestLimits,
    key: PseudonymKey | None,
    preset: str | None = None,
    frame: int | None = None,
) -> tuple[ImageView, DecodedFrame]:
    """Decode and render one frame of a Dataset into an :class:`ImageView`.

    Args:
        ds: the Dataset.
        name: the input's name for messages.
        limits: size limits.
        key: pseudonymisation key for ``study_id`` (None: no study id).
        preset: CT window preset name, or None for the file's own window.
        frame: zero-based frame, None for the middle frame.

    Returns:
        The view and the decoded frame it came from.

    Raises:
        IngestError: any decoding failure (see :func:`decode_frame`).
        ValueError: bad ``preset`` or ``frame``.
    """
    notes: list[str] = []
    if frame not in (None, 0) and frame_count(ds, name) == 1:
        notes.append(f"frame {frame} was requested but this image has one frame")
        frame = 0
    with captured_warnings(notes):
        decoded = decode_frame(ds, name=name, limits=limits, frame=frame)
        pixels, window, steps, render_notes = render_frame(ds, decoded, name=name, preset=preset)
    notes = [*render_notes, *dataset_warnings(ds), *notes]
    modality = str(ds.get("Modality", "") or "") or None
    body_part = str(ds.get("BodyPartExamined", "") or "") or None
    desc = (
        f"DICOM {modality or '?'} {decoded.photometric or '?'}, frame {decoded.index + 1} of {decoded.frames}"
    )
    if steps:
        desc += f", {steps}"
    view = ImageView(
        pixels=np.ascontiguousarray(pixels),
        modality=modality,
        body_part=body_part,
        kind="dicom",
        description=desc,
        window=window,
        study_id=study_id_of(ds, key),
        warnings=tuple(notes),
    )
    return view, decoded
