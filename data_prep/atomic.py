"""Write a file atomically: a temporary file beside it, fsync, then rename onto it.

Readers see the old content or the new one, never a half-written file, and a failed write leaves
the old file untouched and no temporary file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (creating its folder when needed).

    Args:
        path: the destination.
        data: the bytes.

    Raises:
        OSError: the folder or file cannot be written; ``path`` is unchanged.
    """
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
