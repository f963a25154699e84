"""Plain, frozen records the store takes and returns (never ORM objects, which are tied to a session).

``InteractionCreate`` is what a caller gives to record one answer; the ``*Record`` types are what
the store hands back, already scrubbed and validated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from app.store.errors import ValidationError
from app.store.ids import check_study_pseudonym

if TYPE_CHECKING:
    from medvlm.schema import Answer

VERSION: Final = re.compile(r"[A-Za-z0-9_.:@/+-]{1,128}")
EVIDENCE_ID: Final = re.compile(r"[A-Za-z0-9_.:@/#+=-]{1,128}")
IMAGE_SHA256: Final = re.compile(r"[0-9a-f]{64}")
MAX_EVIDENCE: Final = 64


def aware(moment: datetime) -> datetime:
    """A datetime in UTC; SQLite hands back naive datetimes for the UTC values it was given."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class InteractionCreate:
    """One answered question, as the app hands it to :meth:`app.store.repository.Store.record_interaction`.

    Attributes:
        study_pseudonym: ``data_prep.pseudonym.study_pseudonym(key, study_uid)``, never the UID.
        question: the clinician's question (scrubbed before it is stored).
        answer: the answer shown (scrubbed before it is stored).
        model_answer: the model's own text when the answer shown is not it (``Answer.raw_text`` when
            the model abstained, or when an ungrounded answer was shown behind a warning), scrubbed
            before it is stored; None when the answer shown is the model's text, or when there is no
            model text (a refusal, an empty generation). It is what an exported preference pair
            gives as "rejected": an abstention message is not the model's answer.
        model_version: ``medvlm.ModelInfo.model_version``.
        adapter_version: the adapter's version, None without one.
        grounded: ``Answer.grounded`` (None when not checked).
        confidence: ``Answer.confidence`` in [0, 1], or None.
        abstained: ``Answer.abstained``.
        refused: ``Answer.refused``.
        evidence: ids of the knowledge facts the answer cites.
        latency_ms: wall time of the request.
        image_sha256: content id of the de-identified case image (``app.store.export.image_content_id``
            of the bytes saved as ``cases/<sha256>.png``), None when no image was kept.

    Raises:
        ValidationError: on construction, for a study id that is not a pseudonym, a malformed
            version or evidence id, a confidence outside [0, 1], a negative latency or an image id
            that is not 64 lowercase hex digits.
    """

    study_pseudonym: str
    question: str
    answer: str
    model_version: str
    adapter_version: str | None = None
    grounded: bool | None = None
    confidence: float | None = None
    abstained: bool = False
    refused: bool = False
    evidence: tuple[str, ...] = field(default_factory=tuple)
    latency_ms: float = 0.0
    image_sha256: str | None = None
    model_answer: str | None = None

    def __post_init__(self) -> None:
        check_study_pseudonym(self.study_pseudonym)
        if not VERSION.fullmatch(self.model_version):
            raise ValidationError("the model version is not a short version string")
        if self.adapter_version is not None and not VERSION.fullmatch(self.adapter_version):
            raise ValidationError("the adapter version is not a short version string")
        if len(self.evidence) > MAX_EVIDENCE:
            raise ValidationError(f"more than {MAX_EVIDENCE} evidence ids")
        if not all(isinstance(e, str) and EVIDENCE_ID.fullmatch(e) for e in self.evidence):
            raise ValidationError("an evidence id is not a short identifier")
        if self.confidence is not None and not (
            math.isfinite(self.confidence) and 0.0 <= self.confidence <= 1.0
        ):
            raise ValidationError("the confidence must be in [0, 1]")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValidationError("the latency must be a non-negative number of milliseconds")
        if self.image_sha256 is not None and not IMAGE_SHA256.fullmatch(self.image_sha256):
            raise ValidationError("the image id is not a SHA-256 (64 lowercase hex digits)")

    @classmethod
    def from_answer(
        cls, answer: Answer, *, study_pseudonym: str, question: str, image_sha256: str | None = None
    ) -> InteractionCreate:
        """Build the record of a ``medvlm.Answer``.

        Args:
            answer: what ``medvlm`` returned.
            study_pseudonym: the study's pseudonym.
            question: the question asked.
            image_sha256: content id of the de-identified case image saved for retraining, if any.

        Returns:
            The record to store; ``model_answer`` is ``answer.raw_text`` when the text shown differs
            from it (abstained, or ungrounded behind a warning) and the model produced any text.

        Raises:
            ValidationError: as for the constructor.
        """
        own = answer.raw_text.strip()
        return cls(
            study_pseudonym=study_pseudonym,
            question=question,
            answer=answer.text,
            model_version=answer.model.model_version,
            adapter_version=answer.model.adapter_version,
            grounded=answer.grounded,
            confidence=answer.confidence,
            abstained=answer.abstained,
            refused=answer.refused,
            evidence=tuple(answer.cited_facts),
            latency_ms=answer.latency_ms,
            image_sha256=image_sha256,
            model_answer=answer.raw_text
            if own and not answer.refused and own != answer.text.strip()
            else None,
        )


def model_text(*, answer: str, model_answer: str | None, abstained: bool, refused: bool) -> str | None:
    """The model's own text of a stored interaction: the "rejected" side of a preference pair.

    Args:
        answer: the answer shown, as stored.
        model_answer: the model's own text when it differs from the answer shown, as stored.
        abstained: whether the model abstained (the answer shown is then an abstention message).
        refused: whether the safety gate refused the request (no model text at all).

    Returns:
        ``model_answer`` when stored; the answer shown when that is the model's text; None for a
        refusal, and for an abstention whose model text was empty or not kept (schema 2 rows).
    """
    if refused:
        return None
    if model_answer is not None:
        return model_answer
    return None if abstained else answer


@dataclass(frozen=True)
class ActorRecord:
    """A stored actor."""

    id: int
    pseudonym: str
    role: str
    created_at: datetime


@dataclass(frozen=True)
class InteractionRecord:
    """A stored interaction (texts as stored, i.e. scrubbed); ``redactions`` counts replaced identifiers."""

    id: int
    created_at: datetime
    actor: str
    study_pseudonym: str
    question: str
    answer: str
    model_version: str
    adapter_version: str | None
    grounded: bool | None
    confidence: float | None
    abstained: bool
    refused: bool
    evidence: tuple[str, ...]
    latency_ms: float
    redactions: int
    image_sha256: str | None = None
    model_answer: str | None = None

    @property
    def model_text(self) -> str | None:
        """The model's own text (see :func:`model_text`): what a correction replaces; None when none."""
        return model_text(
            answer=self.answer, model_answer=self.model_answer, abstained=self.abstained, refused=self.refused
        )


@dataclass(frozen=True)
class CorrectionRecord:
    """A stored correction and its review status."""

    id: int
    created_at: datetime
    interaction_id: int
    author: str
    corrected_answer: str
    status: str
    redactions: int


@dataclass(frozen=True)
class ReviewRecord:
    """A stored review decision."""

    id: int
    created_at: datetime
    correction_id: int
    reviewer: str
    decision: str


@dataclass(frozen=True)
class StoreStats:
    """Counts for ``medvlm db stats`` (no content)."""

    schema_version: int
    actors: dict[str, int]
    interactions: int
    corrections: dict[str, int]
    reviews: int
    audit_events: int
