"""The chest radiograph renderer: labels agree with pixels (PA convention: patient's left = image right)."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.phantoms.cxr import Acquisition, CxrRender, render_cxr, sample_anatomy, with_ctr
from data_prep.phantoms.spec import Finding

SIZE = 128
QUIET = Acquisition(gamma=1.0, contrast=1.0, offset=0.0, noise=0.0, blur_px=0.5)


def _render(findings: tuple[Finding, ...], seed: int = 3, ctr: float | None = None) -> CxrRender:
    anatomy = sample_anatomy(np.random.default_rng(seed))
    if ctr is not None:
        anatomy = with_ctr(anatomy, ctr)
    return render_cxr(anatomy, findings, SIZE, np.random.default_rng(0), QUIET)


def _box_mean(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    y0, y1, x0, x1 = box
    return float(img[y0:y1, x0:x1].mean())


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("side", ["left", "right"])
def test_effusion_whitens_only_the_labelled_costophrenic_region(seed: int, side: str) -> None:
    base = _render((), seed)
    eff = _render((Finding("pleural_effusion", {"laterality": side, "severity": "small"}),), seed)
    other = "right" if side == "left" else "left"
    # PA view: the patient's left costophrenic angle is in the image's right half.
    assert (eff.cp_boxes["left"][2] > SIZE // 2) and (eff.cp_boxes["right"][3] < SIZE // 2)
    gain = _box_mean(eff.pixels, eff.cp_boxes[side]) - _box_mean(base.pixels, base.cp_boxes[side])
    gain_other = _box_mean(eff.pixels, eff.cp_boxes[other]) - _box_mean(base.pixels, base.cp_boxes[other])
    assert gain > 0.15
    assert abs(gain_other) < 0.01


def test_large_effusion_reaches_higher_than_small() -> None:
    small = _render((Finding("pleural_effusion", {"laterality": "bilateral", "severity": "small"}),))
    large = _render((Finding("pleural_effusion", {"laterality": "bilateral", "severity": "large"}),))
    assert large.masks["pleural_effusion"].sum() > 1.8 * small.masks["pleural_effusion"].sum()
    for side in ("left", "right"):
        assert (small.masks["pleural_effusion"] & small.masks[f"lung_{side}"]).any()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("zone", ["upper", "middle", "lower"])
def test_nodule_pixels_are_where_the_label_says(side: str, zone: str) -> None:
    nod = Finding("lung_nodule", {"laterality": side, "zone": zone, "size_mm": 20})
    with_n, without = _render((nod,)), _render(())
    y, x = with_n.centers["lung_nodule"]
    assert with_n.pixels[y, x] - without.pixels[y, x] > 0.2
    assert (x > SIZE // 2) == (side == "left")
    assert with_n.masks[f"lung_{side}"][y, x]
    rows = np.nonzero(with_n.masks[f"lung_{side}"].any(axis=1))[0]
    frac = (y - rows.min()) / (rows.max() - rows.min())
    expected = {"upper": (0.0, 0.4), "middle": (0.3, 0.7), "lower": (0.6, 1.0)}[zone]
    assert expected[0] <= frac <= expected[1]
    # nothing changed far from the nodule
    far = np.ones_like(with_n.pixels, dtype=bool)
    far[max(0, y - 8) : y + 9, max(0, x - 8) : x + 9] = False
    assert np.abs(with_n.pixels - without.pixels)[far].max() < 1e-6


def _cardiothoracic_ratio(r: CxrRender) -> float:
    lungs = r.masks["lung_left"] | r.masks["lung_right"]
    cols = np.nonzero(lungs.any(axis=0))[0]
    thoracic = cols.max() - cols.min() + 1
    heart_cols = np.nonzero(r.masks["heart"].any(axis=0))[0]
    return float((heart_cols.max() - heart_cols.min() + 1) / thoracic)


def test_cardiomegaly_raises_the_cardiothoracic_ratio_above_half() -> None:
    for seed in range(4):
        normal = _render((), seed)
        big = _render((Finding("cardiomegaly", {}),), seed, ctr=0.6)
        assert _cardiothoracic_ratio(normal) < 0.5 < _cardiothoracic_ratio(big)
        assert big.pixels[big.masks["heart"]].mean() > 0.6


def test_pneumothorax_removes_lung_markings_on_its_side_only() -> None:
    base = _render(())
    ptx = _render((Finding("pneumothorax", {"laterality": "right"}),))
    region = ptx.masks["pneumothorax"]
    assert (region & ptx.masks["lung_right"]).sum() == region.sum() > 0
    inner = region & (np.roll(region, 2, 1) & np.roll(region, -2, 1))
    assert ptx.pixels[inner].std() < 0.5 * base.pixels[inner].std()
    assert np.abs(ptx.pixels - base.pixels)[:, SIZE // 2 + 4 :].max() < 1e-6


def test_devices_and_airspace_findings_leave_normal_renders_unchanged_elsewhere() -> None:
    base = _render(())
    for f in (
        Finding("endotracheal_tube", {}),
        Finding("central_venous_catheter", {"laterality": "left"}),
        Finding("consolidation", {"lobe": "left_lower"}),
        Finding("atelectasis", {"laterality": "left"}),
    ):
        r = _render((f,))
        mask = r.masks[f.id]
        assert mask.any() and (r.pixels - base.pixels)[mask].mean() > 0.1, f.id
        changed = np.abs(r.pixels - base.pixels) > 0.02
        near = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        near[max(ys.min() - 3, 0) : ys.max() + 4, max(xs.min() - 3, 0) : xs.max() + 4] = True
        assert not (changed & ~near).any(), f.id
    cons = _render((Finding("consolidation", {"lobe": "left_lower"}),))
    assert cons.masks["consolidation"][:, : SIZE // 2].sum() == 0


def test_cardiomegaly_label_must_match_heart_size() -> None:
    anatomy = with_ctr(sample_anatomy(np.random.default_rng(0)), 0.45)
    with pytest.raises(ValueError, match="cardiothoracic"):
        render_cxr(anatomy, (Finding("cardiomegaly", {}),), 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too small"):
        render_cxr(anatomy, (), 8, np.random.default_rng(0))
