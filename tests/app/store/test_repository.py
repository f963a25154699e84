"""The store's writes: roles, states, scrubbing, and that a refused write leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.store import (
    InteractionCreate,
    NotFoundError,
    PHIError,
    RoleError,
    StateError,
    Store,
    StoreError,
    ValidationError,
    actor_pseudonym,
)
from app.store.models import Interaction
from data_prep.pseudonym import PseudonymKey
from tests.app.store.conftest import People, row_counts

QUESTION = "Is there a pneumothorax?"


def _data(study: str, **changes: object) -> InteractionCreate:
    fields: dict[str, object] = {
        "study_pseudonym": study,
        "question": QUESTION,
        "answer": "No pneumothorax is seen.",
        "model_version": "builtin-0.2.0@9f1c2e",
        "adapter_version": "stage2@77aa",
        "grounded": True,
        "confidence": 0.91,
        "evidence": ("RID5352", "HP:0002107"),
        "latency_ms": 843.0,
    }
    fields.update(changes)
    return InteractionCreate(**fields)  # type: ignore[arg-type]


def test_interaction_round_trip(store: Store, people: People, study: str) -> None:
    stored = store.record_interaction(actor=people.clinician, data=_data(study))
    again = store.get_interaction(stored.id)
    assert again == stored
    assert again.actor == people.clinician and again.study_pseudonym == study
    assert again.evidence == ("RID5352", "HP:0002107")
    assert (again.grounded, again.confidence, again.redactions) == (True, 0.91, 0)
    assert again.created_at.tzinfo is not None and again.created_at.utcoffset() == UTC.utcoffset(None)
    none_grounded = store.record_interaction(actor=people.reviewer, data=_data(study, grounded=None))
    assert store.get_interaction(none_grounded.id).grounded is None


def test_from_answer(store: Store, people: People, study: str) -> None:
    from medvlm.schema import Answer, ModelInfo

    answer = Answer(
        text="Yes.",
        model=ModelInfo("m@1", None, "llava", False),
        grounded=False,
        confidence=0.7,
        abstained=False,
        refused=False,
        safety=[],
        latency_ms=float(np.float32(5.5)),
        views=["PA chest radiograph"],
        cited_facts=["RID1301"],
    )
    data = InteractionCreate.from_answer(answer, study_pseudonym=study, question="Is there cardiomegaly?")
    stored = store.record_interaction(actor=people.clinician, data=data)
    assert (stored.answer, stored.model_version, stored.adapter_version) == ("Yes.", "m@1", None)
    assert (stored.grounded, stored.evidence, stored.latency_ms) == (False, ("RID1301",), 5.5)


def test_correction_review_flow(store: Store, people: People, study: str) -> None:
    first = store.record_interaction(actor=people.clinician, data=_data(study))
    second = store.record_interaction(actor=people.clinician2, data=_data(study))
    approved = store.propose_correction(
        interaction_id=first.id, author=people.clinician, corrected_answer="Small apical pneumothorax."
    )
    rejected = store.propose_correction(
        interaction_id=second.id, author=people.reviewer, corrected_answer="Wrong."
    )
    assert approved.status == "pending"
    review = store.review_correction(correction_id=approved.id, reviewer=people.reviewer, decision="approved")
    assert (review.decision, review.reviewer, review.correction_id) == (
        "approved",
        people.reviewer,
        approved.id,
    )
    store.review_correction(correction_id=rejected.id, reviewer=people.reviewer2, decision="rejected")
    pairs = store.approved_corrections()
    assert [(i.id, c.id, c.status) for i, c in pairs] == [(first.id, approved.id, "approved")]
    assert pairs[0][1].corrected_answer == "Small apical pneumothorax."
    stats = store.stats()
    assert stats.corrections == {"pending": 0, "approved": 1, "rejected": 1}
    assert (stats.interactions, stats.reviews) == (2, 2)
    assert stats.actors == {"clinician": 2, "reviewer": 2, "admin": 1, "service": 0}
    assert stats.audit_events == 1 + 5 + 2 + 2 + 2
    assert store.verify().ok


def test_pending_corrections_are_the_review_queue(store: Store, people: People, study: str) -> None:
    """The web app's review queue: pending only, oldest first, with their interactions, capped by limit."""
    asked = [store.record_interaction(actor=people.clinician, data=_data(study)) for _ in range(3)]
    proposed = [
        store.propose_correction(interaction_id=i.id, author=people.clinician, corrected_answer=f"Fix {n}.")
        for n, i in enumerate(asked)
    ]
    queue = store.pending_corrections()
    assert [(i.id, c.id) for i, c in queue] == [(i.id, c.id) for i, c in zip(asked, proposed, strict=True)]
    assert queue[0][0] == store.get_interaction(asked[0].id) and queue[0][1] == proposed[0]
    assert queue[0][1].author == people.clinician and queue[0][1].corrected_answer == "Fix 0."
    assert [c.id for _, c in store.pending_corrections(limit=2)] == [proposed[0].id, proposed[1].id]
    store.review_correction(correction_id=proposed[0].id, reviewer=people.reviewer, decision="approved")
    store.review_correction(correction_id=proposed[2].id, reviewer=people.reviewer, decision="rejected")
    assert [c.id for _, c in store.pending_corrections()] == [proposed[1].id]
    assert [c.id for _, c in store.approved_corrections()] == [proposed[0].id]
    assert store.pending_corrections(limit=0) == []


Refused = Callable[[Store, People, str, int, int], object]

REFUSALS: dict[str, tuple[type[StoreError], str, Refused]] = {
    "clinician reviews": (
        RoleError,
        "a clinician cannot review corrections",
        lambda s, p, st, i, c: s.review_correction(
            correction_id=c, reviewer=p.clinician2, decision="approved"
        ),
    ),
    "admin reviews": (
        RoleError,
        "an admin cannot review",
        lambda s, p, st, i, c: s.review_correction(correction_id=c, reviewer=p.admin, decision="approved"),
    ),
    "own correction": (
        RoleError,
        "cannot review their own correction",
        lambda s, p, st, i, c: s.review_correction(
            correction_id=c, reviewer=p.reviewer2, decision="approved"
        ),
    ),
    "unknown correction": (
        NotFoundError,
        "correction 999 does not exist",
        lambda s, p, st, i, c: s.review_correction(
            correction_id=999, reviewer=p.reviewer, decision="approved"
        ),
    ),
    "bad decision": (
        ValidationError,
        "decision must be one of",
        lambda s, p, st, i, c: s.review_correction(correction_id=c, reviewer=p.reviewer, decision="maybe"),  # type: ignore[arg-type]
    ),
    "unknown interaction": (
        NotFoundError,
        "interaction 999 does not exist",
        lambda s, p, st, i, c: s.propose_correction(
            interaction_id=999, author=p.clinician, corrected_answer="x"
        ),
    ),
    "admin corrects": (
        RoleError,
        "an admin cannot correct",
        lambda s, p, st, i, c: s.propose_correction(interaction_id=i, author=p.admin, corrected_answer="x"),
    ),
    "admin asks": (
        RoleError,
        "an admin cannot ask",
        lambda s, p, st, i, c: s.record_interaction(actor=p.admin, data=_data(st)),
    ),
    "unknown actor": (
        NotFoundError,
        "is not registered",
        lambda s, p, st, i, c: s.record_interaction(actor="U-" + "0" * 20, data=_data(st)),
    ),
    "actor not a pseudonym": (
        ValidationError,
        "not a pseudonym",
        lambda s, p, st, i, c: s.record_interaction(actor="dr.smith", data=_data(st)),
    ),
    "clinician registers": (
        RoleError,
        "clinician cannot register",
        lambda s, p, st, i, c: s.register_actor(pseudonym="U-" + "1" * 20, role="admin", by=p.clinician),
    ),
    "duplicate actor": (
        StateError,
        "already registered",
        lambda s, p, st, i, c: s.register_actor(pseudonym=p.clinician, role="reviewer"),
    ),
    "unknown role": (
        ValidationError,
        "role must be one of",
        lambda s, p, st, i, c: s.register_actor(pseudonym="U-" + "1" * 20, role="surgeon"),  # type: ignore[arg-type]
    ),
    "empty correction": (
        ValidationError,
        "corrected answer is empty",
        lambda s, p, st, i, c: s.propose_correction(
            interaction_id=i, author=p.clinician, corrected_answer=" "
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refused_writes_leave_nothing(
    engine: Engine, store: Store, people: People, study: str, case: str
) -> None:
    error, message, call = REFUSALS[case]
    interaction = store.record_interaction(actor=people.clinician, data=_data(study))
    correction = store.propose_correction(
        interaction_id=interaction.id, author=people.reviewer2, corrected_answer="Tiny pneumothorax."
    )
    before = row_counts(engine)
    with pytest.raises(error, match=message) as info:
        call(store, people, study, interaction.id, correction.id)
    text = str(info.value)
    assert text.count(". ") == 0 and "\n" not in text  # one sentence
    assert row_counts(engine) == before
    assert store.verify().ok


@pytest.fixture
def service(store: Store, people: People, pseudonym_key: PseudonymKey) -> str:
    """A batch job's actor (schema 4), registered by the admin."""
    pseudonym = actor_pseudonym(pseudonym_key, "service:test-batch-job")
    record = store.register_actor(pseudonym=pseudonym, role="service", by=people.admin)
    assert record.role == "service"
    return pseudonym


def test_service_records_interactions(store: Store, people: People, service: str, study: str) -> None:
    """A service asks the model like a clinician does; its rows are audited and checked the same way."""
    asked = store.record_interaction(actor=service, data=_data(study))
    assert asked.actor == service and store.get_interaction(asked.id).actor == service
    assert store.get_actor(service).role == "service"
    # a person may correct what a service recorded, and a reviewer approve it
    correction = store.propose_correction(
        interaction_id=asked.id, author=people.clinician, corrected_answer="Small apical pneumothorax."
    )
    store.review_correction(correction_id=correction.id, reviewer=people.reviewer, decision="approved")
    assert store.stats().actors == {"clinician": 2, "reviewer": 2, "admin": 1, "service": 1}
    assert store.verify().ok
    assert store.check_records().ok


SERVICE_REFUSALS: dict[str, tuple[str, Callable[[Store, str, str, int, int], object]]] = {
    "service corrects": (
        "a service cannot correct answers",
        lambda s, svc, st, i, c: s.propose_correction(interaction_id=i, author=svc, corrected_answer="x"),
    ),
    "service reviews": (
        "a service cannot review corrections",
        lambda s, svc, st, i, c: s.review_correction(correction_id=c, reviewer=svc, decision="approved"),
    ),
    "service registers": (
        "a service cannot register actors",
        lambda s, svc, st, i, c: s.register_actor(pseudonym="U-" + "1" * 20, role="clinician", by=svc),
    ),
}


@pytest.mark.parametrize("case", sorted(SERVICE_REFUSALS))
def test_service_cannot_correct_review_or_administer(
    engine: Engine, store: Store, people: People, service: str, study: str, case: str
) -> None:
    message, call = SERVICE_REFUSALS[case]
    interaction = store.record_interaction(actor=service, data=_data(study))
    correction = store.propose_correction(
        interaction_id=interaction.id, author=people.clinician, corrected_answer="Tiny pneumothorax."
    )
    before = row_counts(engine)
    with pytest.raises(RoleError) as info:
        call(store, service, study, interaction.id, correction.id)
    assert str(info.value) == message  # one sentence, naming no text
    assert row_counts(engine) == before
    assert store.verify().ok


def test_approving_twice_is_refused(engine: Engine, store: Store, people: People, study: str) -> None:
    interaction = store.record_interaction(actor=people.clinician, data=_data(study))
    correction = store.propose_correction(
        interaction_id=interaction.id, author=people.clinician, corrected_answer="Tiny pneumothorax."
    )
    store.review_correction(correction_id=correction.id, reviewer=people.reviewer, decision="approved")
    before = row_counts(engine)
    for reviewer, decision in ((people.reviewer, "approved"), (people.reviewer2, "rejected")):
        with pytest.raises(StateError, match=f"correction {correction.id} was already approved"):
            store.review_correction(correction_id=correction.id, reviewer=reviewer, decision=decision)  # type: ignore[arg-type]
    assert row_counts(engine) == before


def test_failure_after_the_domain_write_rolls_it_back(
    engine: Engine, store: Store, people: People, study: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interaction row is flushed before the audit append; a failing append must undo it."""
    before = row_counts(engine)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("app.store.repository.append_event", broken)
    with pytest.raises(RuntimeError):
        store.record_interaction(actor=people.clinician, data=_data(study))
    assert row_counts(engine) == before
    with Session(engine) as session:
        assert session.execute(select(Interaction)).first() is None


def test_identifiers_are_redacted_before_storage(
    engine: Engine, store: Store, people: People, study: str
) -> None:
    question = (
        "Compare with DOE^JANE's film of 2023-04-01, MRN 44556677, call 020 7946 0958 or jd@example.org"
    )
    stored = store.record_interaction(actor=people.clinician, data=_data(study, question=question))
    assert stored.redactions == 5
    with Session(engine) as session:
        saved = session.execute(select(Interaction.question)).scalar_one()
    assert saved == stored.question
    for secret in ("DOE", "JANE", "2023", "44556677", "7946", "jd@"):
        assert secret not in saved
    assert "[NAME]" in saved and "[DATE]" in saved and "[ID]" in saved


def test_reject_policy_refuses_and_does_not_echo(
    engine: Engine, people: People, study: str, store: Store
) -> None:
    strict = Store(store.engine, store.key, policy="reject")
    before = row_counts(engine)
    with pytest.raises(PHIError) as info:
        strict.record_interaction(
            actor=people.clinician, data=_data(study, question="Is SMITH^JOHN's lung clear?")
        )
    assert "SMITH" not in str(info.value) and "NAME" in str(info.value)
    assert row_counts(engine) == before
    stored = strict.record_interaction(actor=people.clinician, data=_data(study))
    assert stored.question == QUESTION


@pytest.mark.parametrize(
    "changes",
    [
        {"study_pseudonym": "1.2.826.0.1.3680043.8.498.12345"},
        {"study_pseudonym": "S-123"},
        {"model_version": "model with spaces"},
        {"adapter_version": ""},
        {"evidence": ("has space",)},
        {"confidence": 1.5},
        {"confidence": float("nan")},
        {"latency_ms": -1.0},
    ],
)
def test_malformed_interaction_is_refused(study: str, changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        _data(study, **changes)
    assert "1.2.826" not in str(info.value)


def test_not_found_reads(store: Store, people: People) -> None:
    with pytest.raises(NotFoundError, match="interaction 5 does not exist"):
        store.get_interaction(5)
    assert store.get_actor(people.reviewer).role == "reviewer"


def test_actor_pseudonym_is_stable_and_opaque(pseudonym_key: PseudonymKey) -> None:
    from app.store import actor_pseudonym

    assert actor_pseudonym(pseudonym_key, "Alice") == actor_pseudonym(pseudonym_key, " alice ")
    assert actor_pseudonym(pseudonym_key, "alice") != actor_pseudonym(pseudonym_key, "bob")
    assert "alice" not in actor_pseudonym(pseudonym_key, "alice")
    with pytest.raises(ValidationError):
        actor_pseudonym(pseudonym_key, "  ")
