"""The app's one error type: a sentence a clinician can read, with nothing lost behind it."""

from __future__ import annotations


class AppError(Exception):
    """An operation of the web app failed; ``str(error)`` is one sentence for the UI (no PHI).

    The service raises it for every expected failure (bad upload, wrong role, model failure,
    unreachable database) after leaving the session's state as it was, so the user can retry.
    """
