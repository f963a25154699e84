"""MONAI intensity augmentation keeps the labels true (no spatial transforms)."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.phantoms.cxr import render_cxr, sample_anatomy
from data_prep.phantoms.pathology import render_patch
from data_prep.phantoms.spec import Finding

pytest.importorskip("monai", reason="monai not installed")


def test_augmentation_is_seeded_shape_preserving_and_keeps_laterality() -> None:
    from data_prep.phantoms.augment import label_safe_augmentation

    eff = (Finding("pleural_effusion", {"laterality": "left", "severity": "large"}),)
    r = render_cxr(sample_anatomy(np.random.default_rng(0)), eff, 64, np.random.default_rng(1))
    a1, a2 = label_safe_augmentation(7), label_safe_augmentation(7)
    outs = [a1(r.pixels) for _ in range(6)]
    assert all(np.array_equal(o, a2(r.pixels)) for o in outs)
    assert any(not np.allclose(o, r.pixels) for o in outs)
    for out in outs:
        assert out.shape == r.pixels.shape and out.dtype == np.float32
        left, right = (
            out[y0:y1, x0:x1].mean() for y0, y1, x0, x1 in (r.cp_boxes["left"], r.cp_boxes["right"])
        )
        assert left > right + 0.15  # the labelled side is still the white one
    rgb = render_patch((), 32, np.random.default_rng(0)).pixels
    assert label_safe_augmentation(1)(rgb).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="expected"):
        a1(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="strength"):
        label_safe_augmentation(0, strength=-1)
