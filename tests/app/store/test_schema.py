"""Engine settings, schema creation and version checks, and an unreachable database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app.store import (
    AuditKey,
    AuditKeyError,
    DatabaseUnavailableError,
    SchemaVersionError,
    Store,
    check_connection,
    init_db,
    make_engine,
    safe_url,
)
from app.store.models import SCHEMA_VERSION


def test_init_is_idempotent(engine: Engine, key: AuditKey) -> None:
    assert init_db(engine, key) is False
    store = Store.open(engine, key)
    assert store.stats().audit_events == 1
    assert store.stats().schema_version == SCHEMA_VERSION
    assert store.verify().ok


def test_init_with_another_key_is_refused(engine: Engine) -> None:
    with pytest.raises(AuditKeyError, match="not the key this database was created with"):
        init_db(engine, AuditKey(b"o" * 32, "other"))


def test_empty_database_is_refused(db_url: str, key: AuditKey) -> None:
    engine = make_engine(db_url)
    try:
        if engine.url.get_backend_name() == "sqlite":  # an empty file, not a missing one
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE other (x INTEGER)")
        with pytest.raises(SchemaVersionError, match=r"no medvlm schema; run `medvlm db init` first"):
            Store.open(engine, key)
    finally:
        engine.dispose()


@pytest.mark.parametrize(("version", "word"), [(SCHEMA_VERSION + 1, "newer"), (SCHEMA_VERSION - 1, "older")])
def test_other_schema_version_is_refused(engine: Engine, key: AuditKey, version: int, word: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE medvlm_schema SET version = :v"), {"v": version})
    with pytest.raises(SchemaVersionError, match=f"made by an? {word} medvlm \\(schema {version}") as info:
        Store.open(engine, key)
    assert str(info.value).count(";") == 1 and "\n" not in str(info.value)
    with pytest.raises(SchemaVersionError):
        init_db(engine, key)


def test_sqlite_pragmas(tmp_path: Path, key: AuditKey) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        init_db(engine, key)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()


def test_sqlite_foreign_keys_are_enforced(tmp_path: Path, key: AuditKey) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        init_db(engine, key)
        with pytest.raises(Exception, match="FOREIGN KEY"), engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO corrections (created_at, interaction_id, author_id, corrected_answer, "
                    "status, redactions) VALUES ('2024-01-01', 42, 42, 'x', 'pending', 0)"
                )
            )
    finally:
        engine.dispose()


def test_missing_sqlite_file_is_not_created(tmp_path: Path, key: AuditKey) -> None:
    path = tmp_path / "absent" / "medvlm.db"
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(DatabaseUnavailableError, match=r"no database file at .*run `medvlm db init`"):
        Store.open(engine, key)
    assert not path.exists()


def test_unreachable_postgres_is_one_sentence_without_password(key: AuditKey) -> None:
    engine = make_engine("postgresql+psycopg://medvlm:s3cret-pw@127.0.0.1:1/medvlm")
    with pytest.raises(DatabaseUnavailableError) as info:
        Store.open(engine, key)
    message = str(info.value)
    assert "s3cret-pw" not in message and "***" in message
    assert message.startswith("the database at ") and "cannot be reached" in message and "\n" not in message
    with pytest.raises(DatabaseUnavailableError):
        init_db(engine, key)
    with pytest.raises(DatabaseUnavailableError):
        check_connection(engine)


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "postgresql+nosuchdriver://u@h/db"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(DatabaseUnavailableError):
        make_engine(url)


def test_safe_url_hides_password() -> None:
    assert safe_url("postgresql+psycopg://u:pw@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert safe_url("::") == "<invalid URL>"
