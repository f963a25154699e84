"""Database URL → SQLAlchemy engine, with the per-backend settings the audit chain relies on.

SQLite (the embedded default): WAL journal (readers never block the writer), foreign keys on,
a busy timeout so concurrent writers wait instead of failing, ``synchronous=FULL`` (an audit event
that was committed survives a power cut), and every transaction opened with ``BEGIN IMMEDIATE``:
the writer takes the file's write lock at the start, so two transactions can never read the same
audit head and both append after it.

PostgreSQL (deployment): ``postgresql+psycopg://user@host:5432/db``; appends are serialised by a
row lock on the audit head (``app.store.audit``). Add ``?options=-csearch_path%3Dmedvlm`` to the URL
to keep the tables in their own schema. Connections are pre-pinged and time out after
``connect_timeout`` seconds instead of hanging.

The engine is built in the entry point and passed down; nothing here is global.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from app.store.errors import DatabaseUnavailableError

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 5


def parse_url(url: str | URL) -> URL:
    """Parse a database URL.

    Args:
        url: a SQLAlchemy URL (``sqlite:///path/medvlm.db``, ``postgresql+psycopg://...``).

    Returns:
        The parsed URL.

    Raises:
        DatabaseUnavailableError: when the text is not a URL or names a backend other than SQLite
            or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise DatabaseUnavailableError("the database URL is not a valid SQLAlchemy URL") from e
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseUnavailableError(
            f"the database backend {parsed.get_backend_name()!r} is not supported (use sqlite or postgresql)"
        )
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as text with any password replaced by ``***`` (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Build an engine for ``url`` with the settings described in the module docstring.

    Nothing is connected yet; use :func:`check_connection` to fail early.

    Args:
        url: the database URL.
        echo: log every SQL statement (debugging only: statements carry no PHI, parameters may).

    Returns:
        The engine.

    Raises:
        DatabaseUnavailableError: for an invalid URL, an unsupported backend or a missing driver.
    """
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as e:
        raise DatabaseUnavailableError(f"no driver for the database URL {safe_url(parsed)}") from e
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """Pragmas on every new connection, and ``BEGIN IMMEDIATE`` for every transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of pysqlite's deferred BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit (``expire_on_commit=False``)."""
    return sessionmaker(engine, expire_on_commit=False)


def check_connection(engine: Engine) -> None:
    """Open and close one connection, so an unreachable database fails here with a clear message.

    Args:
        engine: the engine to test.

    Raises:
        DatabaseUnavailableError: when no connection can be made, or a SQLite file does not exist
            (connecting would create an empty one).
    """
    database = engine.url.database
    is_file_db = engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if is_file_db and not Path(str(database)).expanduser().is_file():
        raise DatabaseUnavailableError(f"there is no database file at {database}; run `medvlm db init`")
    try:
        with engine.connect():
            pass
    except DBAPIError as e:
        raise unavailable(engine, e) from e


def unavailable(engine: Engine, error: BaseException) -> DatabaseUnavailableError:
    """The one-sentence error for a failed connection or a database that stayed busy.

    Args:
        engine: the engine that failed (its URL is shown without the password).
        error: the driver's exception (only its type name is shown: driver messages can quote SQL).

    Returns:
        The error to raise.
    """
    cause = type(getattr(error, "orig", None) or error).__name__
    return DatabaseUnavailableError(
        f"the database at {safe_url(engine.url)} cannot be reached or stayed busy ({cause})"
    )
