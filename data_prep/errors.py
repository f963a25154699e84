"""The typed error hierarchy of ``data_prep``.

Every failure while reading an input is an :class:`IngestError` subclass that names the step and
the input (by file name only, never by a DICOM value). Messages are written so that the first
sentence can be shown to a person as-is; :func:`one_sentence` makes that sentence at the
CLI/report boundary. De-identification failures are :class:`DeidError` and always mean the
output was not written (fail closed).
"""

from __future__ import annotations

import re


class IngestError(Exception):
    """Base class: an input could not be turned into images or metadata."""


class NotDicomError(IngestError):
    """The file is not DICOM (no preamble/prefix and no parseable data set)."""


class EmptyInputError(IngestError):
    """The file or archive holds no data."""


class MissingAttributeError(IngestError):
    """A DICOM attribute needed to decode the image is missing or invalid."""


class CorruptFileError(IngestError):
    """The file ends inside a data element or its element structure is broken (truncated or corrupt)."""


class PixelDataError(IngestError):
    """Pixel data is truncated, inconsistent with Rows/Columns, or fails to decompress."""


class UnsupportedFormatError(IngestError):
    """The transfer syntax, codec or file type is not supported."""


class LimitExceededError(IngestError):
    """An input is over a configured limit (bytes, pixels, frames, archive members)."""


class UnsafeArchiveError(IngestError):
    """An archive member has an absolute or ``..`` path, is a link, or is a compression bomb."""


class SeriesError(IngestError):
    """Slices cannot be assembled into a volume."""


class SlideError(IngestError):
    """A whole-slide image cannot be opened or read."""


class FrameRangeError(IngestError, ValueError):
    """The requested frame does not exist (also a ValueError: it is a bad argument)."""


class DeidError(IngestError):
    """A data set could not be de-identified; nothing was written for it."""


class PseudonymKeyError(Exception):
    """The pseudonymisation key is missing, too short, or cannot be stored."""


_TRACE_LIKE = re.compile(r"\s+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_ELIDED = "'…'"


def one_sentence(error: BaseException) -> str:
    """Turn an error into one plain sentence for people (no traceback, no class path).

    Args:
        error: any exception; :class:`IngestError` messages are used as written.

    Returns:
        A single sentence ending with a full stop, at most 300 characters.
    """
    text = str(error).strip() or type(error).__name__
    text = _TRACE_LIKE.sub(" ", text)
    if not isinstance(error, IngestError):
        # library messages can quote values read from a file: keep their shape, not the values
        text = f"unexpected {type(error).__name__}: {_QUOTED.sub(_ELIDED, text)}"
    if len(text) > 300:
        text = text[:297].rstrip() + "..."
    if not text.endswith((".", "!", "?")):
        text += "."
    return text
