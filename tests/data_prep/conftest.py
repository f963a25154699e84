"""Shared fixtures for data_prep tests: a pseudonym key and real DICOM files from pydicom's corpus."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from data_prep.pseudonym import PseudonymKey

TEST_KEY = "test-key-0123456789abcdef"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> PseudonymKey:
    """A fixed pseudonym key, also exported as MEDVLM_PSEUDONYM_KEY for the CLI."""
    monkeypatch.setenv("MEDVLM_PSEUDONYM_KEY", TEST_KEY)
    monkeypatch.setenv("MEDVLM_CONFIG_DIR", str(tmp_path / "config"))
    return PseudonymKey(TEST_KEY.encode(), "test")


@pytest.fixture(scope="session")
def pixel_corpus() -> list[Path]:
    """Every file among pydicom's test files and pydicom-data that has pixel data (about 162)."""
    import pydicom
    from pydicom.data import get_testdata_files

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in get_testdata_files():
            try:
                ds = pydicom.dcmread(f, force=True, stop_before_pixels=False)
            except Exception:
                continue  # not DICOM (json, dumps, READMEs): not part of the pixel corpus
            if "PixelData" in ds:
                out.append(Path(f))
    return sorted(out)
