"""Creating the tables and checking that a database was made by this schema version.

A database made by another :data:`~app.store.models.SCHEMA_VERSION` is refused with one sentence
rather than read or written wrongly; an older one is upgraded by ``medvlm db migrate``
(``app.store.migrate``).
"""

from __future__ import annotations

from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.store.audit import AuditKey, append_event, lock_head
from app.store.engine import unavailable
from app.store.errors import SchemaVersionError
from app.store.models import GENESIS_HASH, SCHEMA_VERSION, AuditHead, Base, SchemaInfo


def read_schema_version(session: Session) -> int | None:
    """The schema version stored in the database, None when it has no medvlm tables.

    Args:
        session: any session.

    Returns:
        The version, or None.
    """
    if not inspect(session.connection()).has_table(SchemaInfo.__tablename__):
        return None
    info = session.get(SchemaInfo, 1)
    return info.version if info else None


def check_schema(session: Session) -> None:
    """Refuse a database without the medvlm schema or made by another schema version.

    Args:
        session: any session.

    Raises:
        SchemaVersionError: with one sentence saying which version was found and which is expected.
    """
    version = read_schema_version(session)
    if version is None:
        raise SchemaVersionError("the database has no medvlm schema; run `medvlm db init` first")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database was made by a newer medvlm (schema {version}, this one reads {SCHEMA_VERSION}); "
            "upgrade medvlm"
        )
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database was made by an older medvlm (schema {version}, this one reads {SCHEMA_VERSION}); "
            "run `medvlm db migrate` before use"
        )


def init_db(engine: Engine, key: AuditKey) -> bool:
    """Create the tables, the schema-version row and the audit head, and audit the creation.

    Idempotent: an existing database of this schema version with this key is left as it is.

    Args:
        engine: the engine (``app.store.engine.make_engine``).
        key: the audit key the database will be bound to.

    Returns:
        True when the database was created now, False when it already existed.

    Raises:
        SchemaVersionError: when an existing database has another schema version.
        AuditKeyError: when an existing database was created with another key.
        DatabaseUnavailableError: when the database cannot be reached.
    """
    try:
        with Session(engine) as session, session.begin():
            if read_schema_version(session) is not None:
                check_schema(session)
                lock_head(session, key, lock=False)  # same key, or AuditKeyError
                return False
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            if session.get(SchemaInfo, 1) is not None:  # another process initialised it meanwhile
                check_schema(session)
                return False
            session.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
            session.add(AuditHead(id=1, seq=0, hash=GENESIS_HASH, key_check=key.check_value()))
            session.flush()
            append_event(
                session,
                key,
                actor="system",
                action="store.init",
                object_kind="store",
                object_id="1",
                payload={"schema_version": SCHEMA_VERSION},
            )
        return True
    except DBAPIError as e:
        raise unavailable(engine, e) from e


def current_head(session: Session) -> AuditHead | None:
    """The audit head row, or None before ``init_db``."""
    return session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one_or_none()
