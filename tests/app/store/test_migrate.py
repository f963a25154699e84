"""``medvlm db migrate``: an older database (built here with its own DDL) upgraded, verified and written to.

The old databases are made from the migration's own record (``app.store.migrate.SCHEMA_CHANGES``):
today's tables without the columns and indexes a later version added and with the CHECK constraints
as they were before a later version widened them, and rows and audit events as the older medvlm
wrote them (payloads without the later fields). Every test runs on SQLite and on
the real PostgreSQL (a fresh schema per test).
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import CheckConstraint, Engine, create_engine, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, CreateTable

from app.cli import main
from app.store import (
    AuditKey,
    AuditKeyError,
    InteractionCreate,
    RoleError,
    SchemaVersionError,
    Store,
    ValidationError,
    actor_pseudonym,
    init_db,
    make_engine,
    migrate_db,
)
from app.store.audit import append_event
from app.store.integrity import interaction_payload
from app.store.migrate import (
    MIGRATE_ACTION,
    OLDEST_MIGRATABLE,
    SCHEMA_CHANGES,
    AddedColumn,
    WidenedCheck,
    changes_after,
)
from app.store.models import (
    GENESIS_HASH,
    SCHEMA_VERSION,
    AuditEvent,
    AuditHead,
    Base,
    Interaction,
    SchemaInfo,
)
from data_prep.pseudonym import PseudonymKey, study_pseudonym
from tests.app.store.conftest import BACKENDS, PG_URL, row_counts

IMAGE = b"\x89PNG case image bytes of interaction 1"
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()
SITE_KEY = "migrate-cli-site-key-0123456789"


# -- building an old database -------------------------------------------------------------------


def model_check(change: WidenedCheck) -> CheckConstraint:
    (check,) = (
        c
        for c in Base.metadata.tables[change.table].constraints
        if isinstance(c, CheckConstraint) and c.name == change.constraint
    )
    return check


def old_schema_ddl(engine: Engine, version: int) -> list[str]:
    """The DDL of schema ``version``: today's tables minus the columns (and indexes) added later, with
    the CHECK constraints widened later as they were before."""
    later = {(c.table, c.column) for c in changes_after(version) if isinstance(c, AddedColumn)}
    narrowed = {c.table: c for c in reversed(changes_after(version)) if isinstance(c, WidenedCheck)}
    statements = []
    for table in Base.metadata.sorted_tables:
        create = CreateTable(table)
        create.columns = [c for c in create.columns if (table.name, c.element.name) not in later]
        ddl = str(create.compile(dialect=engine.dialect))
        if table.name in narrowed:  # the oldest later change holds the values before it
            change = narrowed[table.name]
            today = f"CHECK ({model_check(change).sqltext})"
            assert today in ddl, ddl
            ddl = ddl.replace(today, f"CHECK ({change.sql_before()})")
        statements.append(ddl)
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            if not any((table.name, c.name) in later for c in index.columns):
                statements.append(str(CreateIndex(index).compile(dialect=engine.dialect)))
    return statements


def old_interaction_payload(values: dict[str, Any], key: AuditKey, version: int) -> dict[str, Any]:
    """The ``interaction.create`` payload an older medvlm wrote: no fields for later columns."""
    payload: dict[str, Any] = dict(interaction_payload(Interaction(**values), key))
    if version < 3:
        del payload["model_answer_hmac"], payload["model_answer_chars"]
    if version < 2:
        del payload["image_sha256"]
    return payload


def build_old_database(url: str, key: AuditKey, site: PseudonymKey, version: int) -> None:
    """Create a schema-``version`` database with the history an older medvlm would have written.

    Actors: an admin, a clinician, a reviewer (no service: schema 4 added that role). Interactions:
    1 answered (with a case image from schema 2 on), 2 abstained (the message only: no model text
    was kept before schema 3). Corrections: 1 on interaction 1, approved; 2 on interaction 2, pending.
    """
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for statement in old_schema_ddl(engine, version):
                conn.exec_driver_sql(statement)
        tables = Base.metadata.tables
        with Session(engine) as s, s.begin():
            s.add(SchemaInfo(id=1, version=version))
            s.add(AuditHead(id=1, seq=0, hash=GENESIS_HASH, key_check=key.check_value()))
            s.flush()

            def audit(actor: str, action: str, kind: str, object_id: int, **payload: Any) -> None:
                append_event(
                    s, key, actor=actor, action=action, object_kind=kind, object_id=object_id, payload=payload
                )

            audit("system", "store.init", "store", 1, schema_version=version)
            people = {}
            for name, role in (("admin", "admin"), ("clinician", "clinician"), ("reviewer", "reviewer")):
                pseudonym = actor_pseudonym(site, name)
                row_id = s.execute(insert(tables["actors"]).values(pseudonym=pseudonym, role=role))
                people[name] = (int(row_id.inserted_primary_key[0]), pseudonym)
                audit("system", "actor.create", "actor", people[name][0], pseudonym=pseudonym, role=role)
            clinician_id, clinician = people["clinician"]
            study = study_pseudonym(site, "1.2.826.0.1.3680043.8.498.777")
            answers = [
                ("Is there a pleural effusion?", "Yes, a small left pleural effusion.", False),
                ("Is the heart enlarged?", "The model is not confident enough to answer.", True),
            ]
            for number, (question, answer, abstained) in enumerate(answers, start=1):
                values: dict[str, Any] = {
                    "actor_id": clinician_id,
                    "study_pseudonym": study,
                    "question": question,
                    "answer": answer,
                    "model_version": "builtin-0.2.0",
                    "adapter_version": None,
                    "grounded": True,
                    "confidence": 0.55 if abstained else 0.91,
                    "abstained": abstained,
                    "refused": False,
                    "evidence": ["RL:effusion"],
                    "latency_ms": 12.5,
                    "redactions": 0,
                }
                if version >= 2:
                    values["image_sha256"] = IMAGE_SHA
                result = s.execute(insert(tables["interactions"]).values(**values))
                assert result.inserted_primary_key[0] == number
                audit(
                    clinician,
                    "interaction.create",
                    "interaction",
                    number,
                    **old_interaction_payload(values, key, version),
                )
            for number, corrected in ((1, "No pleural effusion."), (2, "No, the heart is normal.")):
                s.execute(
                    insert(tables["corrections"]).values(
                        interaction_id=number,
                        author_id=clinician_id,
                        corrected_answer=corrected,
                        status="approved" if number == 1 else "pending",
                        redactions=0,
                    )
                )
                audit(
                    clinician,
                    "correction.create",
                    "correction",
                    number,
                    interaction_id=number,
                    answer_hmac=key.text_digest(corrected),
                    answer_chars=len(corrected),
                    redactions=0,
                )
            s.execute(
                insert(tables["reviews"]).values(
                    correction_id=1, reviewer_id=people["reviewer"][0], decision="approved"
                )
            )
            audit(
                people["reviewer"][1], "correction.review", "correction", 1, review_id=1, decision="approved"
            )
    finally:
        engine.dispose()


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of a database with no tables at all: a new SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    server: Engine = request.getfixturevalue("pg_server")
    schema = f"medvlm_migrate_{uuid.uuid4().hex[:12]}"
    with server.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(PG_URL)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with server.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def schema2_url(empty_url: str, key: AuditKey, pseudonym_key: PseudonymKey) -> str:
    """A schema-2 database with history."""
    build_old_database(empty_url, key, pseudonym_key, 2)
    return empty_url


@pytest.fixture
def schema3_url(empty_url: str, key: AuditKey, pseudonym_key: PseudonymKey) -> str:
    """A schema-3 database with history (no service role yet)."""
    build_old_database(empty_url, key, pseudonym_key, 3)
    return empty_url


def actor_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, pseudonym, role, created_at FROM actors ORDER BY id")
        return [tuple(row) for row in rows]


def add_actor(engine: Engine, pseudonym: str, role: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Base.metadata.tables["actors"]).values(pseudonym=pseudonym, role=role))


def columns(engine: Engine, table: str) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns(table)}


def schema_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(SchemaInfo.version)).scalar_one())


def events(engine: Engine) -> list[AuditEvent]:
    with Session(engine) as s:
        return list(s.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars())


# -- the record ---------------------------------------------------------------------------------


def test_record_matches_the_models() -> None:
    """Every version after the first has a recorded change, and each change is today's column or check."""
    assert {change.version for change in SCHEMA_CHANGES} == set(
        range(OLDEST_MIGRATABLE + 1, SCHEMA_VERSION + 1)
    )
    assert [change.version for change in SCHEMA_CHANGES] == sorted(c.version for c in SCHEMA_CHANGES)
    for change in SCHEMA_CHANGES:
        if isinstance(change, WidenedCheck):
            assert str(model_check(change).sqltext) == (
                f"{change.column} IN ({', '.join(repr(v) for v in change.before + change.added)})"
            ), change.name
            assert not set(change.before) & set(change.added), change.name
            continue
        column = Base.metadata.tables[change.table].c[change.column]
        assert column.nullable and column.server_default is None and column.default is None, change.name
        assert type(column.type) is type(change.type_), change.name
        assert getattr(column.type, "length", None) == getattr(change.type_, "length", None), change.name
        assert bool(column.index) == change.index, change.name


def test_old_ddl_of_this_version_is_todays_ddl(empty_url: str) -> None:
    engine = make_engine(empty_url)
    try:
        current = [str(CreateTable(t).compile(dialect=engine.dialect)) for t in Base.metadata.sorted_tables]
        assert [s for s in old_schema_ddl(engine, SCHEMA_VERSION) if "CREATE TABLE" in s] == current
        assert "model_answer" not in "".join(old_schema_ddl(engine, 2))
        assert "image_sha256" not in "".join(old_schema_ddl(engine, 1))
        assert "'service'" not in "".join(old_schema_ddl(engine, 3))
        assert "'service'" not in "".join(old_schema_ddl(engine, 1))
        assert "CHECK (role IN ('clinician', 'reviewer', 'admin'))" in "".join(old_schema_ddl(engine, 3))
    finally:
        engine.dispose()


# -- migrating ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_old_database_is_migrated_verified_and_written(
    empty_url: str, key: AuditKey, pseudonym_key: PseudonymKey, version: int, tmp_path: Path
) -> None:
    build_old_database(empty_url, key, pseudonym_key, version)
    engine = make_engine(empty_url)
    try:
        with pytest.raises(
            SchemaVersionError, match=rf"older medvlm \(schema {version}, .*`medvlm db migrate`"
        ):
            Store.open(engine, key)
        before = events(engine)
        actors_before = actor_rows(engine)
        result = migrate_db(engine, key)
        expected = tuple(c.name for c in changes_after(version) if isinstance(c, AddedColumn))
        assert result.migrated and result.from_version == version and result.to_version == SCHEMA_VERSION
        assert result.added == expected and result.seq == len(before) + 1
        assert result.changed == ("actors.ck_actors_role",)
        assert actor_rows(engine) == actors_before  # the rebuilt table keeps ids, pseudonyms, roles
        after = events(engine)
        assert [(e.seq, e.hash) for e in after[:-1]] == [(e.seq, e.hash) for e in before]  # history untouched
        last = after[-1]
        assert (last.actor, last.action, last.object_kind, last.object_id) == (
            "system",
            MIGRATE_ACTION,
            "store",
            "1",
        )
        assert json.loads(last.payload) == {
            "from_version": version,
            "to_version": SCHEMA_VERSION,
            "added_columns": list(expected),
            "changed_constraints": ["actors.ck_actors_role"],
        }
        assert columns(engine, "interactions") == set(Base.metadata.tables["interactions"].c.keys())
        assert "ix_interactions_image_sha256" in {
            ix["name"] for ix in inspect(engine).get_indexes("interactions")
        }
        assert schema_version(engine) == SCHEMA_VERSION

        store = Store.open(engine, key)
        assert store.verify().ok
        records = store.check_records()
        assert records.ok and records.checked == 4, records.reason
        old = store.get_interaction(2)
        assert old.model_answer is None and old.model_text is None  # abstained before schema 3: no model text
        assert store.get_interaction(1).model_text == "Yes, a small left pleural effusion."
        assert [c.id for _, c in store.approved_corrections()] == [1]

        clinician = actor_pseudonym(pseudonym_key, "clinician")
        new = store.record_interaction(
            actor=clinician,
            data=InteractionCreate(
                study_pseudonym=study_pseudonym(pseudonym_key, "1.2.826.0.1.3680043.8.498.778"),
                question="Is there a nodule?",
                answer="The model is not confident enough to answer.",
                model_answer="Yes, a nodule in the right upper lobe.",
                model_version="builtin-0.2.0",
                abstained=True,
                confidence=0.52,
                image_sha256=IMAGE_SHA,
            ),
        )
        assert new.id == 3 and new.model_text == "Yes, a nodule in the right upper lobe."
        correction = store.propose_correction(
            interaction_id=3, author=clinician, corrected_answer="No nodule."
        )
        store.review_correction(
            correction_id=correction.id,
            reviewer=actor_pseudonym(pseudonym_key, "reviewer"),
            decision="approved",
        )
        store.review_correction(
            correction_id=2, reviewer=actor_pseudonym(pseudonym_key, "reviewer"), decision="approved"
        )
        assert store.verify().ok
        records = store.check_records()
        assert records.ok and records.checked == 6, records.reason

        # schema 4: a service (batch job) records interactions, and only that
        service = actor_pseudonym(pseudonym_key, "service:medvlm-check-reports")
        store.register_actor(pseudonym=service, role="service")
        asked = store.record_interaction(
            actor=service,
            data=InteractionCreate(
                study_pseudonym=study_pseudonym(pseudonym_key, "1.2.826.0.1.3680043.8.498.779"),
                question="Is the report consistent with itself?",
                answer="No inconsistency found.",
                model_version="rules-1",
            ),
        )
        with pytest.raises(RoleError, match=r"^a service cannot correct answers$"):
            store.propose_correction(interaction_id=asked.id, author=service, corrected_answer="No.")
        assert store.stats().actors == {"clinician": 1, "reviewer": 1, "admin": 1, "service": 1}
        assert store.verify().ok
        records = store.check_records()
        assert records.ok and records.checked == 7, records.reason

        images = tmp_path / "cases"
        images.mkdir()
        (images / f"{IMAGE_SHA}.png").write_bytes(IMAGE)
        exported = store.export_preferences(tmp_path / "prefs.jsonl", images=images)
        lines = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
        assert [line["rejected"] for line in lines] == (
            ["Yes, a small left pleural effusion.", "Yes, a nodule in the right upper lobe."]
            if version >= 2
            else ["Yes, a nodule in the right upper lobe."]  # schema-1 rows have no case image
        )
        assert len(exported.skipped_no_model_text) + len(exported.skipped_no_image) == (
            1 if version >= 2 else 2
        )
        assert store.verify().ok and store.check_records().ok
    finally:
        engine.dispose()


def test_migrate_is_idempotent(schema2_url: str, key: AuditKey) -> None:
    engine = make_engine(schema2_url)
    try:
        assert migrate_db(engine, key).migrated
        counts = row_counts(engine)
        again = migrate_db(engine, key)
        assert not again.migrated and again.seq is None and again.added == ()
        assert again.from_version == again.to_version == SCHEMA_VERSION
        assert row_counts(engine) == counts
    finally:
        engine.dispose()


def test_current_database_is_left_alone(engine: Engine, key: AuditKey) -> None:
    counts = row_counts(engine)
    result = migrate_db(engine, key)
    assert not result.migrated and result.from_version == SCHEMA_VERSION
    assert row_counts(engine) == counts


def test_a_failed_migration_changes_nothing(
    schema2_url: str, key: AuditKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(schema2_url)
    try:
        counts = row_counts_old(engine)

        def fail(*_args: Any, **_kwargs: Any) -> None:
            raise ValidationError("the audit field x is not a short identifier (free text is never audited)")

        monkeypatch.setattr("app.store.migrate.append_event", fail)
        with pytest.raises(ValidationError):
            migrate_db(engine, key)
        assert "model_answer" not in columns(engine, "interactions")  # the ALTER TABLE was rolled back
        assert schema_version(engine) == 2 and row_counts_old(engine) == counts
        monkeypatch.undo()
        assert migrate_db(engine, key).added == ("interactions.model_answer",)
    finally:
        engine.dispose()


def test_a_failed_role_migration_changes_nothing(
    schema3_url: str, key: AuditKey, pseudonym_key: PseudonymKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The constraint change (a table rebuild on SQLite) is rolled back with the rest."""
    engine = make_engine(schema3_url)
    try:
        counts, actors = row_counts_old(engine), actor_rows(engine)

        def fail(*_args: Any, **_kwargs: Any) -> None:
            raise ValidationError("the audit field x is not a short identifier (free text is never audited)")

        monkeypatch.setattr("app.store.migrate.append_event", fail)
        with pytest.raises(ValidationError):
            migrate_db(engine, key)
        assert (
            schema_version(engine) == 3 and row_counts_old(engine) == counts and actor_rows(engine) == actors
        )
        with pytest.raises(IntegrityError):  # the old constraint is still there
            add_actor(engine, actor_pseudonym(pseudonym_key, "job"), "service")
        monkeypatch.undo()
        result = migrate_db(engine, key)
        assert result.added == () and result.changed == ("actors.ck_actors_role",)
        add_actor(engine, actor_pseudonym(pseudonym_key, "job"), "service")
        with pytest.raises(IntegrityError):  # still a CHECK constraint, just wider
            add_actor(engine, actor_pseudonym(pseudonym_key, "other"), "superuser")
    finally:
        engine.dispose()


def test_role_migration_keeps_foreign_keys_and_the_chain(schema3_url: str, key: AuditKey) -> None:
    """After the rebuild every child row still finds its actor, and a row without one is refused."""
    engine = make_engine(schema3_url)
    try:
        chain_before = [(e.seq, e.hash) for e in events(engine)]
        migrate_db(engine, key)
        assert [(e.seq, e.hash) for e in events(engine)][:-1] == chain_before
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
                assert conn.exec_driver_sql("PRAGMA defer_foreign_keys").scalar_one() == 0
            orphans = conn.exec_driver_sql(
                "SELECT count(*) FROM interactions i "
                "LEFT JOIN actors a ON a.id = i.actor_id WHERE a.id IS NULL"
            ).scalar_one()
            assert orphans == 0
        fks = {fk["referred_table"] for fk in inspect(engine).get_foreign_keys("interactions")}
        assert fks == {"actors"}
        assert {c["name"] for c in inspect(engine).get_check_constraints("actors")} == {"ck_actors_role"}
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.exec_driver_sql("UPDATE interactions SET actor_id = 999 WHERE id = 1")
        store = Store.open(engine, key)
        assert store.verify().ok and store.check_records().ok
    finally:
        engine.dispose()


def test_a_role_check_widened_by_hand_is_not_changed_again(schema3_url: str, key: AuditKey) -> None:
    engine = make_engine(schema3_url)
    try:
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "ALTER TABLE actors DROP CONSTRAINT ck_actors_role, ADD CONSTRAINT ck_actors_role "
                    "CHECK (role IN ('clinician', 'reviewer', 'admin', 'service'))"
                )
            result = migrate_db(engine, key)
            assert result.migrated and result.changed == ()
        else:
            assert migrate_db(engine, key).changed == ("actors.ck_actors_role",)
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE medvlm_schema SET version = 3")
            again = migrate_db(engine, key)  # a version row put back by hand: nothing to rebuild
            assert again.migrated and again.changed == ()
        assert Store.open(engine, key).verify().ok
    finally:
        engine.dispose()


def row_counts_old(engine: Engine) -> dict[str, int]:
    """Rows per table and the head's seq, without reading columns an old schema lacks."""
    with engine.connect() as conn:
        counts = {
            t.name: int(conn.exec_driver_sql(f"SELECT count(*) FROM {t.name}").scalar_one())
            for t in Base.metadata.sorted_tables
        }
        counts["audit_head.seq"] = int(conn.execute(select(AuditHead.seq)).scalar_one())
    return counts


def test_wrong_key_is_refused_before_anything_changes(schema2_url: str) -> None:
    engine = make_engine(schema2_url)
    try:
        with pytest.raises(AuditKeyError, match="not the key this database was created with"):
            migrate_db(engine, AuditKey(b"o" * 32, "other"))
        assert schema_version(engine) == 2 and "model_answer" not in columns(engine, "interactions")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            SCHEMA_VERSION + 1,
            rf"made by a newer medvlm \(schema {SCHEMA_VERSION + 1}, this one reads {SCHEMA_VERSION}\); "
            "upgrade medvlm instead of migrating",
        ),
        (
            0,
            rf"unknown schema version 0 \(this medvlm migrates {OLDEST_MIGRATABLE} to {SCHEMA_VERSION}\); "
            "it was not changed",
        ),
    ],
)
def test_newer_and_unknown_versions_are_refused(
    engine: Engine, key: AuditKey, version: int, message: str
) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE medvlm_schema SET version = :v"), {"v": version})
    counts = row_counts(engine)
    with pytest.raises(SchemaVersionError, match=f"^the database (was|has an) .*{message}$") as info:
        migrate_db(engine, key)
    assert "\n" not in str(info.value)
    assert row_counts(engine) == counts and schema_version(engine) == version


def test_database_without_schema_is_refused(empty_url: str, key: AuditKey) -> None:
    engine = make_engine(empty_url)
    try:
        with pytest.raises(SchemaVersionError, match=r"no medvlm schema; run `medvlm db init` first"):
            migrate_db(engine, key)
    finally:
        engine.dispose()


def test_a_column_added_by_hand_is_not_added_again(schema2_url: str, key: AuditKey) -> None:
    """The manual step docs/DATABASE.md gave before this command, done halfway (no version bump)."""
    engine = make_engine(schema2_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE interactions ADD COLUMN model_answer TEXT")
        result = migrate_db(engine, key)
        assert result.migrated and result.added == ()
        store = Store.open(engine, key)
        assert store.verify().ok and store.check_records().ok
    finally:
        engine.dispose()


def test_concurrent_migrations_migrate_once(schema2_url: str, key: AuditKey) -> None:
    results: list[Any] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        engine = make_engine(schema2_url)
        try:
            barrier.wait()
            results.append(migrate_db(engine, key))
        except Exception as e:  # collected and asserted below
            results.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.migrated for r in results) == [False, False, True], results
    engine = make_engine(schema2_url)
    try:
        assert [e.action for e in events(engine)].count(MIGRATE_ACTION) == 1
        assert Store.open(engine, key).verify().ok
    finally:
        engine.dispose()


# -- the command --------------------------------------------------------------------------------


def test_db_migrate_command(
    empty_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", SITE_KEY)
    monkeypatch.setenv("MEDVLM_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MEDVLM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDVLM_DATABASE_URL", raising=False)
    from data_prep.pseudonym import resolve_key

    site = resolve_key(create=False)
    build_old_database(empty_url, AuditKey.derive(site), site, 2)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        assert SITE_KEY not in out + err
        return code, out, err

    code, _, err = run("db", "verify", "--url", empty_url)
    assert code == 1 and "`medvlm db migrate`" in err and err.count("\n") == 1
    code, out, _ = run("db", "migrate", "--url", empty_url, "--json")
    report = json.loads(out)
    assert code == 0 and report["migrated"] is True and report["from_version"] == 2
    assert report["schema_version"] == SCHEMA_VERSION and report["added_columns"] == [
        "interactions.model_answer"
    ]
    assert report["changed_constraints"] == ["actors.ck_actors_role"]
    code, out, _ = run("db", "migrate", "--url", empty_url)
    assert code == 0 and "migrated: False" in out and "audit_seq: None" in out
    code, out, _ = run("db", "verify", "--url", empty_url, "--json")
    assert code == 0 and json.loads(out)["ok"] is True and json.loads(out)["records_checked"] == 4

    # the old abstained answer has no model text: its approved correction is counted, not exported
    engine = make_engine(empty_url)
    try:
        Store.open(engine, AuditKey.derive(site)).review_correction(
            correction_id=2, reviewer=actor_pseudonym(site, "reviewer"), decision="approved"
        )
    finally:
        engine.dispose()
    (tmp_path / "home" / "cases").mkdir(parents=True)
    (tmp_path / "home" / "cases" / f"{IMAGE_SHA}.png").write_bytes(IMAGE)
    code, out, _ = run("db", "export-preferences", "--url", empty_url, "--out", str(tmp_path / "p.jsonl"))
    assert code == 0 and "count: 1" in out and "skipped_no_model_text: 1" in out
    assert run("db", "verify", "--url", empty_url)[0] == 0

    engine = create_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE medvlm_schema SET version = 99"))
    engine.dispose()
    code, _, err = run("db", "migrate", "--url", empty_url)
    assert code == 1 and err.count("\n") == 1 and "newer medvlm (schema 99" in err


def test_db_migrate_missing_sqlite_file_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", SITE_KEY)
    path = tmp_path / "absent.db"
    assert main(["db", "migrate", "--url", f"sqlite:///{path}"]) == 1
    assert "no database file at" in capsys.readouterr().err and not path.exists()


def test_init_then_migrate_on_a_new_database(empty_url: str, key: AuditKey) -> None:
    engine = make_engine(empty_url)
    try:
        init_db(engine, key)
        assert not migrate_db(engine, key).migrated
    finally:
        engine.dispose()


def test_postgres_role_that_cannot_alter_is_refused(pg_server: Engine, key: AuditKey) -> None:
    """The app's role (SELECT/INSERT, UPDATE on two tables, as docs/DATABASE.md grants) cannot migrate."""
    suffix = uuid.uuid4().hex[:12]
    schema, role = f"medvlm_migrate_{suffix}", f"medvlm_app_{suffix}"
    with pg_server.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        owner = make_engine(url)
        init_db(owner, key)
        with owner.begin() as conn:
            conn.exec_driver_sql("UPDATE medvlm_schema SET version = 2")
            conn.exec_driver_sql("ALTER TABLE interactions DROP COLUMN model_answer")
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            conn.exec_driver_sql(f'GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
            conn.exec_driver_sql(f'GRANT UPDATE ON corrections, audit_head TO "{role}"')
        app = make_engine(url.set(username=role, password=None))
        try:
            with pytest.raises(SchemaVersionError) as info:
                migrate_db(app, key)
        finally:
            app.dispose()
        assert str(info.value) == (
            "the database refused the migration (InsufficientPrivilege); "
            "run it as the owner of the medvlm tables"
        )
        assert schema_version(owner) == 2 and "model_answer" not in columns(owner, "interactions")
        assert migrate_db(owner, key).added == ("interactions.model_answer",)
        owner.dispose()
    finally:
        with pg_server.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
