"""Rows against their audit events: an edited, inserted, deleted or re-statused row is named."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text

from app.store import InteractionCreate, Store
from tests.app.store.conftest import People


@pytest.fixture
def filled(store: Store, people: People, study: str) -> Store:
    """Two interactions; a correction rejected on the first, one pending on the second."""
    for i in range(2):
        record = store.record_interaction(
            actor=people.clinician,
            data=InteractionCreate(
                study_pseudonym=study,
                question=f"Is there consolidation ({i})?",
                answer="No.",
                model_version="m@1",
                evidence=("RID5350",),
            ),
        )
        correction = store.propose_correction(
            interaction_id=record.id,
            author=people.clinician,
            corrected_answer="Right lower lobe consolidation.",
        )
        if i == 0:
            store.review_correction(
                correction_id=correction.id, reviewer=people.reviewer, decision="approved"
            )
    return store


def _sql(engine: Engine, statement: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(statement))


def test_untouched_rows_match(filled: Store) -> None:
    result = filled.check_records()
    assert (result.ok, result.checked, result.first_bad, result.reason) == (True, 4, None, "")


@pytest.mark.parametrize(
    ("statement", "bad", "word"),
    [
        ("UPDATE interactions SET answer = 'Yes.' WHERE id = 2", "interaction 2", "edited"),
        (
            "UPDATE interactions SET study_pseudonym = 'S-00000000000000000000' WHERE id = 1",
            "interaction 1",
            "edited",
        ),
        ("UPDATE interactions SET grounded = true WHERE id = 1", "interaction 1", "edited"),
        (
            "UPDATE interactions SET actor_id = (SELECT id FROM actors WHERE role = 'admin')",
            "interaction 1",
            "edited",
        ),
        ("UPDATE corrections SET corrected_answer = 'Normal.' WHERE id = 1", "correction 1", "edited"),
        ("UPDATE corrections SET status = 'approved' WHERE id = 2", "correction 2", "status"),
        ("DELETE FROM corrections WHERE id = 2", "correction 2", "deleted"),
        (
            "INSERT INTO interactions (created_at, actor_id, study_pseudonym, question, answer, "
            "model_version, abstained, refused, evidence, latency_ms, redactions) "
            "SELECT created_at, actor_id, study_pseudonym, question, answer, model_version, abstained, "
            "refused, evidence, latency_ms, redactions FROM interactions WHERE id = 1",
            "interaction 3",
            "no audit event",
        ),
    ],
)
def test_tampered_rows_are_named(engine: Engine, filled: Store, statement: str, bad: str, word: str) -> None:
    assert filled.verify().ok
    _sql(engine, statement)
    result = filled.check_records()
    assert not result.ok
    assert result.first_bad == bad
    assert word in result.reason and result.reason.startswith(bad)
    assert filled.verify().ok  # the chain itself is intact: only the rows were changed


def test_cli_verify_reports_tampered_rows(
    db_url: str,
    filled: Store,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from app.cli import main

    monkeypatch.setattr("app.commands.db._audit_key", lambda create: filled.key)
    assert main(["db", "verify", "--url", db_url]) == 0
    assert "records_checked: 4" in capsys.readouterr().out
    _sql(engine, "UPDATE corrections SET corrected_answer = 'Normal.' WHERE id = 1")
    assert main(["db", "verify", "--url", db_url]) == 1
    err = capsys.readouterr().err
    assert err == (
        "medvlm db verify: the stored rows do not match the audit log: "
        "correction 1 differs from its audit event (edited)\n"
    )
