"""The local database: actors, interactions, corrections, reviews and a tamper-evident audit log.

SQLAlchemy 2.0 ORM on SQLite (embedded default) or PostgreSQL (deployment). Build the engine and
the :class:`Store` in the entry point and pass them down::

    engine = make_engine(url)
    key = AuditKey.derive(data_prep.pseudonym.resolve_key())
    init_db(engine, key)                  # once (``medvlm db init``)
    store = Store.open(engine, key)
    store.record_interaction(actor=..., data=InteractionCreate.from_answer(answer, ...))

Modules: ``models`` (tables), ``engine`` (URL → engine, SQLite pragmas), ``schema`` (create and
version check), ``migrate`` (an older schema version → this one, audited), ``audit`` (append and
verify the hash chain), ``integrity`` (rows against their audit events), ``scrub`` (free-text
identifiers), ``ids`` (pseudonym formats), ``export`` (approved corrections as preference pairs for
DPO), ``records`` (plain records in and out), ``repository`` (the :class:`Store`), ``errors``.
See docs/DATABASE.md.
"""

from __future__ import annotations

from app.store.audit import AuditKey, VerifyResult, verify
from app.store.engine import check_connection, make_engine, safe_url
from app.store.errors import (
    AuditKeyError,
    DatabaseUnavailableError,
    ExportError,
    NotFoundError,
    PHIError,
    RoleError,
    SchemaVersionError,
    StateError,
    StoreError,
    ValidationError,
)
from app.store.export import ExportResult, case_image_path, image_content_id
from app.store.ids import actor_pseudonym
from app.store.integrity import RecordCheck, check_records
from app.store.migrate import MigrationResult, migrate_db
from app.store.models import SCHEMA_VERSION
from app.store.records import (
    ActorRecord,
    CorrectionRecord,
    InteractionCreate,
    InteractionRecord,
    ReviewRecord,
    StoreStats,
)
from app.store.repository import Store
from app.store.schema import check_schema, init_db

__all__ = [
    "SCHEMA_VERSION",
    "ActorRecord",
    "AuditKey",
    "AuditKeyError",
    "CorrectionRecord",
    "DatabaseUnavailableError",
    "ExportError",
    "ExportResult",
    "InteractionCreate",
    "InteractionRecord",
    "MigrationResult",
    "NotFoundError",
    "PHIError",
    "RecordCheck",
    "ReviewRecord",
    "RoleError",
    "SchemaVersionError",
    "StateError",
    "Store",
    "StoreError",
    "StoreStats",
    "ValidationError",
    "VerifyResult",
    "actor_pseudonym",
    "case_image_path",
    "check_connection",
    "check_records",
    "check_schema",
    "image_content_id",
    "init_db",
    "make_engine",
    "migrate_db",
    "safe_url",
    "verify",
]
