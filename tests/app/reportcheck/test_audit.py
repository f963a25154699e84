"""The report-check job's actor in the Store: a ``service`` (schema 4); an older ``clinician`` is kept."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.reportcheck.audit import RULES_QUESTION, SERVICE_LOGIN, Recorder, service_actor
from app.reportcheck.consistency import RULES_VERSION, check_report_text
from app.store import AuditKey, RoleError, Store, actor_pseudonym, init_db, make_engine
from data_prep.pseudonym import PseudonymKey, study_pseudonym

SITE = PseudonymKey(b"report-check-audit-test-key-0123", "test")
REPORT = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Small right pleural effusion."


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'medvlm.db'}")
    init_db(engine, AuditKey.derive(SITE))
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store.open(engine, AuditKey.derive(SITE))


def _record(store: Store, actor: str) -> int:
    study = study_pseudonym(SITE, "1.2.826.0.1.3680043.8.498.4242")
    return Recorder(store, actor).record(study, check_report_text(REPORT), None)


def test_the_service_is_registered_as_a_service_and_records(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.reportcheck.audit"):
        actor = service_actor(store, SITE)
        assert service_actor(store, SITE) == actor  # found the second time, not registered again
    assert caplog.records == []
    assert actor == actor_pseudonym(SITE, SERVICE_LOGIN)
    assert store.get_actor(actor).role == "service"
    assert _record(store, actor) == 1
    (row,) = [store.get_interaction(1)]
    assert row.actor == actor and row.question == RULES_QUESTION and row.model_version == RULES_VERSION
    stats = store.stats()
    assert stats.actors == {"clinician": 0, "reviewer": 0, "admin": 0, "service": 1}
    with pytest.raises(RoleError, match=r"^a service cannot correct answers$"):
        store.propose_correction(interaction_id=1, author=actor, corrected_answer="Left effusion.")
    assert store.verify().ok and store.check_records().ok


def test_an_actor_registered_as_clinician_before_schema_4_keeps_working(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A database migrated from schema 3 holds the service as a clinician: it is used as it is."""
    old = store.register_actor(pseudonym=actor_pseudonym(SITE, SERVICE_LOGIN), role="clinician")
    with caplog.at_level(logging.WARNING, logger="app.reportcheck.audit"):
        actor = service_actor(store, SITE)
    assert actor == old.pseudonym and store.get_actor(actor).role == "clinician"  # not changed in place
    (warning,) = caplog.records
    assert "registered as clinician before schema 4" in warning.getMessage()
    assert _record(store, actor) == 1
    assert store.stats().actors["clinician"] == 1 and store.stats().actors["service"] == 0
    assert store.verify().ok and store.check_records().ok
