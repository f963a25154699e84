"""The tamper-evident audit log: a keyed hash chain over every write, appended in the write's transaction.

Each event is ``(seq, at, actor, action, object_kind, object_id, payload, prev_hash, hash)`` with::

    hash = HMAC-SHA256(key, canonical({seq, at, actor, action, object_kind, object_id, payload, prev_hash}))

``canonical`` is JSON with sorted keys, no spaces and ASCII escapes; ``payload`` is itself canonical
JSON of non-PHI fields (ids, versions, flags, lengths and keyed digests of free text, never the
text). ``prev_hash`` of event 1 is 64 zeros. Because every hash depends on the one before and on a
key the database does not hold, an edited, deleted, inserted or reordered event breaks the chain at
that event, and nobody without the key can rebuild it. The ``audit_head`` row holds the last seq and
hash, so events cut off the end are noticed too, and a check value of the key, so a wrong key is
refused before anything is appended. (Someone who can write to the database can still roll the
head back to an older state they copied; export ``medvlm db verify --json``'s head hash to a
separate system to rule that out — docs/DATABASE.md.)

Appends are serialised: the head row is read ``FOR UPDATE`` (PostgreSQL) inside a transaction that
SQLite opens with ``BEGIN IMMEDIATE`` (``app.store.engine``), so concurrent writers extend one chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.errors import AuditKeyError, SchemaVersionError, ValidationError
from app.store.models import GENESIS_HASH, AuditEvent, AuditHead

if TYPE_CHECKING:
    from data_prep.pseudonym import PseudonymKey

MIN_KEY_BYTES: Final = 32
KEY_PURPOSE: Final = "medvlm-audit-log"
KEY_CHECK_MESSAGE: Final = b"medvlm audit key check v1"
TOKEN = re.compile(r"[A-Za-z0-9_.:@/#+=-]{0,128}")
"""What a string in an audit event may look like: an id, a version, a status (never free text)."""

PayloadValue = str | int | float | bool | None | Sequence[str]


@dataclass(frozen=True, repr=False)
class AuditKey:
    """The secret that keys the audit chain and the digests of free text.

    Attributes:
        secret: at least 32 bytes.
        source: where it came from (``derived from env``, a file path), for messages; never the key.

    Raises:
        AuditKeyError: on construction, for a secret shorter than 32 bytes.
    """

    secret: bytes
    source: str

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise AuditKeyError(f"the audit key must be at least {MIN_KEY_BYTES} bytes long")

    def __repr__(self) -> str:  # never print the secret
        return f"AuditKey(source={self.source!r})"

    @classmethod
    def derive(cls, pseudonym_key: PseudonymKey) -> AuditKey:
        """Derive the audit key from the site's pseudonymisation key (a separate purpose string).

        Args:
            pseudonym_key: from ``data_prep.pseudonym.resolve_key()``, called by the entry point.

        Returns:
            A key that differs from every pseudonym the site key makes.
        """
        return cls(
            pseudonym_key.digest(KEY_PURPOSE, "v1"),
            f"derived from the pseudonym key ({pseudonym_key.source})",
        )

    def mac(self, data: bytes) -> str:
        """HMAC-SHA256 of ``data`` under this key, as 64 hex characters."""
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()

    def check_value(self) -> str:
        """A value stored with the database that shows whether a key is the one it was made with."""
        return self.mac(KEY_CHECK_MESSAGE)

    def text_digest(self, text: str) -> str:
        """A keyed digest of free text for the audit payload (32 hex characters; not reversible
        or guessable without the key, unlike a plain hash of a short question)."""
        return self.mac(b"text\x00" + text.encode())[:32]


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found.

    Attributes:
        ok: True when every event and the head check out.
        events: how many events were read.
        first_bad_seq: the first sequence number that does not verify (None when ok).
        reason: one sentence saying what is wrong there (empty when ok).
        head_seq: the head's recorded last seq (None when the head row is missing).
        head_hash: the head's recorded last hash; record it elsewhere to detect a rolled-back head.
    """

    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str
    head_seq: int | None
    head_hash: str | None


def canonical(value: object) -> str:
    """Canonical JSON: sorted keys, no spaces, ASCII only, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def utc_stamp(moment: datetime | None = None) -> str:
    """ISO-8601 UTC text with microseconds and ``Z`` (the audit log's time format)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(key: AuditKey, prev_hash: str, event: AuditEvent) -> str:
    """The hash an event must carry, given the hash of the one before it.

    Args:
        key: the audit key.
        prev_hash: the previous event's hash (``GENESIS_HASH`` for seq 1).
        event: the event (its own ``hash`` and ``prev_hash`` fields are not read).

    Returns:
        64 hex characters.
    """
    body = {
        "seq": event.seq,
        "at": event.at,
        "actor": event.actor,
        "action": event.action,
        "object_kind": event.object_kind,
        "object_id": event.object_id,
        "payload": event.payload,
        "prev_hash": prev_hash,
    }
    return key.mac(canonical(body).encode())


def _check_token(name: str, value: str) -> None:
    if not TOKEN.fullmatch(value):
        raise ValidationError(
            f"the audit field {name} is not a short identifier (free text is never audited)"
        )


def payload_text(payload: Mapping[str, PayloadValue]) -> str:
    """Check an audit payload holds no free text and return its canonical JSON.

    Args:
        payload: field name → id, version, number, flag, None, or a list of ids.

    Returns:
        The canonical JSON text stored in the event.

    Raises:
        ValidationError: for a string that is not a short identifier, or another value type.
    """
    for name, value in payload.items():
        _check_token("name", name)
        if isinstance(value, str):
            _check_token(name, value)
        elif isinstance(value, list | tuple):
            for item in value:
                if not isinstance(item, str):
                    raise ValidationError(f"the audit field {name} must be a list of identifiers")
                _check_token(name, item)
        elif value is not None and not isinstance(value, int | float | bool):
            raise ValidationError(f"the audit field {name} has an unsupported type {type(value).__name__}")
    return canonical({k: list(v) if isinstance(v, list | tuple) else v for k, v in payload.items()})


def lock_head(session: Session, key: AuditKey, *, lock: bool = True) -> AuditHead:
    """Return the audit head row, locked for an append, after checking the key against it.

    Args:
        session: a session inside the write transaction.
        key: the audit key.
        lock: take the row lock (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
            holds the file); False only checks the key.

    Returns:
        The head row, locked until the transaction ends when ``lock``.

    Raises:
        SchemaVersionError: when the database was never initialised.
        AuditKeyError: when ``key`` is not the key the database was created with.
    """
    query = select(AuditHead).where(AuditHead.id == 1).execution_options(populate_existing=True)
    head = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if head is None:
        raise SchemaVersionError("the database has no audit head; run `medvlm db init` first")
    if not hmac.compare_digest(head.key_check, key.check_value()):
        raise AuditKeyError("the audit key is not the key this database was created with")
    return head


def append_event(
    session: Session,
    key: AuditKey,
    *,
    actor: str,
    action: str,
    object_kind: str,
    object_id: str | int,
    payload: Mapping[str, PayloadValue],
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction (it commits or rolls back with it).

    Args:
        session: a session inside the write transaction.
        key: the audit key.
        actor: the acting pseudonym, or ``system``.
        action: what happened (``interaction.create``, ``correction.review``, ...).
        object_kind: the kind of object written (``interaction``).
        object_id: its id.
        payload: non-PHI fields (see :func:`payload_text`).

    Returns:
        The new event (flushed).

    Raises:
        SchemaVersionError: when the database was never initialised.
        AuditKeyError: for a wrong key.
        ValidationError: for a field that looks like free text.
    """
    for name, value in (("actor", actor), ("action", action), ("object_kind", object_kind)):
        _check_token(name, value)
    _check_token("object_id", str(object_id))
    text = payload_text(payload)
    head = lock_head(session, key)
    event = AuditEvent(
        seq=head.seq + 1,
        at=utc_stamp(),
        actor=actor,
        action=action,
        object_kind=object_kind,
        object_id=str(object_id),
        payload=text,
        prev_hash=head.hash,
    )
    event.hash = event_hash(key, head.hash, event)
    session.add(event)
    head.seq, head.hash = event.seq, event.hash
    session.flush()
    return event


def verify(session: Session, key: AuditKey, *, batch: int = 1000) -> VerifyResult:
    """Walk the whole chain and report the first event that does not verify.

    Detects an edited event (hash mismatch), a deleted one (a gap in seq), an inserted or reordered
    one (broken ``prev_hash`` link or hash), events cut off the end or added after the head (head
    mismatch), and a wrong key (key check value, then seq 1).

    Args:
        session: any session (read only).
        key: the audit key.
        batch: rows fetched per round trip.

    Returns:
        The result; ``first_bad_seq`` and ``reason`` say where and what when not ok.
    """
    head = session.execute(
        select(AuditHead).where(AuditHead.id == 1).execution_options(populate_existing=True)
    ).scalar_one_or_none()
    head_seq = head.seq if head else None
    head_hash = head.hash if head else None

    def bad(seq: int, events: int, reason: str) -> VerifyResult:
        return VerifyResult(False, events, seq, reason, head_seq, head_hash)

    if head is not None and not hmac.compare_digest(head.key_check, key.check_value()):
        return bad(1, 0, "the audit key is not the key this database was created with")
    expected, prev, count = 1, GENESIS_HASH, 0
    rows = session.execute(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch, populate_existing=True)
    )
    for event in rows.scalars():
        count += 1
        if event.seq != expected:
            return bad(expected, count, f"event {expected} is missing (deleted or renumbered)")
        if event.prev_hash != prev:
            return bad(expected, count, f"event {expected} does not link to event {expected - 1}")
        if not hmac.compare_digest(event.hash, event_hash(key, prev, event)):
            return bad(expected, count, f"event {expected} was altered (its hash does not match)")
        prev, expected = event.hash, expected + 1
    last = expected - 1
    if head is None:
        return bad(last + 1, count, "the audit head row is missing")
    if head.seq > last:
        return bad(last + 1, count, f"events {last + 1} to {head.seq} are missing from the end of the log")
    if head.seq < last:
        return bad(head.seq + 1, count, f"events after {head.seq} were added behind the audit head")
    if head.hash != prev:
        return bad(max(last, 1), count, f"the audit head does not match event {last}")
    return VerifyResult(True, count, None, "", head_seq, head_hash)
