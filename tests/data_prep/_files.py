"""Real DICOM files from pydicom's bundled test files and the pydicom-data package (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest


def corpus_file(name: str) -> Path:
    """Path of a named corpus file; skips the test if it is not installed."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not available offline")
    return Path(str(path))
