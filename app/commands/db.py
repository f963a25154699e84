"""Subcommands ``db init``, ``db migrate``, ``db verify``, ``db stats`` and ``db export-preferences``.

``db migrate`` upgrades a database made by an older medvlm to this schema version in one transaction
and audits it (``app.store.migrate``); it is idempotent, and refuses a newer or unknown version.

``db export-preferences`` writes the approved corrections not exported before as DPO preference
pairs (the JSONL ``training.data.load_preferences`` reads), resolving each interaction's image id to
``<images>/<sha256>.png`` (``--images``, default ``$MEDVLM_HOME/cases``), and audits the export.

The database URL is ``--url``, else ``$MEDVLM_DATABASE_URL``, else ``sqlite:///$MEDVLM_HOME/medvlm.db``
(``$MEDVLM_HOME`` defaults to ``~/.cache/medvlm``). The audit key is derived from the site's
pseudonymisation key (``data_prep.pseudonym.resolve_key``: ``$MEDVLM_PSEUDONYM_KEY`` or the
per-install key file) and is never printed. SQLAlchemy and the store are imported inside the handlers.

Exit codes: 0 success (verify: the chain is intact), 1 a failed check or an unreachable / wrong
database (verify: one sentence naming the first bad seq), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.store import AuditKey

DATABASE_URL_ENV = "MEDVLM_DATABASE_URL"
DEFAULT_DB_NAME = "medvlm.db"
CASES_DIR_NAME = "cases"


def register(sub: Any) -> None:
    """Add the ``db`` subcommands to the top-level subparsers.

    Args:
        sub: the top-level ``argparse`` subparsers object.
    """
    parser = sub.add_parser(
        "db",
        help="create, verify or count the local database and its tamper-evident audit log",
        description="The local database (SQLite by default, PostgreSQL in deployment) and its audit log.",
    )
    actions = parser.add_subparsers(dest="db_command", metavar="ACTION")
    parser.set_defaults(func=lambda _args: _usage(parser))
    for name, handler, text in (
        ("init", _init, "create the tables and the audit log (idempotent)"),
        (
            "migrate",
            _migrate,
            "upgrade a database made by an older medvlm to this schema version, audited (idempotent)",
        ),
        (
            "verify",
            _verify,
            "check the audit chain and the rows against it; exit 1 naming the first bad seq or row",
        ),
        ("stats", _stats, "count actors, interactions, corrections, reviews and audit events"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument(
            "--url",
            default=None,
            help=f"database URL (default ${DATABASE_URL_ENV}, else sqlite:///$MEDVLM_HOME/{DEFAULT_DB_NAME})",
        )
        action.add_argument("--json", action="store_true", help="print one JSON object")
        action.set_defaults(func=handler)
    text = "write approved corrections not exported before as DPO preference pairs (JSONL) and audit it"
    export = actions.add_parser("export-preferences", help=text, description=text)
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    export.add_argument(
        "--url",
        default=None,
        help=f"database URL (default ${DATABASE_URL_ENV}, else sqlite:///$MEDVLM_HOME/{DEFAULT_DB_NAME})",
    )
    export.add_argument(
        "--since",
        type=int,
        default=None,
        metavar="SEQ",
        help="only corrections approved after this audit seq (see `medvlm db verify --json` head_seq)",
    )
    export.add_argument(
        "--images",
        type=Path,
        default=None,
        help=f"folder of the case images <sha256>.png (default $MEDVLM_HOME/{CASES_DIR_NAME})",
    )
    export.add_argument(
        "--all", action="store_true", dest="include_exported", help="also corrections exported before"
    )
    export.add_argument("--json", action="store_true", help="print one JSON object")
    export.set_defaults(func=_export_preferences)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def database_url(explicit: str | None) -> str:
    """The database URL: ``--url``, else ``$MEDVLM_DATABASE_URL``, else SQLite under ``$MEDVLM_HOME``."""
    if explicit:
        return explicit
    env = os.environ.get(DATABASE_URL_ENV)
    if env:
        return env
    from medvlm.builtin import default_home

    return f"sqlite:///{default_home() / DEFAULT_DB_NAME}"


def _audit_key(*, create: bool) -> AuditKey:
    from app.store import AuditKey
    from data_prep.pseudonym import resolve_key

    return AuditKey.derive(resolve_key(create=create))


def _fail(command: str, error: BaseException) -> int:
    sys.stderr.write(f"medvlm db {command}: {error}\n")
    return 1


def _init(args: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from app.store import SCHEMA_VERSION, StoreError, init_db, make_engine, safe_url
    from data_prep.errors import PseudonymKeyError

    url = database_url(args.url)
    try:
        key = _audit_key(create=True)
        engine = make_engine(url)
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            created = init_db(engine, key)
        finally:
            engine.dispose()
    except (StoreError, PseudonymKeyError, OSError) as e:
        return _fail("init", e)
    _emit({"url": safe_url(url), "created": created, "schema_version": SCHEMA_VERSION}, as_json=args.json)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.store import StoreError, check_connection, make_engine, migrate_db, safe_url
    from data_prep.errors import PseudonymKeyError

    url = database_url(args.url)
    try:
        key = _audit_key(create=False)
        engine = make_engine(url)
        try:
            check_connection(engine)  # a missing SQLite file is refused, not created
            result = migrate_db(engine, key)
        finally:
            engine.dispose()
    except (StoreError, PseudonymKeyError) as e:
        return _fail("migrate", e)
    fields = {
        "url": safe_url(url),
        "migrated": result.migrated,
        "from_version": result.from_version,
        "schema_version": result.to_version,
        "added_columns": list(result.added),
        "changed_constraints": list(result.changed),
        "audit_seq": result.seq,
    }
    _emit(fields, as_json=args.json)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from app.store import Store, StoreError, make_engine, safe_url
    from data_prep.errors import PseudonymKeyError

    url = database_url(args.url)
    try:
        key = _audit_key(create=False)
        engine = make_engine(url)
        try:
            store = Store.open(engine, key)
            chain = store.verify()
            records = store.check_records() if chain.ok else None
        finally:
            engine.dispose()
    except (StoreError, PseudonymKeyError) as e:
        return _fail("verify", e)
    fields = {
        "url": safe_url(url),
        "ok": chain.ok and records is not None and records.ok,
        "events": chain.events,
        "first_bad_seq": chain.first_bad_seq,
        "reason": chain.reason,
        "head_seq": chain.head_seq,
        "head_hash": chain.head_hash,
        "records_checked": records.checked if records else None,
        "first_bad_record": records.first_bad if records else None,
        "records_reason": records.reason if records else None,
    }
    if args.json:
        _emit(fields, as_json=True)
    elif fields["ok"]:
        shown = ("url", "events", "records_checked", "head_seq", "head_hash")
        _emit({k: fields[k] for k in shown}, as_json=False)
    if not chain.ok:
        where = f"seq {chain.first_bad_seq}"
        sys.stderr.write(f"medvlm db verify: the audit log fails at {where}: {chain.reason}\n")
        return 1
    if records is not None and not records.ok:
        sys.stderr.write(f"medvlm db verify: the stored rows do not match the audit log: {records.reason}\n")
        return 1
    return 0


def _stats(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from app.store import Store, StoreError, make_engine, safe_url
    from data_prep.errors import PseudonymKeyError

    url = database_url(args.url)
    try:
        key = _audit_key(create=False)
        engine = make_engine(url)
        try:
            stats = Store.open(engine, key).stats()
        finally:
            engine.dispose()
    except (StoreError, PseudonymKeyError) as e:
        return _fail("stats", e)
    _emit({"url": safe_url(url), **asdict(stats)}, as_json=args.json)
    return 0


def cases_dir(explicit: Path | None) -> Path:
    """The case-image folder: ``--images``, else ``$MEDVLM_HOME/cases``."""
    if explicit is not None:
        return explicit
    from medvlm.builtin import default_home

    return default_home() / CASES_DIR_NAME


def _export_preferences(args: argparse.Namespace) -> int:
    from app.store import Store, StoreError, make_engine, safe_url
    from data_prep.errors import PseudonymKeyError

    url = database_url(args.url)
    try:
        key = _audit_key(create=False)
        engine = make_engine(url)
        try:
            result = Store.open(engine, key).export_preferences(
                args.out,
                images=cases_dir(args.images),
                since=args.since,
                include_exported=args.include_exported,
            )
        finally:
            engine.dispose()
    except (StoreError, PseudonymKeyError) as e:
        return _fail("export-preferences", e)
    fields = {
        "url": safe_url(url),
        "out": str(result.out),
        "count": result.count,
        "sha256": result.sha256,
        "audit_seq": result.seq,
        "already_exported": result.already_exported,
        "skipped_unchanged": len(result.skipped_unchanged),
        "skipped_no_image": len(result.skipped_no_image),
        "skipped_no_model_text": len(result.skipped_no_model_text),
    }
    _emit(fields, as_json=args.json)
    return 0


def _emit(fields: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
        return
    for key, value in fields.items():
        sys.stdout.write(f"{key}: {value}\n")
