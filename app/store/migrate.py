"""Upgrading a database made by an older medvlm to this schema version, in one audited transaction.

Schema changes are of two kinds, both listed in :data:`SCHEMA_CHANGES` (the record of what each
version changed: it is what ``medvlm db migrate`` applies, and what the tests use to rebuild an old
database's DDL):

- :class:`AddedColumn` (schemas 2 and 3): one nullable column added to an existing table, applied
  as ``ALTER TABLE ... ADD COLUMN`` (and ``CREATE INDEX``).
- :class:`WidenedCheck` (schema 4): a ``column IN (...)`` CHECK constraint that accepts more
  values. PostgreSQL drops and re-adds the named constraint in one ``ALTER TABLE``. SQLite cannot
  alter a constraint, so the table is rebuilt with today's DDL: its rows are copied to a temporary
  table, the table is dropped and created again under the same name (so the other tables' foreign
  keys still point at it), and the rows are copied back with their ids. Foreign keys are deferred
  to the commit for that (``PRAGMA defer_foreign_keys``): every child row finds its parent again
  before the transaction ends, or nothing is committed. The audit log is not touched.

Each migration is the changes, the version bump and a ``store.migrate`` audit event, committed
together or not at all (both backends have transactional DDL).

Old rows keep NULL in the new columns, and keep their values when a constraint is widened. That is
what their audit events say too: an event written before a column existed has no field for it, and
``app.store.integrity.check_records`` reads a missing field as None, so ``medvlm db verify`` passes
on a migrated database without rewriting any event. A schema change that cannot be expressed this
way (a NOT NULL column, a changed type) needs its own step here and its own test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import CheckConstraint, Connection, Engine, String, Text, inspect
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.types import TypeEngine

from app.store.audit import AuditKey, append_event, lock_head
from app.store.engine import unavailable
from app.store.errors import SchemaVersionError
from app.store.ids import SYSTEM_ACTOR
from app.store.models import SCHEMA_VERSION, Base, SchemaInfo
from app.store.schema import read_schema_version

MIGRATE_ACTION: Final = "store.migrate"


@dataclass(frozen=True)
class AddedColumn:
    """One nullable column added by a schema version.

    Attributes:
        version: the schema version that added it (a database of an older version lacks it).
        table: the table.
        column: the column's name.
        type_: its SQL type, as it was added (the model may only widen it later with a new step).
        index: whether the version also created ``ix_<table>_<column>``.
    """

    version: int
    table: str
    column: str
    type_: TypeEngine[Any]
    index: bool = False

    @property
    def name(self) -> str:
        """``table.column``, as recorded in the audit event."""
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class WidenedCheck:
    """A ``column IN (...)`` CHECK constraint that accepts more values from a schema version on.

    Attributes:
        version: the schema version that widened it (a database of an older version refuses
            ``added``).
        table: the table.
        constraint: the constraint's name (``ck_<table>_<column>``).
        column: the column it checks.
        before: the values it accepted before ``version``.
        added: the values ``version`` added (today's constraint accepts ``before + added``, unless a
            later change widened it again).
    """

    version: int
    table: str
    constraint: str
    column: str
    before: tuple[str, ...]
    added: tuple[str, ...]

    @property
    def name(self) -> str:
        """``table.constraint``, as recorded in the audit event."""
        return f"{self.table}.{self.constraint}"

    def sql_before(self) -> str:
        """The constraint's SQL expression before ``version``."""
        return f"{self.column} IN ({', '.join(repr(v) for v in self.before)})"


SchemaChange = AddedColumn | WidenedCheck

SCHEMA_CHANGES: Final[tuple[SchemaChange, ...]] = (
    AddedColumn(2, "interactions", "image_sha256", String(64), index=True),
    AddedColumn(3, "interactions", "model_answer", Text()),
    WidenedCheck(4, "actors", "ck_actors_role", "role", ("clinician", "reviewer", "admin"), ("service",)),
)
"""What each schema version added or widened, oldest first (see ``app.store.models.SCHEMA_VERSION``)."""
OLDEST_MIGRATABLE: Final = 1
"""The first schema version (``medvlm db init`` of the first release); every later change is above."""


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`migrate_db` did.

    Attributes:
        from_version: the version found.
        to_version: the version the database has now (``SCHEMA_VERSION``).
        migrated: False when the database was already current (nothing was written).
        added: the columns added (``table.column``), in order; a column already present (a manual
            step done earlier) is not added again and not listed.
        changed: the CHECK constraints widened (``table.constraint``), in order; one that already
            accepts the new values is left as it is and not listed.
        seq: the audit event recording the migration, None when nothing was migrated.
    """

    from_version: int
    to_version: int
    migrated: bool
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    seq: int | None = None


def changes_after(version: int) -> tuple[SchemaChange, ...]:
    """The recorded changes a database of ``version`` lacks, oldest first."""
    return tuple(change for change in SCHEMA_CHANGES if change.version > version)


def _check_version(version: int | None) -> int:
    if version is None:
        raise SchemaVersionError("the database has no medvlm schema; run `medvlm db init` first")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database was made by a newer medvlm (schema {version}, this one reads {SCHEMA_VERSION}); "
            "upgrade medvlm instead of migrating"
        )
    if version < OLDEST_MIGRATABLE:
        raise SchemaVersionError(
            f"the database has an unknown schema version {version} "
            f"(this medvlm migrates {OLDEST_MIGRATABLE} to {SCHEMA_VERSION}); it was not changed"
        )
    return version


def _add_column(session: Session, change: AddedColumn) -> bool:
    """Add one recorded column (and its index) unless it is already there; True when added."""
    connection = session.connection()
    dialect = connection.dialect
    present = {c["name"] for c in inspect(connection).get_columns(change.table)}
    added = change.column not in present
    if added:
        quote = dialect.identifier_preparer.quote
        column_type = change.type_.compile(dialect=dialect)
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(change.table)} ADD COLUMN {quote(change.column)} {column_type}"
        )
    if change.index:
        index_name = f"ix_{change.table}_{change.column}"
        if index_name not in {ix["name"] for ix in inspect(connection).get_indexes(change.table)}:
            quote = dialect.identifier_preparer.quote
            connection.exec_driver_sql(
                f"CREATE INDEX {quote(index_name)} ON {quote(change.table)} ({quote(change.column)})"
            )
    return added


def _check_text(connection: Connection, table: str, constraint: str) -> str | None:
    """The SQL text of a named CHECK constraint as the database holds it, None when it has none."""
    for check in inspect(connection).get_check_constraints(table):
        if check.get("name") == constraint:
            return str(check.get("sqltext") or "")
    return None


def _model_check(change: WidenedCheck) -> CheckConstraint:
    """Today's definition of the constraint (``app.store.models``)."""
    table = Base.metadata.tables[change.table]
    for constraint in table.constraints:
        if isinstance(constraint, CheckConstraint) and constraint.name == change.constraint:
            return constraint
    raise AssertionError(f"the model has no constraint {change.name}")  # a wrong SCHEMA_CHANGES entry


def _widen_check(session: Session, change: WidenedCheck) -> bool:
    """Make the constraint accept the added values unless it already does; True when changed."""
    connection = session.connection()
    current = _check_text(connection, change.table, change.constraint)
    if current is not None and all(f"'{value}'" in current for value in change.added):
        return False  # already widened (by hand, or by a later model's DDL)
    quote = connection.dialect.identifier_preparer.quote
    if connection.dialect.name == "sqlite":
        _rebuild_sqlite_table(connection, change.table)
    else:
        expression = str(_model_check(change).sqltext)
        connection.exec_driver_sql(
            f"ALTER TABLE {quote(change.table)} DROP CONSTRAINT IF EXISTS {quote(change.constraint)}, "
            f"ADD CONSTRAINT {quote(change.constraint)} CHECK ({expression})"
        )
    return True


def _rebuild_sqlite_table(connection: Connection, name: str) -> None:
    """Recreate one SQLite table with today's DDL, keeping its rows and ids (see the module docstring).

    The other tables' foreign keys name the table, not its storage, so they hold again once it is
    created under the same name; ``defer_foreign_keys`` lets the rows be away in between and is
    reset by SQLite at the commit or rollback.
    """
    table = Base.metadata.tables[name]
    quote = connection.dialect.identifier_preparer.quote
    present = [c["name"] for c in inspect(connection).get_columns(name)]
    columns = ", ".join(quote(c) for c in present if c in table.c)
    copy = quote(f"medvlm_rebuild_{name}")
    connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    connection.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{copy}")
    connection.exec_driver_sql(f"CREATE TEMP TABLE {copy} AS SELECT {columns} FROM {quote(name)}")
    connection.exec_driver_sql(f"DROP TABLE {quote(name)}")
    connection.execute(CreateTable(table))
    for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
        connection.execute(CreateIndex(index))
    connection.exec_driver_sql(f"INSERT INTO {quote(name)} ({columns}) SELECT {columns} FROM temp.{copy}")
    connection.exec_driver_sql(f"DROP TABLE temp.{copy}")
    if connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
        raise SchemaVersionError(
            f"rebuilding the table {name} left rows without their parent; the database was not changed"
        )


def migrate_db(engine: Engine, key: AuditKey) -> MigrationResult:
    """Upgrade the database to ``SCHEMA_VERSION`` in one transaction and audit it.

    The key is checked and the audit head locked before anything changes (a concurrent migration or
    write waits; a second migration then finds the database current). Idempotent: a current
    database is left as it is and nothing is appended.

    Args:
        engine: the engine (``app.store.engine.make_engine``); on PostgreSQL, connected as the
            schema's owner (the app's role cannot ``ALTER TABLE``).
        key: the database's audit key.

    Returns:
        What was done.

    Raises:
        SchemaVersionError: for a database without the medvlm schema, of a newer or an unknown
            version, or whose tables the connecting role may not alter.
        AuditKeyError: when ``key`` is not the database's key (nothing is changed).
        DatabaseUnavailableError: when the database cannot be reached.
    """
    try:
        with Session(engine) as session, session.begin():
            found = _check_version(read_schema_version(session))
            if found == SCHEMA_VERSION:
                lock_head(session, key, lock=False)  # the same key, or AuditKeyError
                return MigrationResult(found, SCHEMA_VERSION, migrated=False)
            lock_head(session, key)  # key checked, appenders and other migrations wait from here
            info = session.get(SchemaInfo, 1, populate_existing=True, with_for_update=True)
            found = _check_version(info.version if info else None)
            if found == SCHEMA_VERSION:  # another migration committed while we waited
                return MigrationResult(found, SCHEMA_VERSION, migrated=False)
            added: list[str] = []
            changed: list[str] = []
            for change in changes_after(found):  # oldest first: a rebuild sees the columns added before
                if isinstance(change, AddedColumn):
                    if _add_column(session, change):
                        added.append(change.name)
                elif _widen_check(session, change):
                    changed.append(change.name)
            assert info is not None  # _check_version refused a missing row
            info.version = SCHEMA_VERSION
            event = append_event(
                session,
                key,
                actor=SYSTEM_ACTOR,
                action=MIGRATE_ACTION,
                object_kind="store",
                object_id="1",
                payload={
                    "from_version": found,
                    "to_version": SCHEMA_VERSION,
                    "added_columns": added,
                    "changed_constraints": changed,
                },
            )
            return MigrationResult(
                found,
                SCHEMA_VERSION,
                migrated=True,
                added=tuple(added),
                changed=tuple(changed),
                seq=event.seq,
            )
    except ProgrammingError as e:
        cause = type(getattr(e, "orig", None) or e).__name__
        raise SchemaVersionError(
            f"the database refused the migration ({cause}); run it as the owner of the medvlm tables"
        ) from e
    except DBAPIError as e:
        raise unavailable(engine, e) from e
