"""Fixtures for the store tests: every database test runs on SQLite (a temp file) and on a real PostgreSQL.

PostgreSQL: ``$MEDVLM_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test gets its own schema (``medvlm_test_<random>``, dropped afterwards) so parallel runs do not
collide. When the server is unreachable the PostgreSQL tests fail, unless ``MEDVLM_SKIP_PG=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.store import AuditKey, Store, actor_pseudonym, init_db, make_engine
from app.store.models import AuditEvent, AuditHead, Base
from data_prep.pseudonym import PseudonymKey, study_pseudonym

PG_URL = os.environ.get("MEDVLM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Engine]:
    """An engine on the PostgreSQL test database (no schema of ours), or a failure/skip when unreachable."""
    if os.environ.get("MEDVLM_SKIP_PG") == "1":
        pytest.skip("MEDVLM_SKIP_PG=1: PostgreSQL tests skipped")
    engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            pass
    except OperationalError:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL is unreachable at {make_url(PG_URL).render_as_string(hide_password=True)}; "
            "start it (or set MEDVLM_TEST_PG_URL), or set MEDVLM_SKIP_PG=1 to skip the PostgreSQL tests",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def pg_schema_url(pg_server: Engine) -> Iterator[str]:
    """A URL whose connections use a fresh schema of this test session (dropped at the end)."""
    schema = f"medvlm_test_{uuid.uuid4().hex[:12]}"
    with pg_server.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with pg_server.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL of an empty database: a fresh SQLite file, or the session's PostgreSQL schema emptied.

    PostgreSQL tables are created once per session and emptied before each test, ids restarting
    at 1 (faster than a schema per test); a database "without the medvlm schema" is then one
    without its version row.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'medvlm.db'}"
    url: str = request.getfixturevalue("pg_schema_url")
    statements = [f'DELETE FROM "{table.name}"' for table in reversed(Base.metadata.sorted_tables)]
    statements += [
        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"
        for table in Base.metadata.sorted_tables
        if "id" in table.c
    ]
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("; ".join(statements))
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def pseudonym_key() -> PseudonymKey:
    """A fixed test site key."""
    return PseudonymKey(b"test-site-key-0123456789abcdef", "test")


@pytest.fixture(scope="session")
def key(pseudonym_key: PseudonymKey) -> AuditKey:
    """The audit key derived from the test site key."""
    return AuditKey.derive(pseudonym_key)


@pytest.fixture
def engine(db_url: str, key: AuditKey) -> Iterator[Engine]:
    """An initialised database's engine."""
    engine = make_engine(db_url)
    init_db(engine, key)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine, key: AuditKey) -> Store:
    """The store on the initialised database."""
    return Store.open(engine, key)


@dataclass(frozen=True)
class People:
    """Registered actors: two clinicians, two reviewers, an admin."""

    clinician: str
    clinician2: str
    reviewer: str
    reviewer2: str
    admin: str


@pytest.fixture
def people(store: Store, pseudonym_key: PseudonymKey) -> People:
    """Register one actor per role (and a second clinician and reviewer)."""
    ids = {name: actor_pseudonym(pseudonym_key, name) for name in People.__dataclass_fields__}
    store.register_actor(pseudonym=ids["admin"], role="admin")
    for name in ("clinician", "clinician2", "reviewer", "reviewer2"):
        store.register_actor(
            pseudonym=ids[name], role="reviewer" if "reviewer" in name else "clinician", by=ids["admin"]
        )
    return People(**ids)


@pytest.fixture
def study(pseudonym_key: PseudonymKey) -> str:
    """A study pseudonym made the way the app makes it."""
    return study_pseudonym(pseudonym_key, "1.2.826.0.1.3680043.8.498.12345")


def row_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table plus the audit head's seq: equal before and after a refused write."""
    with Session(engine) as session:
        counts = {
            table.name: int(session.execute(select(func.count()).select_from(table)).scalar_one())
            for table in Base.metadata.sorted_tables
        }
        counts["audit_head.seq"] = session.execute(select(AuditHead.seq)).scalar_one()
        counts["audit_log.max"] = int(session.execute(select(func.max(AuditEvent.seq))).scalar_one() or 0)
    return counts
