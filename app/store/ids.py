"""Pseudonymous ids as the database accepts them: studies (``S-`` + 20 hex), actors (``U-`` + 20 hex).

The database refuses anything else in these columns, so a raw StudyInstanceUID, accession number,
patient name or login can never be stored by mistake. Study pseudonyms are made by
``data_prep.pseudonym.study_pseudonym``; actor pseudonyms by :func:`actor_pseudonym` with the same
site key (the entry point resolves it and passes it in).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from app.store.errors import ValidationError

if TYPE_CHECKING:
    from data_prep.pseudonym import PseudonymKey

STUDY_PSEUDONYM: Final = re.compile(r"S-[0-9a-f]{20}")
ACTOR_PSEUDONYM: Final = re.compile(r"U-[0-9a-f]{20}")
SYSTEM_ACTOR: Final = "system"
"""The audit actor of writes made by a command rather than a person (``db init``, bootstrap)."""


def actor_pseudonym(key: PseudonymKey, login: str) -> str:
    """A stable pseudonymous actor id for a login name (case and surrounding spaces ignored).

    Args:
        key: the site's pseudonymisation key (``data_prep.pseudonym.resolve_key()``).
        login: the person's login or staff id; it is not stored anywhere.

    Returns:
        ``"U-"`` plus 20 hex characters of the keyed hash.

    Raises:
        ValidationError: for an empty login.
    """
    if not login.strip():
        raise ValidationError("the login is empty")
    return "U-" + key.digest("actor", login.strip().lower()).hex()[:20]


def check_study_pseudonym(value: str) -> str:
    """Return ``value`` when it is a study pseudonym.

    Raises:
        ValidationError: otherwise (the value is not quoted: it might be a raw UID).
    """
    if not STUDY_PSEUDONYM.fullmatch(value):
        raise ValidationError(
            "the study id is not a pseudonym (S- and 20 hex characters from study_pseudonym)"
        )
    return value


def check_actor_pseudonym(value: str) -> str:
    """Return ``value`` when it is an actor pseudonym.

    Raises:
        ValidationError: otherwise (the value is not quoted: it might be a name).
    """
    if not ACTOR_PSEUDONYM.fullmatch(value):
        raise ValidationError(
            "the actor id is not a pseudonym (U- and 20 hex characters from actor_pseudonym)"
        )
    return value
