"""Pseudonymous identifiers: keyed hashes (HMAC-SHA256) of DICOM identifiers.

Library functions take the key as an argument; only entry points (the CLI handlers, the app's
composition root) call :func:`resolve_key`, once per run, and pass the result down.

Hospitals must set ``MEDVLM_PSEUDONYM_KEY`` to one secret per site, the same on every machine and
account, so that one study always gets the same pseudonym. The key comes from the environment
variable ``MEDVLM_PSEUDONYM_KEY`` (at least 16 characters).
When it is unset, a random per-install key is created once under the local config directory
(``$MEDVLM_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/medvlm``, else ``~/.config/medvlm``) in the file
``pseudonym.key`` with mode 0600, and a warning says so every time it is used. There is no
hard-coded key. The same key must be used across runs for ids to stay stable; losing it makes
old pseudonyms unlinkable, which is the point.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import PseudonymKeyError

logger = logging.getLogger(__name__)

KEY_ENV = "MEDVLM_PSEUDONYM_KEY"
CONFIG_ENV = "MEDVLM_CONFIG_DIR"
KEY_FILE_NAME = "pseudonym.key"
MIN_KEY_CHARS = 16


@dataclass(frozen=True, repr=False)
class PseudonymKey:
    """A secret key for keyed hashes and where it came from (``env`` or a file path)."""

    secret: bytes
    source: str

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_CHARS:
            raise PseudonymKeyError(f"the pseudonym key must be at least {MIN_KEY_CHARS} characters long")

    def __repr__(self) -> str:  # never print the secret
        return f"PseudonymKey(source={self.source!r})"

    def digest(self, purpose: str, value: str) -> bytes:
        """HMAC-SHA256 of ``value`` under this key, separated by ``purpose``."""
        return hmac.new(self.secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()


def config_dir() -> Path:
    """Return the local config directory used for the per-install key."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "medvlm"


def resolve_key(*, create: bool = True) -> PseudonymKey:
    """Resolve the pseudonymisation key from the environment or the per-install key file.

    Call this once, in an entry point, and pass the key down: it reads the environment and may
    create a file, which library functions must not do.

    Args:
        create: create the per-install key file when neither source exists.

    Returns:
        The key, with ``source`` ``"env"`` or the key file's path.

    Raises:
        PseudonymKeyError: if the env key is too short, or no key exists and ``create`` is False,
            or the key file cannot be written.
    """
    env = os.environ.get(KEY_ENV)
    if env:
        return PseudonymKey(env.encode(), "env")
    path = config_dir() / KEY_FILE_NAME
    if not path.exists():
        if not create:
            raise PseudonymKeyError(f"no pseudonym key: set {KEY_ENV} or create {path}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        except FileExistsError:
            pass  # another process created it first; read theirs below
        except OSError as e:
            raise PseudonymKeyError(f"cannot create the per-install pseudonym key at {path}: {e}") from e
        logger.warning("created a per-install pseudonym key at %s (set %s to choose your own)", path, KEY_ENV)
    logger.warning("%s is not set; using the per-install pseudonym key at %s", KEY_ENV, path)
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise PseudonymKeyError(f"cannot read the pseudonym key at {path}: {e}") from e
    return PseudonymKey(text.encode(), str(path))


load_key = resolve_key  # the earlier name, kept for callers written against it


def study_pseudonym(key: PseudonymKey, study_uid: str) -> str:
    """Return a stable pseudonymous study id for a StudyInstanceUID.

    Args:
        key: the pseudonymisation key.
        study_uid: the original StudyInstanceUID (or another study-level identifier).

    Returns:
        ``"S-"`` plus 20 hex characters of the keyed hash; never contains the input.
    """
    return "S-" + key.digest("study", study_uid.strip()).hex()[:20]


def remap_uid(key: PseudonymKey, uid: str) -> str:
    """Map a UID to a new valid UID (``2.25.<decimal 128-bit int>``), the same for the same input.

    Args:
        key: the pseudonymisation key.
        uid: the original UID.

    Returns:
        A UID of at most 44 characters in the ``2.25`` (UUID-derived) arc.
    """
    value = int.from_bytes(key.digest("uid", uid.strip().rstrip("\x00"))[:16], "big")
    return f"2.25.{value}"
