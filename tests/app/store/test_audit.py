"""The audit chain: intact chains verify, and every kind of tampering is found at the right seq."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from app.store import AuditKey, AuditKeyError, InteractionCreate, Store, ValidationError, verify
from app.store.audit import append_event, canonical, event_hash, payload_text
from app.store.models import GENESIS_HASH, AuditEvent, Interaction
from tests.app.store.conftest import People, row_counts

QUESTION = "Is there a pleural effusion on the left side?"


def _fill(store: Store, people: People, study: str, n: int = 3) -> None:
    for i in range(n):
        store.record_interaction(
            actor=people.clinician,
            data=InteractionCreate(
                study_pseudonym=study,
                question=f"{QUESTION} ({i})",
                answer="No effusion.",
                model_version="builtin@0123abcd",
                latency_ms=12.5,
            ),
        )


def _verify(engine: Engine, key: AuditKey) -> tuple[bool, int | None, str]:
    with Session(engine) as session:
        result = verify(session, key)
    return result.ok, result.first_bad_seq, result.reason


def _sql(engine: Engine, statement: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement), params)


def test_intact_chain_verifies(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    _fill(store, people, study)
    with Session(engine) as session:
        result = verify(session, key)
        events = session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    assert result.ok and result.first_bad_seq is None and result.reason == ""
    assert result.events == len(events) == 1 + 5 + 3  # init, 5 actors, 3 interactions
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert result.head_seq == events[-1].seq and result.head_hash == events[-1].hash
    assert [e.action for e in events[-3:]] == ["interaction.create"] * 3


@pytest.mark.parametrize("column", ["payload", "actor", "action", "at", "object_id"])
def test_edited_event_is_found(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str, column: str
) -> None:
    _fill(store, people, study)
    value = {"payload": '{"edited":true}', "actor": "U-00000000000000000000", "action": "actor.delete"}.get(
        column, "2001-01-01T00:00:00.000000Z" if column == "at" else "999"
    )
    _sql(engine, f"UPDATE audit_log SET {column} = :v WHERE seq = 7", v=value)
    ok, seq, reason = _verify(engine, key)
    assert (ok, seq) == (False, 7)
    assert "altered" in reason


def test_deleted_event_is_found(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    _fill(store, people, study)
    _sql(engine, "DELETE FROM audit_log WHERE seq = 4")
    ok, seq, reason = _verify(engine, key)
    assert (ok, seq) == (False, 4)
    assert "missing" in reason


def test_events_cut_off_the_end_are_found(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    _fill(store, people, study)
    _sql(engine, "DELETE FROM audit_log WHERE seq >= 8")
    ok, seq, reason = _verify(engine, key)
    assert (ok, seq) == (False, 8)
    assert "end of the log" in reason


def test_inserted_event_is_found(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    """A forger without the key appends a well-linked event and moves the head: the hash gives it away."""
    _fill(store, people, study)
    forger = AuditKey(b"f" * 32, "forger")
    with Session(engine) as session, session.begin():
        last = session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
        fake = AuditEvent(
            seq=last.seq + 1,
            at=last.at,
            actor=last.actor,
            action="correction.review",
            object_kind="correction",
            object_id="1",
            payload=canonical({"decision": "approved"}),
            prev_hash=last.hash,
        )
        fake.hash = event_hash(forger, last.hash, fake)
        session.add(fake)
        session.execute(text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": fake.seq, "h": fake.hash})
    ok, seq, reason = _verify(engine, key)
    assert (ok, seq) == (False, 10)
    assert "altered" in reason


def test_event_added_behind_the_head_is_found(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    """Even an event with a valid hash is refused when it was not appended through the head."""
    _fill(store, people, study, n=1)
    with Session(engine) as session, session.begin():
        last = session.execute(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
        extra = AuditEvent(
            seq=last.seq + 1,
            at=last.at,
            actor="system",
            action="x",
            object_kind="x",
            object_id="1",
            payload="{}",
            prev_hash=last.hash,
        )
        extra.hash = event_hash(key, last.hash, extra)
        session.add(extra)
    ok, seq, reason = _verify(engine, key)
    assert (ok, seq) == (False, 8)
    assert "behind the audit head" in reason


def test_reordered_events_are_found(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    _fill(store, people, study)
    columns = ("at", "actor", "action", "object_kind", "object_id", "payload", "prev_hash", "hash")
    with Session(engine) as session, session.begin():
        a, b = (session.get(AuditEvent, seq) for seq in (5, 6))
        assert a is not None and b is not None
        values_a = {c: getattr(a, c) for c in columns}
        for c in columns:
            setattr(a, c, getattr(b, c))
            setattr(b, c, values_a[c])
    ok, seq, reason = _verify(engine, key)
    assert (ok, seq) == (False, 5)
    assert "does not link" in reason


def test_wrong_key_is_found_and_refused(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    _fill(store, people, study, n=1)
    wrong = AuditKey(b"w" * 32, "wrong")
    ok, seq, reason = _verify(engine, wrong)
    assert (ok, seq) == (False, 1)
    assert "key" in reason
    before = row_counts(engine)
    with pytest.raises(AuditKeyError, match="not the key this database was created with"):
        Store(engine, wrong).record_interaction(
            actor=people.clinician,
            data=InteractionCreate(
                study_pseudonym=study, question=QUESTION, answer="No.", model_version="m@1"
            ),
        )
    assert row_counts(engine) == before  # the interaction was rolled back with the refused append
    with pytest.raises(AuditKeyError):
        Store.open(engine, wrong)
    assert _verify(engine, key)[0]


def test_wrong_key_found_even_when_the_check_value_is_forged(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    wrong = AuditKey(b"w" * 32, "wrong")
    _sql(engine, "UPDATE audit_head SET key_check = :k", k=wrong.check_value())
    ok, seq, reason = _verify(engine, wrong)
    assert (ok, seq) == (False, 1)
    assert "altered" in reason


def test_audit_payload_holds_no_free_text(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    record = store.record_interaction(
        actor=people.clinician,
        data=InteractionCreate(
            study_pseudonym=study, question=QUESTION, answer="Small effusion.", model_version="m@1"
        ),
    )
    cid = store.propose_correction(
        interaction_id=record.id, author=people.clinician, corrected_answer="Moderate effusion, left."
    ).id
    store.review_correction(correction_id=cid, reviewer=people.reviewer, decision="approved")
    with Session(engine) as session:
        rows = session.execute(select(AuditEvent)).scalars().all()
    dump = " ".join(f"{r.actor} {r.action} {r.object_id} {r.payload}" for r in rows).lower()
    for word in ("pleural", "effusion", "moderate", "small"):
        assert word not in dump
    created = next(r for r in rows if r.action == "interaction.create")
    assert f'"question_chars":{len(QUESTION)}' in created.payload
    assert f'"question_hmac":"{key.text_digest(QUESTION)}"' in created.payload
    assert study in created.payload


@pytest.mark.parametrize(
    "payload",
    [{"note": "patient feels better"}, {"name": "SMITH^JOHN x"}, {"blob": {"a": 1}}, {"bad key": 1}],
)
def test_append_refuses_free_text(engine: Engine, key: AuditKey, payload: dict[str, object]) -> None:
    with pytest.raises(ValidationError), Session(engine) as session, session.begin():
        append_event(
            session,
            key,
            actor="system",
            action="t",
            object_kind="t",
            object_id=1,
            payload=payload,  # type: ignore[arg-type]
        )


def test_payload_text_is_canonical() -> None:
    assert payload_text({"b": 1, "a": ["x", "y"], "c": None}) == '{"a":["x","y"],"b":1,"c":null}'


def test_key_rules(key: AuditKey) -> None:
    with pytest.raises(AuditKeyError, match="at least 32 bytes"):
        AuditKey(b"short", "x")
    assert "secret" not in repr(key) and key.secret.hex() not in repr(key)
    assert key.text_digest("a") != key.text_digest("b")
    assert AuditKey(b"o" * 32, "other").text_digest("a") != key.text_digest("a")


def test_domain_rows_are_untouched_by_verify(
    engine: Engine, key: AuditKey, store: Store, people: People, study: str
) -> None:
    _fill(store, people, study, n=2)
    before = row_counts(engine)
    assert store.verify().ok
    assert row_counts(engine) == before
    with Session(engine) as session:
        assert session.execute(select(Interaction.question)).scalars().all()[0].startswith(QUESTION)
