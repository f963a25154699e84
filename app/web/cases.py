"""An upload → the views ``data_prep`` reads → the image(s) the model receives → the saved case PNG.

Reading is ``data_prep.views.load_views``'s job (DICOM files, series folders and zips, slides,
PNG/JPEG); this module only puts the upload where that reader cannot see its name, caps its size,
and turns the views into exactly what the model will receive (``medvlm.processing.build_prompt``:
one image per view, or one labelled montage for a model that takes a single image).

The upload is copied to a private temporary folder as ``upload<.suffix>`` before it is read, so a
file name that carries a patient's name or an accession number never reaches a reader's error
message, a log line or the database (``data_prep`` names the files inside a zip by position, suffix
and size only, so its sentences are shown as they are). The DICOM header never leaves
``data_prep``: a :class:`Case` holds 8-bit pixels, their descriptions, warnings and the
pseudonymous study id only.

The case image saved for the retraining loop is the PNG of what the model saw (the montage when
there are several images), named by the SHA-256 of its bytes: ``<cases>/<sha256>.png``, the
``image_sha256`` the store records and ``medvlm db export-preferences`` resolves and checks.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from app.store import case_image_path, image_content_id
from app.web.errors import AppError

if TYPE_CHECKING:
    from PIL import Image

    from data_prep.pseudonym import PseudonymKey
    from data_prep.types import ImageView, IngestLimits

logger = logging.getLogger(__name__)

MIB: Final = 1024**2
SAFE_SUFFIX: Final = re.compile(r"\.[A-Za-z0-9]{1,8}")
PLACEHOLDER_QUESTION: Final = "(question)"  # build_prompt needs one; only the images are used


@dataclass(frozen=True)
class UploadLimits:
    """Caps on one upload (the web app's, tighter than the command line's).

    Attributes:
        max_upload_bytes: the largest file accepted (Gradio refuses larger ones before they
            arrive; this is checked again here).
        max_archive_bytes: the most a zip may expand to.
        max_compression_ratio: the largest uncompressed/compressed ratio of one zip member
            (a zip bomb is refused member by member, and as a whole above ``max_archive_bytes``).
        max_tiles: tissue tiles taken from a slide.
    """

    max_upload_bytes: int = 512 * MIB
    max_archive_bytes: int = 2048 * MIB
    max_compression_ratio: float = 200.0
    max_tiles: int = 8

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1 or self.max_archive_bytes < 1 or self.max_tiles < 1:
            raise ValueError("upload limits must be positive")
        if self.max_compression_ratio <= 1:
            raise ValueError("max_compression_ratio must be > 1")

    def ingest_limits(self) -> IngestLimits:
        """The ``data_prep`` limits that enforce these caps while reading."""
        from data_prep.types import IngestLimits

        return IngestLimits(
            max_file_bytes=max(self.max_upload_bytes, self.max_archive_bytes),
            max_archive_bytes=self.max_archive_bytes,
            max_compression_ratio=self.max_compression_ratio,
        )


@dataclass(frozen=True)
class Case:
    """One uploaded study as the app keeps it in the browser session (no header, no file name).

    Attributes:
        views: the views ``data_prep`` made (pixels, modality, body part, description, warnings).
        study_pseudonym: ``S-`` + 20 hex: the DICOM study's keyed id, or for a file without one
            (PNG, JPEG, slide) a keyed id of the upload's bytes.
        warnings: the views' warnings, each once, in order.
    """

    views: tuple[ImageView, ...]
    study_pseudonym: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ModelInput:
    """What the model receives for a case: its images and one description per image.

    Attributes:
        images: RGB images exactly as they go to the model (a montage for a single-image model).
        descriptions: the view descriptions (as ``Answer.views`` gives them).
    """

    images: tuple[Image.Image, ...]
    descriptions: tuple[str, ...]


def _private_copy(upload: Path, folder: Path) -> Path:
    """Copy the upload into ``folder`` as ``upload<.suffix>`` (the suffix picks the reader)."""
    suffix = upload.suffix if SAFE_SUFFIX.fullmatch(upload.suffix) else ""
    target = folder / f"upload{suffix.lower()}"
    shutil.copyfile(upload, target)
    return target


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def load_case(upload: Path, *, key: PseudonymKey, limits: UploadLimits | None = None) -> Case:
    """Read an upload with ``data_prep.views.load_views`` into a :class:`Case`.

    Args:
        upload: the uploaded file (DICOM, zip of a series or study, PNG/JPEG, slide).
        key: the site's pseudonymisation key (for the study id).
        limits: upload caps (defaults when None).

    Returns:
        The case.

    Raises:
        AppError: one sentence naming the problem (empty, too large, unreadable, corrupt, an unsafe
            or oversized zip, several studies in one zip), never the file's name.
    """
    from data_prep.errors import IngestError, one_sentence
    from data_prep.pseudonym import study_pseudonym
    from data_prep.views import load_views

    limits = limits or UploadLimits()
    try:
        size = upload.stat().st_size
    except OSError as e:
        raise AppError("The upload could not be found; upload the file again.") from e
    if size == 0:
        raise AppError("The uploaded file is empty.")
    if size > limits.max_upload_bytes:
        raise AppError(
            f"The uploaded file is larger than the {limits.max_upload_bytes // MIB} MB upload limit."
        )
    try:
        with tempfile.TemporaryDirectory(prefix="medvlm-upload-") as tmp:
            copy = _private_copy(upload, Path(tmp))
            views = load_views(copy, max_tiles=limits.max_tiles, limits=limits.ingest_limits(), key=key)
            content = _file_digest(copy)
    except IngestError as e:
        # data_prep names a zip member by position, suffix and size only, never by its name, and
        # the upload itself by its neutral copy's name ("upload.zip"), so its sentence is shown as is.
        raise AppError(f"The file could not be read: {one_sentence(e)}") from e
    except (OSError, ValueError, MemoryError) as e:
        logger.info("reading an upload failed (%s)", type(e).__name__)
        raise AppError(f"The file could not be read ({type(e).__name__}).") from e
    if not views:
        raise AppError("No image could be read from the file.")
    study = next((v.study_id for v in views if v.study_id), None) or study_pseudonym(key, f"upload:{content}")
    warnings = tuple(dict.fromkeys(w for v in views for w in v.warnings))
    return Case(views=tuple(views), study_pseudonym=study, warnings=warnings)


def model_input(case: Case, *, multi_image: bool) -> ModelInput:
    """The images and descriptions the model receives for this case (``build_prompt``'s own).

    Args:
        case: the case.
        multi_image: whether the model takes several images (else the views become one montage).

    Returns:
        The model's input images and the view descriptions.
    """
    from app.commands.model import views_to_request
    from medvlm.processing import build_prompt

    prompt = build_prompt(views_to_request(list(case.views), PLACEHOLDER_QUESTION, []), multi_image)
    return ModelInput(images=tuple(prompt.images), descriptions=tuple(prompt.views))


def case_png(images: tuple[Image.Image, ...] | list[Image.Image]) -> bytes:
    """The PNG bytes of what the model saw: the image itself, or a montage of several.

    Args:
        images: the model's input images (RGB).

    Returns:
        PNG bytes without metadata chunks (the same pixels always give the same bytes).

    Raises:
        ValueError: for no image.
    """
    from medvlm.processing import montage

    if not images:
        raise ValueError("a case image needs at least one image")
    picture = images[0] if len(images) == 1 else montage(list(images))
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def save_case_image(cases_dir: Path, png: bytes) -> str:
    """Save the case PNG as ``<cases_dir>/<sha256>.png`` (kept when already there) and return the id.

    Args:
        cases_dir: ``$MEDVLM_HOME/cases`` (resolved by the entry point).
        png: the bytes from :func:`case_png`.

    Returns:
        The content id recorded as ``image_sha256``.

    Raises:
        AppError: when the folder or file cannot be written.
    """
    from data_prep.atomic import write_atomic

    sha = image_content_id(png)
    path = case_image_path(cases_dir, sha)
    try:
        if path.is_file() and image_content_id(path.read_bytes()) == sha:
            return sha
        cases_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, png)
    except OSError as e:
        raise AppError(
            f"The case image could not be saved ({type(e).__name__}); nothing was recorded."
        ) from e
    return sha
