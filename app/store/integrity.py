"""Cross-check the stored rows against their audit events: an edited, inserted or deleted row is found.

The audit chain (``app.store.audit.verify``) proves the log itself is intact; this module proves the
interactions and corrections still say what the log recorded when they were written. Each
``interaction.create`` / ``correction.create`` event holds keyed digests of the stored texts and the
row's non-PHI fields, and each ``correction.review`` event the decision, so a row changed behind
medvlm's back (a corrected answer edited before retraining, an approval flipped) no longer matches.
Run it after the chain verifies; a forged row would need the key to forge its event too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.audit import AuditKey, PayloadValue
from app.store.models import Actor, AuditEvent, Correction, Interaction


@dataclass(frozen=True)
class RecordCheck:
    """What :func:`check_records` found.

    Attributes:
        ok: True when every interaction and correction matches its audit events.
        checked: rows compared.
        first_bad: the first row that does not match (``interaction 12``), None when ok.
        reason: one sentence saying what is wrong (empty when ok).
    """

    ok: bool
    checked: int
    first_bad: str | None
    reason: str


def _events(session: Session) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, str], dict[int, str]]:
    created: dict[tuple[str, str], dict[str, Any]] = {}
    decisions: dict[str, str] = {}
    query = (
        select(AuditEvent)
        .where(AuditEvent.action.in_(("interaction.create", "correction.create", "correction.review")))
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=1000)
    )
    for event in session.execute(query).scalars():
        payload = json.loads(event.payload)
        if event.action == "correction.review":
            decisions[event.object_id] = str(payload.get("decision"))
        else:
            created[(event.object_kind, event.object_id)] = {**payload, "_actor": event.actor}
    actors = {row.id: row.pseudonym for row in session.execute(select(Actor)).scalars()}
    return created, decisions, actors


def interaction_payload(row: Interaction, key: AuditKey) -> dict[str, PayloadValue]:
    """The audit payload of an interaction: its non-PHI fields and keyed digests of its texts.

    The one definition used both when the interaction is written and when records are checked.
    """
    return {
        "study": row.study_pseudonym,
        "model_version": row.model_version,
        "adapter_version": row.adapter_version,
        "grounded": row.grounded,
        "confidence": row.confidence,
        "abstained": row.abstained,
        "refused": row.refused,
        "evidence": list(row.evidence),
        "latency_ms": row.latency_ms,
        "question_hmac": key.text_digest(row.question),
        "question_chars": len(row.question),
        "answer_hmac": key.text_digest(row.answer),
        "answer_chars": len(row.answer),
        "redactions": row.redactions,
        "image_sha256": row.image_sha256,
        # schema 3; None (absent from older events) when there is no separate model text
        "model_answer_hmac": None if row.model_answer is None else key.text_digest(row.model_answer),
        "model_answer_chars": None if row.model_answer is None else len(row.model_answer),
    }


def _interaction_mismatch(row: Interaction, event: dict[str, Any], actor: str, key: AuditKey) -> bool:
    expected = {"_actor": actor, **interaction_payload(row, key)}
    return any(event.get(name) != value for name, value in expected.items())


def _rows(session: Session) -> Iterator[Interaction | Correction]:
    yield from session.execute(select(Interaction).order_by(Interaction.id)).scalars()
    yield from session.execute(select(Correction).order_by(Correction.id)).scalars()


def check_records(session: Session, key: AuditKey) -> RecordCheck:
    """Compare every interaction and correction with the audit events written with it.

    Args:
        session: any session (read only).
        key: the audit key (the text digests are keyed).

    Returns:
        The result; ``first_bad`` names the first row (interactions first, by id) that differs from
        its events, has none, or whose events outlive it.
    """
    created, decisions, actors = _events(session)
    checked = 0
    for row in _rows(session):
        kind = "interaction" if isinstance(row, Interaction) else "correction"
        name = f"{kind} {row.id}"
        event = created.pop((kind, str(row.id)), None)
        if event is None:
            return RecordCheck(False, checked, name, f"{name} has no audit event (written outside medvlm)")
        if isinstance(row, Interaction):
            changed = _interaction_mismatch(row, event, actors.get(row.actor_id, ""), key)
        else:
            changed = (
                event.get("_actor") != actors.get(row.author_id)
                or event.get("interaction_id") != row.interaction_id
                or event.get("answer_hmac") != key.text_digest(row.corrected_answer)
            )
            if not changed and row.status != decisions.get(str(row.id), "pending"):
                return RecordCheck(False, checked, name, f"{name}'s status differs from its audited review")
        if changed:
            return RecordCheck(False, checked, name, f"{name} differs from its audit event (edited)")
        checked += 1
    if created:
        kind, object_id = min(created, key=lambda k: (k[0] != "interaction", int(k[1])))
        name = f"{kind} {object_id}"
        return RecordCheck(False, checked, name, f"{name} is in the audit log but was deleted")
    return RecordCheck(True, checked, None, "")
