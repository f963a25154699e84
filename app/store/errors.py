"""The typed errors of the local database (``app.store``).

Every message is one sentence that can be shown to a person as-is: it names the object by its
kind and id (``interaction 12``, ``actor U-3f…``) and never quotes free text (questions, answers,
corrections), which may hold patient data. The CLI and the web app turn these into user messages.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: a database operation was refused or failed; nothing was written."""


class DatabaseUnavailableError(StoreError):
    """The database cannot be reached or opened (server down, wrong URL, unreadable file)."""


class SchemaVersionError(StoreError):
    """The database has no medvlm schema, or one made by another schema version."""


class AuditKeyError(StoreError):
    """The audit key is missing, too short, or not the key this database was created with."""


class NotFoundError(StoreError):
    """An actor, interaction or correction named by id does not exist."""


class RoleError(StoreError):
    """The actor's role does not allow the operation (a clinician reviewing, for instance)."""


class StateError(StoreError):
    """The object is not in a state that allows the operation (a correction reviewed twice)."""


class ValidationError(StoreError):
    """A field is malformed: a study id that is not a pseudonym, an over-long text, a bad version."""


class PHIError(ValidationError):
    """Free text holds something that looks like a patient identifier and the policy is to reject."""


class ExportError(StoreError):
    """An export file cannot be written, or a case image does not match its content id."""
