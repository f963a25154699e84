"""load_views on each kind of input, and the pseudonym key's sources."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import ImageView, load_views
from data_prep.errors import IngestError, PseudonymKeyError
from data_prep.pseudonym import KEY_ENV, PseudonymKey, load_key, remap_uid, study_pseudonym
from tests.data_prep._files import corpus_file


def test_load_views_dicom_ct_gives_window_and_multiwindow(key: PseudonymKey) -> None:
    views = load_views(corpus_file("CT_small.dcm"), preset="lung", key=key)
    assert len(views) == 2 and all(isinstance(v, ImageView) for v in views)
    assert views[0].pixels.shape == (128, 128) and views[0].window and views[0].window.preset == "lung"
    assert views[1].pixels.shape == (128, 128, 3) and "multi-window" in views[1].description
    assert views[0].study_id == study_pseudonym(key, "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322")


def test_load_views_reads_no_key_from_the_environment(key: PseudonymKey) -> None:
    # the key is resolved by entry points and passed down; MEDVLM_PSEUDONYM_KEY is set here but unused
    [view, _] = load_views(corpus_file("CT_small.dcm"))
    assert view.study_id is None


def test_load_views_png_and_errors(tmp_path: Path, key: PseudonymKey) -> None:
    png = tmp_path / "x.png"
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    Image.fromarray(rgba).save(png)
    [view] = load_views(png)
    assert view.kind == "image" and view.pixels.shape == (10, 12, 3) and view.pixels.min() == 255
    grey = tmp_path / "g.jpg"
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).save(grey)
    assert load_views(grey)[0].pixels.ndim == 2
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"nope")
    with pytest.raises(IngestError):
        load_views(bad)
    with pytest.raises(IngestError):
        load_views(tmp_path / "nothing-here")


def test_imageview_validates_pixels() -> None:
    with pytest.raises(ValueError):
        ImageView(
            pixels=np.zeros((4, 4), np.float32), modality=None, body_part=None, kind="image", description=""
        )
    with pytest.raises(ValueError):
        ImageView(
            pixels=np.zeros((4, 4, 2), np.uint8), modality=None, body_part=None, kind="image", description=""
        )


def test_key_from_env_and_per_install_fallback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KEY_ENV, "an-env-key-of-enough-length")
    assert load_key().source == "env"
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(PseudonymKeyError):
        load_key()
    monkeypatch.delenv(KEY_ENV)
    monkeypatch.setenv("MEDVLM_CONFIG_DIR", str(tmp_path / "cfg"))
    with pytest.raises(PseudonymKeyError):
        load_key(create=False)
    with caplog.at_level(logging.WARNING):
        k1 = load_key()
    assert "per-install pseudonym key" in caplog.text
    path = tmp_path / "cfg" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    k2 = load_key()
    assert k1.secret == k2.secret and k1.secret.decode() not in repr(k1)
    assert study_pseudonym(k1, "1.2.3") == study_pseudonym(k2, "1.2.3") != study_pseudonym(k1, "1.2.4")
    uid = remap_uid(k1, "1.2.3")
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid == remap_uid(k2, "1.2.3")
