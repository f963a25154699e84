"""Concurrent writers keep one valid chain: threads with their own engines, and separate processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.store import AuditKey, InteractionCreate, Store, make_engine
from app.store.models import AuditEvent, Interaction
from tests.app.store.conftest import People

THREADS = 4
PER_THREAD = 6
REPO = Path(__file__).resolve().parents[3]


def _check_chain(engine: Engine, key: AuditKey, expected_interactions: int) -> None:
    store = Store(engine, key)
    result = store.verify()
    assert result.ok, result.reason
    with Session(engine) as session:
        seqs = session.execute(select(AuditEvent.seq).order_by(AuditEvent.seq)).scalars().all()
        created = session.execute(
            select(AuditEvent.object_id).where(AuditEvent.action == "interaction.create")
        ).scalars()
        ids = session.execute(select(Interaction.id)).scalars().all()
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(ids) == expected_interactions
    assert sorted(int(i) for i in created) == sorted(ids)  # one audit event per interaction, no more


def test_threads_append_one_chain(
    db_url: str, engine: Engine, key: AuditKey, people: People, study: str
) -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        own = make_engine(db_url)  # its own pool: separate connections, as separate processes would have
        try:
            store = Store(own, key)
            barrier.wait(timeout=30)
            for i in range(PER_THREAD):
                store.record_interaction(
                    actor=people.clinician if n % 2 else people.reviewer,
                    data=InteractionCreate(
                        study_pseudonym=study,
                        question=f"Thread {n} question {i}?",
                        answer="No.",
                        model_version="m@1",
                    ),
                )
        except BaseException as e:
            errors.append(e)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    _check_chain(engine, key, THREADS * PER_THREAD)


def test_threads_sharing_one_engine(engine: Engine, key: AuditKey, people: People, study: str) -> None:
    store = Store(engine, key)
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            for i in range(PER_THREAD):
                record = store.record_interaction(
                    actor=people.clinician,
                    data=InteractionCreate(
                        study_pseudonym=study, question=f"Q {n}.{i}?", answer="Yes.", model_version="m@1"
                    ),
                )
                correction = store.propose_correction(
                    interaction_id=record.id, author=people.clinician, corrected_answer="No."
                )
                store.review_correction(
                    correction_id=correction.id, reviewer=people.reviewer, decision="rejected"
                )
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    _check_chain(engine, key, THREADS * PER_THREAD)
    assert store.stats().corrections["rejected"] == THREADS * PER_THREAD


WRITER = textwrap.dedent(
    """
    import sys
    from app.store import AuditKey, InteractionCreate, Store, make_engine
    url, secret, actor, study, count = sys.argv[1:6]
    engine = make_engine(url)
    store = Store(engine, AuditKey(bytes.fromhex(secret), "test"))
    for i in range(int(count)):
        store.record_interaction(
            actor=actor,
            data=InteractionCreate(
                study_pseudonym=study, question=f"P{i}?", answer="No.", model_version="m@1"
            ),
        )
    engine.dispose()
    """
)


def test_processes_append_one_chain(
    db_url: str, engine: Engine, key: AuditKey, people: People, study: str
) -> None:
    processes, count = 3, 5
    args = [db_url, key.secret.hex(), people.clinician, study, str(count)]
    running = [
        subprocess.Popen([sys.executable, "-c", WRITER, *args], cwd=REPO, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for process in running:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
    _check_chain(engine, key, processes * count)
