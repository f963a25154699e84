"""Every check of a report recorded in the Store as an interaction of the report-check service.

Each model answer is one interaction (``InteractionCreate.from_answer``: versions, grounding flag,
confidence; texts scrubbed by the Store); the rules' result is one more, with the rules' version as
its model version. The Store audit-logs each row in its hash chain. The service acts as one actor,
``actor_pseudonym(key, SERVICE_LOGIN)``, registered on first use with the ``service`` role (schema
4): it may record interactions but not correct, review or administer, and nobody can sign in to the
web app as it.

Before schema 4 the actor was registered as a ``clinician``. A migrated database keeps that row as
it is (an actor's role is never changed in place: its audit event says ``clinician``), and the job
goes on recording under it; :func:`service_actor` logs a warning saying so. Its interactions stay
attributed to the same pseudonym, so they can be told apart from people's either way.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Final

from app.reportcheck.consistency import RULES_VERSION, ConsistencyResult
from app.reportcheck.verdict import ImageCheck
from app.store import InteractionCreate, NotFoundError, StateError, Store, actor_pseudonym
from data_prep.pseudonym import PseudonymKey

logger = logging.getLogger(__name__)

SERVICE_LOGIN: Final = "service:medvlm-check-reports"
RULES_QUESTION: Final = "Is the report consistent with itself (side, polarity, severity, zone, size)?"


def service_actor(store: Store, key: PseudonymKey) -> str:
    """The service's actor pseudonym, registered with the ``service`` role on first use.

    An actor registered as a ``clinician`` by a medvlm before schema 4 is used as it is (see the
    module docstring).

    Raises:
        StoreError: when the database cannot be read or written.
    """
    actor = actor_pseudonym(key, SERVICE_LOGIN)
    try:
        role = store.get_actor(actor).role
    except NotFoundError:
        with contextlib.suppress(StateError):  # registered meanwhile by a parallel job
            store.register_actor(pseudonym=actor, role="service")
        return actor
    if role != "service":
        logger.warning(
            "the check-reports actor %s was registered as %s before schema 4; its interactions are "
            "recorded under that role",
            actor,
            role,
        )
    return actor


@dataclass(frozen=True)
class Recorder:
    """Writes a study's checks to the Store.

    Attributes:
        store: the opened Store.
        actor: the service actor (:func:`service_actor`).
    """

    store: Store
    actor: str

    def record(self, study_id: str, consistency: ConsistencyResult, image: ImageCheck | None) -> int:
        """Record the rules' result and every model answer of one study.

        Args:
            study_id: the study pseudonym (``S-`` + 20 hex).
            consistency: the rules' result.
            image: the image checks, if run.

        Returns:
            How many interactions were recorded.

        Raises:
            StoreError: when a row cannot be written (the ones before it stay).
        """
        fired = consistency.inconsistencies
        answer = (
            "No inconsistency found."
            if not fired
            else " ".join(f"{c.check} ({c.error_type}, {c.finding}): {c.detail}." for c in fired)
        )
        rows: list[InteractionCreate] = [
            InteractionCreate(
                study_pseudonym=study_id,
                question=RULES_QUESTION,
                answer=answer,
                model_version=RULES_VERSION,
            )
        ]
        for question, ans in image.asked if image else []:
            rows.append(InteractionCreate.from_answer(ans, study_pseudonym=study_id, question=question))
        for row in rows:
            self.store.record_interaction(actor=self.actor, data=row)
        return len(rows)


def open_recorder(url: str, key: PseudonymKey) -> Recorder:
    """Open (creating an SQLite file when absent) the database and the service actor.

    Raises:
        StartError: when the database cannot be opened (from ``app.commands.web.open_store``).
        StoreError: when the service actor cannot be registered.
    """
    from app.commands.web import open_store
    from app.store import AuditKey

    store: Any = open_store(url, AuditKey.derive(key))
    return Recorder(store, service_actor(store, key))
