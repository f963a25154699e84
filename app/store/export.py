"""Approved corrections as DPO preference pairs: the JSONL that ``training.data.load_preferences`` reads.

One line per approved correction: ``{"image", "question", "chosen", "rejected"}`` with ``chosen`` the
corrected answer, ``rejected`` the model's own text (never an abstention message or a refusal:
:func:`app.store.records.model_text`) and ``image`` an absolute path. The store holds no
image paths: an interaction keeps only ``image_sha256``, the SHA-256 of the de-identified image bytes
the app saved as ``<cases>/<sha256>.png`` (:func:`case_image_path`), and an export resolves that id
to a file under the images folder it is given, checking the file's bytes against the id.

Which corrections an export takes is decided from the audit log: each ``export`` event lists the
correction ids it wrote (:func:`exported_correction_ids`), and each ``correction.review`` event
carries the seq at which a correction was approved (:func:`approval_seqs`, used by ``since``). The
writing itself is :meth:`app.store.repository.Store.export_preferences` (one transaction).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.errors import ExportError, NotFoundError
from app.store.models import AuditEvent
from data_prep import atomic

EXPORT_ACTION: Final = "export"
"""The audit action of an export (payload: count, sha256, correction ids; never text)."""
EXPORT_KIND: Final = "preferences"
CASE_IMAGE_SUFFIX: Final = ".png"


def image_content_id(data: bytes) -> str:
    """The content id of de-identified image bytes, as stored in ``interactions.image_sha256``.

    Args:
        data: the PNG bytes the app saves under the case folder.

    Returns:
        64 lowercase hex digits.
    """
    return hashlib.sha256(data).hexdigest()


def case_image_path(images: Path, image_sha256: str) -> Path:
    """Where the image with this content id lies under a case folder: ``<images>/<sha256>.png``.

    Args:
        images: the case folder (``$MEDVLM_HOME/cases`` by default at the command line).
        image_sha256: the content id.

    Returns:
        The path (absolute when ``images`` is).
    """
    return images / f"{image_sha256}{CASE_IMAGE_SUFFIX}"


def resolve_image(images: Path, interaction_id: int, image_sha256: str) -> Path:
    """The absolute path of an interaction's case image, after checking its bytes against the id.

    Args:
        images: the case folder.
        interaction_id: the interaction (named in errors).
        image_sha256: its content id.

    Returns:
        The absolute path.

    Raises:
        NotFoundError: when the file is missing or unreadable.
        ExportError: when its bytes do not hash to the id.
    """
    path = case_image_path(images.expanduser().resolve(), image_sha256)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise NotFoundError(
            f"the image of interaction {interaction_id} ({path.name}) is missing from {path.parent}; "
            "nothing was exported"
        ) from e
    if image_content_id(data) != image_sha256:
        raise ExportError(
            f"the image file of interaction {interaction_id} ({path.name}) does not match its content id; "
            "nothing was exported"
        )
    return path


def preference_line(image: Path, question: str, chosen: str, rejected: str) -> str:
    """One JSONL line of a preference pair, newline-terminated.

    Args:
        image: the image's absolute path.
        question: the question asked.
        chosen: the corrected answer.
        rejected: the model's answer.

    Returns:
        The line.
    """
    record = {"image": str(image), "question": question, "chosen": chosen, "rejected": rejected}
    return json.dumps(record, ensure_ascii=False) + "\n"


def exported_correction_ids(session: Session) -> tuple[set[int], int]:
    """Correction ids written by earlier exports, read from the audit log.

    Args:
        session: any session.

    Returns:
        The ids and the number of earlier exports.
    """
    ids: set[int] = set()
    exports = 0
    query = select(AuditEvent.payload).where(AuditEvent.action == EXPORT_ACTION).order_by(AuditEvent.seq)
    for payload in session.execute(query).scalars():
        exports += 1
        ids.update(int(i) for i in json.loads(payload).get("correction_ids", []))
    return ids, exports


def approval_seqs(session: Session) -> dict[int, int]:
    """Correction id → seq of the audit event that approved it.

    Args:
        session: any session.

    Returns:
        The mapping (approved corrections only).
    """
    query = select(AuditEvent.seq, AuditEvent.object_id, AuditEvent.payload).where(
        AuditEvent.action == "correction.review", AuditEvent.object_kind == "correction"
    )
    out: dict[int, int] = {}
    for seq, object_id, payload in session.execute(query):
        if json.loads(payload).get("decision") == "approved":
            out[int(object_id)] = int(seq)
    return out


def write_atomic(out: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``out``, then rename it onto ``out``.

    Args:
        out: the destination.
        data: the bytes.

    Raises:
        ExportError: when the folder cannot be written.
    """
    try:
        atomic.write_atomic(out, data)
    except OSError as e:
        raise ExportError(f"cannot write {out} ({type(e).__name__}); nothing was exported") from e


@dataclass(frozen=True)
class ExportResult:
    """What :meth:`~app.store.repository.Store.export_preferences` wrote.

    Attributes:
        out: the JSONL file.
        count: lines written.
        sha256: SHA-256 of the file's bytes.
        correction_ids: the corrections written, in order.
        seq: the audit event recording the export.
        already_exported: approved corrections left out because an earlier export wrote them.
        skipped_unchanged: corrections left out because the corrected answer equals the model's.
        skipped_no_image: corrections left out because their interaction has no image id.
        skipped_no_model_text: corrections left out because their interaction has no model text to
            reject (a refusal, or an abstention whose text was empty or not kept).
    """

    out: Path
    count: int
    sha256: str
    correction_ids: tuple[int, ...]
    seq: int
    already_exported: int = 0
    skipped_unchanged: tuple[int, ...] = ()
    skipped_no_image: tuple[int, ...] = ()
    skipped_no_model_text: tuple[int, ...] = ()
