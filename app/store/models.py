"""The tables of the local database (SQLAlchemy 2.0 typed ORM), portable to SQLite and PostgreSQL.

No table holds a patient identifier: studies are referenced by their keyed pseudonym
(``data_prep.pseudonym.study_pseudonym``), people by a pseudonymous actor id, and free text
(questions, answers, corrections) is scrubbed before it is stored (``app.store.scrub``).
The audit log holds no free text at all (keyed digests and lengths only); see docs/DATABASE.md.

Roles and states are short strings with CHECK constraints rather than database enum types, so the
same DDL works on both backends and a new value needs no ``ALTER TYPE``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION: Final = 4
"""Bumped whenever a table changes; a database made by another version is refused.

2: ``interactions.image_sha256`` (the content id of the case image), ``export`` audit events.
3: ``interactions.model_answer`` (the model's own text when the answer shown is not it).
4: the ``service`` role (``ck_actors_role`` accepts it): batch jobs, not people.
"""

Role = Literal["clinician", "reviewer", "admin", "service"]
ROLES: Final[tuple[str, ...]] = ("clinician", "reviewer", "admin", "service")
"""``service`` (schema 4) is a batch job such as ``medvlm check-reports``: it records interactions
but cannot correct, review or administer, and no person can sign in to the web app as one."""
CorrectionStatus = Literal["pending", "approved", "rejected"]
CORRECTION_STATUSES: Final[tuple[str, ...]] = ("pending", "approved", "rejected")
Decision = Literal["approved", "rejected"]
DECISIONS: Final[tuple[str, ...]] = ("approved", "rejected")

GENESIS_HASH: Final = "0" * 64
"""``prev_hash`` of the first audit event."""


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base of every medvlm table."""


class SchemaInfo(Base):
    """One row (id 1): the schema version this database was made with."""

    __tablename__ = "medvlm_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    __table_args__ = (CheckConstraint("id = 1", name="ck_medvlm_schema_single_row"),)


class Actor(Base):
    """A person, or a batch job (``service``), by pseudonymous id only (never a name or login)."""

    __tablename__ = "actors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pseudonym: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    __table_args__ = (CheckConstraint(_in("role", ROLES), name="ck_actors_role"),)


class Interaction(Base):
    """One question asked about one study and the answer the model gave."""

    __tablename__ = "interactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now, index=True)
    actor_id: Mapped[int] = mapped_column(ForeignKey("actors.id"), index=True)
    study_pseudonym: Mapped[str] = mapped_column(String(32), index=True)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(128))
    adapter_version: Mapped[str | None] = mapped_column(String(128))
    grounded: Mapped[bool | None] = mapped_column(Boolean)
    confidence: Mapped[float | None] = mapped_column(Float)
    abstained: Mapped[bool] = mapped_column(Boolean, default=False)
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)
    latency_ms: Mapped[float] = mapped_column(Float)
    redactions: Mapped[int] = mapped_column(Integer, default=0)
    image_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    """SHA-256 (64 lowercase hex) of the de-identified image bytes the app saved as
    ``$MEDVLM_HOME/cases/<sha256>.png``: a content id, not a path; None when no image was kept."""
    model_answer: Mapped[str | None] = mapped_column(Text)
    """Schema 3: the model's own text (scrubbed) when ``answer`` is not it (an abstention message, or
    the ungrounded warning before it); None when ``answer`` is the model's text or there is none."""

    __table_args__ = (CheckConstraint("latency_ms >= 0", name="ck_interactions_latency"),)


class Correction(Base):
    """A clinician's corrected answer to an interaction, waiting for (or after) review."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    interaction_id: Mapped[int] = mapped_column(ForeignKey("interactions.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("actors.id"))
    corrected_answer: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    redactions: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (CheckConstraint(_in("status", CORRECTION_STATUSES), name="ck_corrections_status"),)


class Review(Base):
    """A reviewer's decision on a correction; at most one per correction."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    correction_id: Mapped[int] = mapped_column(ForeignKey("corrections.id"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("actors.id"))
    decision: Mapped[str] = mapped_column(String(16))

    __table_args__ = (
        UniqueConstraint("correction_id", name="uq_reviews_correction"),
        CheckConstraint(_in("decision", DECISIONS), name="ck_reviews_decision"),
    )


class AuditHead(Base):
    """One row (id 1): the last audit event's seq and hash, and a check value of the audit key.

    Appenders lock this row (``SELECT ... FOR UPDATE`` on PostgreSQL; ``BEGIN IMMEDIATE`` holds the
    whole file on SQLite) so concurrent writers extend one chain; it also lets ``verify`` notice
    events cut off the end of the log.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    key_check: Mapped[str] = mapped_column(String(64))

    __table_args__ = (CheckConstraint("id = 1", name="ck_audit_head_single_row"),)


class AuditEvent(Base):
    """One link of the tamper-evident audit chain (see ``app.store.audit``).

    ``at`` is an ISO-8601 UTC string rather than a timestamp column so that the hashed text is the
    stored text on every backend; ``payload`` is canonical JSON of non-PHI fields.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    object_kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
