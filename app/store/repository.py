"""The store: every write the app and the retraining loop make, each one transaction with its audit event.

A :class:`Store` is built once in the entry point from an engine and the audit key and passed
down. Each public method is one transaction: the domain rows and the audit event are committed
together or not at all, and any error (a wrong role, an unknown id, a reused correction, a lost
connection) rolls everything back and raises a :class:`~app.store.errors.StoreError` whose message
is one sentence naming objects by id, never quoting free text.

Roles: a ``clinician`` asks and corrects; a ``reviewer`` asks, corrects, and approves or rejects
other people's corrections; an ``admin`` registers actors; a ``service`` (schema 4: a batch job
such as ``medvlm check-reports``, never a person) records interactions and nothing else. Approved
corrections are what the retraining loop reads (:meth:`Store.approved_corrections`;
:meth:`Store.export_preferences` writes those not exported before as DPO preference pairs and
audits the export).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.orm import Session

from app.store.audit import AuditKey, PayloadValue, VerifyResult, append_event, lock_head, verify
from app.store.engine import check_connection, unavailable
from app.store.errors import NotFoundError, RoleError, SchemaVersionError, StateError, ValidationError
from app.store.export import (
    EXPORT_ACTION,
    EXPORT_KIND,
    ExportResult,
    approval_seqs,
    exported_correction_ids,
    preference_line,
    resolve_image,
    write_atomic,
)
from app.store.ids import SYSTEM_ACTOR, check_actor_pseudonym
from app.store.integrity import RecordCheck, check_records, interaction_payload
from app.store.models import (
    DECISIONS,
    ROLES,
    SCHEMA_VERSION,
    Actor,
    AuditEvent,
    Correction,
    Decision,
    Interaction,
    Review,
    Role,
)
from app.store.records import (
    ActorRecord,
    CorrectionRecord,
    InteractionCreate,
    InteractionRecord,
    ReviewRecord,
    StoreStats,
    aware,
    model_text,
)
from app.store.schema import check_schema
from app.store.scrub import ScrubPolicy, scrub

logger = logging.getLogger(__name__)

ASKERS: Final = frozenset({"clinician", "reviewer", "service"})
"""Who may record interactions: people who ask, and batch jobs that ask the model (``service``)."""
CORRECTORS: Final = frozenset({"clinician", "reviewer"})
"""Who may propose corrections: people only (a ``service`` has no clinical judgement to offer)."""
REVIEWERS: Final = frozenset({"reviewer"})


class Store:
    """The local database's write and read operations (see the module docstring).

    Args:
        engine: from ``app.store.engine.make_engine``.
        key: the audit key (``AuditKey.derive(resolve_key())`` in the entry point).
        policy: what to do with identifiers found in free text: ``redact`` (replace with tags) or
            ``reject`` (raise ``PHIError``).
    """

    def __init__(self, engine: Engine, key: AuditKey, *, policy: ScrubPolicy = "redact") -> None:
        self.engine = engine
        self.key = key
        self.policy: ScrubPolicy = policy

    @classmethod
    def open(cls, engine: Engine, key: AuditKey, *, policy: ScrubPolicy = "redact") -> Store:
        """Connect, check the schema version and the key, and return the store.

        Raises:
            DatabaseUnavailableError: when the database cannot be reached.
            SchemaVersionError: when it has no medvlm schema or another version.
            AuditKeyError: when ``key`` is not the database's key.
        """
        check_connection(engine)
        store = cls(engine, key, policy=policy)
        with store._transaction() as session:
            check_schema(session)
            lock_head(session, key, lock=False)
        return store

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One session and transaction; driver errors become one-sentence store errors (rolled back)."""
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except IntegrityError as e:
            raise StateError("the write conflicts with a row written at the same time; retry") from e
        except ProgrammingError as e:
            raise SchemaVersionError(
                f"the database tables do not match schema {SCHEMA_VERSION}; "
                "run `medvlm db init` or check the URL"
            ) from e
        except DBAPIError as e:
            raise unavailable(self.engine, e) from e

    # -- actors ---------------------------------------------------------------------------------

    def register_actor(self, *, pseudonym: str, role: Role, by: str | None = None) -> ActorRecord:
        """Register a person by pseudonym with a role.

        Args:
            pseudonym: ``app.store.ids.actor_pseudonym(key, login)``.
            role: ``clinician``, ``reviewer``, ``admin`` or ``service`` (a batch job).
            by: the admin registering them; None for a command run by the operator (``system``).

        Returns:
            The new actor.

        Raises:
            ValidationError: for a malformed pseudonym or an unknown role.
            RoleError: when ``by`` is not an admin.
            StateError: when the pseudonym is already registered.
            NotFoundError: when ``by`` is unknown.
        """
        check_actor_pseudonym(pseudonym)
        if role not in ROLES:
            raise ValidationError(f"the role must be one of {', '.join(ROLES)}")
        with self._transaction() as session:
            if by is not None:
                self._actor(session, by, allowed=frozenset({"admin"}), doing="register actors")
            if session.execute(select(Actor.id).where(Actor.pseudonym == pseudonym)).first():
                raise StateError(f"actor {pseudonym} is already registered")
            actor = Actor(pseudonym=pseudonym, role=role)
            session.add(actor)
            session.flush()
            self._audit(
                session, by or SYSTEM_ACTOR, "actor.create", "actor", actor.id, pseudonym=pseudonym, role=role
            )
            return _actor_record(actor)

    def get_actor(self, pseudonym: str) -> ActorRecord:
        """The actor with this pseudonym.

        Raises:
            NotFoundError: when there is none.
        """
        with self._transaction() as session:
            return _actor_record(self._actor(session, pseudonym, allowed=frozenset(ROLES), doing="be read"))

    # -- interactions ---------------------------------------------------------------------------

    def record_interaction(self, *, actor: str, data: InteractionCreate) -> InteractionRecord:
        """Store one answered question (texts scrubbed) and audit it (digests and lengths only).

        Args:
            actor: the asking clinician's, reviewer's or service's pseudonym.
            data: the interaction.

        Returns:
            The stored interaction, with the texts as stored.

        Raises:
            NotFoundError: for an unknown actor.
            RoleError: for an admin.
            ValidationError, PHIError: for empty, over-long or (under ``reject``) identifying text.
        """
        question = scrub(data.question, field="question", policy=self.policy)
        answer = scrub(data.answer, field="answer", policy=self.policy)
        own = (
            None
            if data.model_answer is None
            else scrub(data.model_answer, field="model answer", policy=self.policy)
        )
        with self._transaction() as session:
            asker = self._actor(session, actor, allowed=ASKERS, doing="ask questions")
            row = Interaction(
                actor_id=asker.id,
                study_pseudonym=data.study_pseudonym,
                question=question.text,
                answer=answer.text,
                model_version=data.model_version,
                adapter_version=data.adapter_version,
                grounded=data.grounded,
                confidence=data.confidence,
                abstained=data.abstained,
                refused=data.refused,
                evidence=list(data.evidence),
                latency_ms=float(data.latency_ms),
                redactions=question.redactions + answer.redactions + (own.redactions if own else 0),
                image_sha256=data.image_sha256,
                model_answer=None if own is None else own.text,
            )
            session.add(row)
            session.flush()
            self._audit(
                session,
                actor,
                "interaction.create",
                "interaction",
                row.id,
                **interaction_payload(row, self.key),
            )
            if row.redactions:
                logger.info("interaction %d: %d identifier(s) redacted", row.id, row.redactions)
            return _interaction_record(row, actor)

    def get_interaction(self, interaction_id: int) -> InteractionRecord:
        """The interaction with this id.

        Raises:
            NotFoundError: when there is none.
        """
        with self._transaction() as session:
            row = self._interaction(session, interaction_id)
            return _interaction_record(row, self._pseudonym(session, row.actor_id))

    # -- corrections and reviews ----------------------------------------------------------------

    def propose_correction(
        self, *, interaction_id: int, author: str, corrected_answer: str
    ) -> CorrectionRecord:
        """Store a corrected answer for review.

        Args:
            interaction_id: the interaction corrected.
            author: the correcting clinician's or reviewer's pseudonym.
            corrected_answer: the answer it should have given (scrubbed before it is stored).

        Returns:
            The correction, ``pending``.

        Raises:
            NotFoundError: for an unknown interaction or author.
            RoleError: for an admin or a service.
            ValidationError, PHIError: for empty, over-long or (under ``reject``) identifying text.
        """
        text = scrub(corrected_answer, field="corrected answer", policy=self.policy)
        with self._transaction() as session:
            who = self._actor(session, author, allowed=CORRECTORS, doing="correct answers")
            self._interaction(session, interaction_id)
            row = Correction(
                interaction_id=interaction_id,
                author_id=who.id,
                corrected_answer=text.text,
                status="pending",
                redactions=text.redactions,
            )
            session.add(row)
            session.flush()
            self._audit(
                session,
                author,
                "correction.create",
                "correction",
                row.id,
                interaction_id=interaction_id,
                answer_hmac=self.key.text_digest(row.corrected_answer),
                answer_chars=len(row.corrected_answer),
                redactions=row.redactions,
            )
            return _correction_record(row, author)

    def review_correction(self, *, correction_id: int, reviewer: str, decision: Decision) -> ReviewRecord:
        """Approve or reject a pending correction.

        Args:
            correction_id: the correction.
            reviewer: the reviewer's pseudonym; not the correction's author.
            decision: ``approved`` or ``rejected``.

        Returns:
            The review; the correction's status becomes the decision.

        Raises:
            ValidationError: for another decision.
            NotFoundError: for an unknown correction or reviewer.
            RoleError: when the reviewer is not a reviewer (a clinician, admin or service), or is the
                correction's author.
            StateError: when the correction was already reviewed.
        """
        if decision not in DECISIONS:
            raise ValidationError(f"the decision must be one of {', '.join(DECISIONS)}")
        with self._transaction() as session:
            who = self._actor(session, reviewer, allowed=REVIEWERS, doing="review corrections")
            correction = session.execute(
                select(Correction)
                .where(Correction.id == correction_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).scalar_one_or_none()
            if correction is None:
                raise NotFoundError(f"correction {correction_id} does not exist")
            if correction.author_id == who.id:
                raise RoleError(f"a reviewer cannot review their own correction (correction {correction_id})")
            if correction.status != "pending":
                raise StateError(f"correction {correction_id} was already {correction.status}")
            correction.status = decision
            review = Review(correction_id=correction_id, reviewer_id=who.id, decision=decision)
            session.add(review)
            session.flush()
            self._audit(
                session,
                reviewer,
                "correction.review",
                "correction",
                correction_id,
                review_id=review.id,
                decision=decision,
            )
            return ReviewRecord(review.id, aware(review.created_at), correction_id, reviewer, decision)

    def approved_corrections(
        self, *, limit: int | None = None
    ) -> list[tuple[InteractionRecord, CorrectionRecord]]:
        """Approved corrections with their interactions, oldest first: the retraining loop's input.

        Args:
            limit: at most this many (all when None).

        Returns:
            ``(interaction, correction)`` pairs.
        """
        return self._corrections("approved", limit)

    def pending_corrections(
        self, *, limit: int | None = None
    ) -> list[tuple[InteractionRecord, CorrectionRecord]]:
        """Corrections waiting for a review, with their interactions, oldest first (the review queue).

        Args:
            limit: at most this many (all when None).

        Returns:
            ``(interaction, correction)`` pairs.
        """
        return self._corrections("pending", limit)

    def _corrections(
        self, status: str, limit: int | None
    ) -> list[tuple[InteractionRecord, CorrectionRecord]]:
        with self._transaction() as session:
            query = (
                select(Correction, Interaction)
                .join(Interaction, Correction.interaction_id == Interaction.id)
                .where(Correction.status == status)
                .order_by(Correction.id)
                .limit(limit)
            )
            pairs = []
            for correction, interaction in session.execute(query):
                pairs.append(
                    (
                        _interaction_record(interaction, self._pseudonym(session, interaction.actor_id)),
                        _correction_record(correction, self._pseudonym(session, correction.author_id)),
                    )
                )
            return pairs

    def export_preferences(
        self, out: Path, *, images: Path, since: int | None = None, include_exported: bool = False
    ) -> ExportResult:
        """Write approved corrections as DPO preference pairs (JSONL) and audit the export.

        One transaction: the approved corrections are read with the audit head locked (so two
        exports cannot take the same corrections), each interaction's image id is resolved under
        ``images`` and checked, the file is written atomically (temporary file, then rename) and an
        ``export`` event with the count, the file's SHA-256 and the correction ids (never text) is
        appended. Any error leaves no file and no event (a file already renamed is removed again
        when the commit fails).

        Args:
            out: the JSONL to write (replaced when it exists).
            images: the case folder holding ``<image_sha256>.png``.
            since: only corrections approved by an audit event after this seq (None: any).
            include_exported: also corrections that earlier exports wrote (``--all``).

        Returns:
            What was written. "rejected" is the model's own text (``model_answer`` when the answer
            shown was an abstention message or carried the ungrounded warning). Corrections whose
            answer is unchanged, whose interaction has no image id, or that have no model text to
            reject (a refusal, an abstention without kept text) are left out and counted
            (``load_preferences`` refuses chosen == rejected, and a pair needs an image).

        Raises:
            ValidationError: for a negative ``since``.
            NotFoundError: when an interaction's image file is missing (naming the interaction).
            ExportError: when an image does not match its id or ``out`` cannot be written.
        """
        if since is not None and since < 0:
            raise ValidationError("since must be an audit seq (0 or more)")
        written: list[Path] = []
        try:
            with self._transaction() as session:
                lock_head(session, self.key)
                previous, exports = exported_correction_ids(session)
                approved_at = approval_seqs(session)
                query = (
                    select(Correction, Interaction)
                    .join(Interaction, Correction.interaction_id == Interaction.id)
                    .where(Correction.status == "approved")
                    .order_by(Correction.id)
                )
                lines: list[str] = []
                ids: list[int] = []
                already = 0
                unchanged: list[int] = []
                no_image: list[int] = []
                no_model_text: list[int] = []
                for correction, interaction in session.execute(query):
                    if not include_exported and correction.id in previous:
                        already += 1
                        continue
                    if since is not None and approved_at.get(correction.id, 0) <= since:
                        continue
                    if interaction.image_sha256 is None:
                        no_image.append(correction.id)
                        continue
                    rejected = model_text(
                        answer=interaction.answer,
                        model_answer=interaction.model_answer,
                        abstained=interaction.abstained,
                        refused=interaction.refused,
                    )
                    if rejected is None:
                        no_model_text.append(correction.id)
                        continue
                    if correction.corrected_answer.strip() == rejected.strip():
                        unchanged.append(correction.id)
                        continue
                    image = resolve_image(images, interaction.id, interaction.image_sha256)
                    chosen = correction.corrected_answer
                    lines.append(preference_line(image, interaction.question, chosen, rejected))
                    ids.append(correction.id)
                data = "".join(lines).encode("utf-8")
                digest = hashlib.sha256(data).hexdigest()
                event = append_event(
                    session,
                    self.key,
                    actor=SYSTEM_ACTOR,
                    action=EXPORT_ACTION,
                    object_kind=EXPORT_KIND,
                    object_id=exports + 1,
                    payload={
                        "count": len(ids),
                        "sha256": digest,
                        "correction_ids": [str(i) for i in ids],
                        "since": since,
                        "all": include_exported,
                        "already_exported": already,
                        "skipped_unchanged": len(unchanged),
                        "skipped_no_image": len(no_image),
                        "skipped_no_model_text": len(no_model_text),
                    },
                )
                write_atomic(out, data)
                written.append(out)
                result = ExportResult(
                    out=out,
                    count=len(ids),
                    sha256=digest,
                    correction_ids=tuple(ids),
                    seq=event.seq,
                    already_exported=already,
                    skipped_unchanged=tuple(unchanged),
                    skipped_no_image=tuple(no_image),
                    skipped_no_model_text=tuple(no_model_text),
                )
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        logger.info("export %d: %d preference pair(s), audit seq %d", exports + 1, result.count, result.seq)
        return result

    # -- whole-database checks ------------------------------------------------------------------

    def verify(self) -> VerifyResult:
        """Verify the audit chain (``app.store.audit.verify``)."""
        with self._transaction() as session:
            return verify(session, self.key)

    def check_records(self) -> RecordCheck:
        """Compare interactions and corrections with their audit events (``app.store.integrity``)."""
        with self._transaction() as session:
            return check_records(session, self.key)

    def stats(self) -> StoreStats:
        """Row counts by role and status (no content)."""
        with self._transaction() as session:
            by_role = select(Actor.role, func.count()).group_by(Actor.role)
            by_status = select(Correction.status, func.count()).group_by(Correction.status)
            actors: dict[str, int] = {role: n for role, n in session.execute(by_role)}
            corrections: dict[str, int] = {status: n for status, n in session.execute(by_status)}

            def count(model: type[Interaction] | type[Review] | type[AuditEvent]) -> int:
                return int(session.execute(select(func.count()).select_from(model)).scalar_one())

            return StoreStats(
                schema_version=SCHEMA_VERSION,
                actors={role: int(actors.get(role, 0)) for role in ROLES},
                interactions=count(Interaction),
                corrections={s: int(corrections.get(s, 0)) for s in ("pending", "approved", "rejected")},
                reviews=count(Review),
                audit_events=count(AuditEvent),
            )

    # -- helpers --------------------------------------------------------------------------------

    def _audit(
        self, session: Session, actor: str, action: str, kind: str, object_id: int, **payload: PayloadValue
    ) -> None:
        append_event(
            session,
            self.key,
            actor=actor,
            action=action,
            object_kind=kind,
            object_id=object_id,
            payload=payload,
        )

    @staticmethod
    def _actor(session: Session, pseudonym: str, *, allowed: frozenset[str], doing: str) -> Actor:
        check_actor_pseudonym(pseudonym)
        actor = session.execute(select(Actor).where(Actor.pseudonym == pseudonym)).scalar_one_or_none()
        if actor is None:
            raise NotFoundError(f"actor {pseudonym} is not registered")
        if actor.role not in allowed:
            article = "an" if actor.role[0] in "aeiou" else "a"
            raise RoleError(f"{article} {actor.role} cannot {doing}")
        return actor

    @staticmethod
    def _interaction(session: Session, interaction_id: int) -> Interaction:
        row = session.get(Interaction, interaction_id)
        if row is None:
            raise NotFoundError(f"interaction {interaction_id} does not exist")
        return row

    @staticmethod
    def _pseudonym(session: Session, actor_id: int) -> str:
        return session.execute(select(Actor.pseudonym).where(Actor.id == actor_id)).scalar_one()


def _actor_record(row: Actor) -> ActorRecord:
    return ActorRecord(row.id, row.pseudonym, row.role, aware(row.created_at))


def _interaction_record(row: Interaction, actor: str) -> InteractionRecord:
    return InteractionRecord(
        id=row.id,
        created_at=aware(row.created_at),
        actor=actor,
        study_pseudonym=row.study_pseudonym,
        question=row.question,
        answer=row.answer,
        model_version=row.model_version,
        adapter_version=row.adapter_version,
        grounded=row.grounded,
        confidence=row.confidence,
        abstained=row.abstained,
        refused=row.refused,
        evidence=tuple(row.evidence),
        latency_ms=row.latency_ms,
        redactions=row.redactions,
        image_sha256=row.image_sha256,
        model_answer=row.model_answer,
    )


def _correction_record(row: Correction, author: str) -> CorrectionRecord:
    return CorrectionRecord(
        id=row.id,
        created_at=aware(row.created_at),
        interaction_id=row.interaction_id,
        author=author,
        corrected_answer=row.corrected_answer,
        status=row.status,
        redactions=row.redactions,
    )
