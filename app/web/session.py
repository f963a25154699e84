"""Who is signed in: a pseudonymous actor and their role, as the store holds them.

There are no passwords yet (docs/APP.md): a person types their login (staff id) and picks a role.
The login is turned into ``app.store.actor_pseudonym(site_key, login)`` at once and never stored,
logged or kept in the session. The first sign-in registers the pseudonym with the chosen role; a
later sign-in with another role is refused, so the role a person holds is the store's, and every
write is then checked by the store against it (a clinician cannot review, a reviewer cannot review
their own correction, an admin cannot ask).

The roles offered are the people's roles only: the store's ``service`` role (a batch job such as
``medvlm check-reports``) cannot be chosen, and a login the store holds as a service is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, cast, get_args

from app.store import NotFoundError, StateError, StoreError, actor_pseudonym
from app.web.errors import AppError

if TYPE_CHECKING:
    from app.store import Store
    from data_prep.pseudonym import PseudonymKey

RoleName = Literal["clinician", "reviewer", "admin"]
"""The roles a person can sign in with: the store's ``ROLES`` without ``service``."""
ROLE_NAMES: Final[tuple[str, ...]] = get_args(RoleName)
MAX_LOGIN_CHARS: Final = 128


@dataclass(frozen=True)
class Session:
    """A signed-in person, as kept in the browser session's state (``gr.State``).

    Attributes:
        actor: the pseudonym (``U-`` + 20 hex); never the login.
        role: the role the store holds for them.
    """

    actor: str
    role: RoleName

    @property
    def label(self) -> str:
        """What the UI shows: the pseudonym and the role (never the login)."""
        return f"{self.actor} ({self.role})"


def sign_in(store: Store, key: PseudonymKey, login: str, role: str) -> Session:
    """Sign a person in, registering them on their first sign-in.

    Args:
        store: the database.
        key: the site's pseudonymisation key (the actor pseudonym is keyed by it).
        login: the person's login or staff id; only its keyed hash leaves this function.
        role: ``clinician``, ``reviewer`` or ``admin``.

    Returns:
        The session.

    Raises:
        AppError: for an empty or over-long login, an unknown role, a role other than the one
            registered for this login, or a database failure.
    """
    if role not in ROLE_NAMES:
        raise AppError(f"Choose a role: {', '.join(ROLE_NAMES)}.")
    if not login.strip():
        raise AppError("Type your login (staff id) to sign in.")
    if len(login) > MAX_LOGIN_CHARS:
        raise AppError(f"The login is longer than {MAX_LOGIN_CHARS} characters.")
    try:
        actor = actor_pseudonym(key, login)
        try:
            record = store.get_actor(actor)
        except NotFoundError:
            try:
                record = store.register_actor(pseudonym=actor, role=cast(RoleName, role))
            except StateError:  # registered by a simultaneous first sign-in
                record = store.get_actor(actor)
    except StoreError as e:
        raise AppError(f"Signing in failed: {e}") from e
    if record.role not in ROLE_NAMES:
        raise AppError(f"This login belongs to a {record.role}, not a person, and cannot sign in.")
    if record.role != role:
        raise AppError(
            f"This login is registered as {record.role}, not {role}; sign in as {record.role} "
            "or ask an administrator."
        )
    return Session(actor=record.pseudonym, role=cast(RoleName, role))
