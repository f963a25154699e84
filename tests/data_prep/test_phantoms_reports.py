"""Reports from ground truth and report error injection with labelled spans."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from data_prep.phantoms.catalogue import load_catalogue
from data_prep.phantoms.generate import iter_samples
from data_prep.phantoms.report_errors import ERROR_TYPES, apply_edits, inject, segment_report
from data_prep.phantoms.reports import write_report
from data_prep.phantoms.spec import Finding, StudySpec

CAT = load_catalogue()


def _outside(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for a, b in sorted(spans):
        out.append(text[pos:a])
        pos = b
    return "".join(out) + text[pos:]


def _study(*findings: Finding) -> StudySpec:
    return StudySpec("cxr-000001", "P000001", "cxr", tuple(findings))


def test_report_states_each_finding_with_its_attributes() -> None:
    spec = _study(
        Finding("pleural_effusion", {"laterality": "left", "severity": "large"}),
        Finding("lung_nodule", {"laterality": "right", "zone": "upper", "size_mm": 14}),
    )
    for seed in range(5):
        r = write_report(spec, np.random.default_rng(seed))
        assert r.text.startswith("FINDINGS:") and "\nIMPRESSION:" in r.text
        assert re.search(r"large left pleural effusion", r.findings_text, re.I)
        assert "14 mm" in r.findings_text and "right upper zone" in r.findings_text
        assert re.search(r"large left pleural effusion", r.impression_text, re.I)
        assert "No pleural effusion" not in r.text and "lungs are clear" not in r.text
        positives = {s.finding for s in r.sentences if s.positive}
        assert positives == {"pleural_effusion", "lung_nodule"}


def test_normal_report_has_no_positive_finding() -> None:
    for seed in range(5):
        r = write_report(_study(), np.random.default_rng(seed))
        assert not any(s.positive for s in r.sentences)
        assert re.search(r"No acute cardiopulmonary abnormality|Normal chest radiograph", r.impression_text)


@pytest.mark.parametrize("error_type", ERROR_TYPES)
def test_each_error_type_changes_only_its_spans(error_type: str) -> None:
    spec = _study(
        Finding("pleural_effusion", {"laterality": "left", "severity": "small"}),
        Finding("consolidation", {"lobe": "right_lower"}),
        Finding("lung_nodule", {"laterality": "right", "zone": "middle", "size_mm": 12}),
    )
    report = write_report(spec, np.random.default_rng(0))
    for seed in range(10):
        err = inject(report, error_type, np.random.default_rng(seed), CAT)
        assert err is not None and err.error_type == error_type
        assert err.text != report.text
        assert _outside(err.text, err.spans) == _outside(report.text, err.original_spans)
        new = [err.text[a:b] for a, b in err.spans]
        old = [report.text[a:b] for a, b in err.original_spans]
        if error_type == "wrong_laterality":
            assert set(new) <= {"left", "right", "Left", "Right"} and new != old
        elif error_type == "wrong_location":
            assert all(w.lower() in {"upper", "lower", "middle"} for w in new) and new != old
        elif error_type == "wrong_severity":
            assert new != old and all(re.fullmatch(r"(small|large|\d+ mm)", w, re.I) for w in new)
        elif error_type == "omitted_finding":
            assert old and all(report.text[a:b].strip() not in err.text for a, b in err.original_spans)
        elif error_type == "inserted_finding":
            assert new and not old and err.finding not in {f.id for f in spec.findings}
        elif error_type == "negation_flip":
            assert new and old


def test_errors_are_balanced_across_types_and_half_of_reports() -> None:
    records = [s.report_error for s in iter_samples(400, seed=3, size=16) if s.split == "train"]
    counts = Counter(r.error_type or "none" for r in records if r is not None)
    assert abs(counts["none"] / len(records) - 0.5) < 0.05
    typed = [counts[t] for t in ERROR_TYPES]
    assert min(typed) > 0 and max(typed) - min(typed) <= 2, counts


def test_apply_edits_reports_spans_in_both_texts() -> None:
    text, spans, orig = apply_edits("abc def ghi", [(4, 7, "XY"), (0, 0, "> "), (8, 11, "")])
    assert text == "> abc XY "
    assert [text[a:b] for a, b in spans] == ["> ", "XY"]
    assert orig == [(4, 7), (8, 11)]
    with pytest.raises(ValueError, match="overlapping"):
        apply_edits("abcdef", [(0, 3, "x"), (2, 4, "y")])


def test_segment_report_tags_findings_and_polarity() -> None:
    text = (
        "FINDINGS: The heart is normal in size. There is a small right pleural effusion. "
        "No pneumothorax. Calcified granuloma.\nIMPRESSION: Small right effusion."
    )
    r = segment_report(text)
    tags = [(text[s.start : s.end], s.finding, s.positive, s.section) for s in r.sentences]
    assert ("There is a small right pleural effusion.", "pleural_effusion", True, "findings") in tags
    assert ("No pneumothorax.", "pneumothorax", False, "findings") in tags
    assert ("Small right effusion.", "pleural_effusion", True, "impression") in tags
    err = inject(r, "wrong_laterality", np.random.default_rng(0), CAT)
    assert err is not None and err.text.count("left") == 2 and "right" not in err.text


def test_ct_reports_state_region_findings_and_take_errors() -> None:
    head = StudySpec(
        "ct-000001", "P1", "ct", (Finding("intracranial_hemorrhage", {"laterality": "right"}),), "head"
    )
    chest = StudySpec("ct-000002", "P2", "ct", (), "chest")
    for seed in range(5):
        r = write_report(head, np.random.default_rng(seed))
        assert "right" in r.findings_text and re.search(r"hemorrhage", r.impression_text)
        assert "costophrenic" not in r.text and "pleural" not in r.text
        err = inject(r, "wrong_laterality", np.random.default_rng(seed), CAT)
        assert err is not None and "left" in err.text and "right" not in err.text
        normal = write_report(chest, np.random.default_rng(seed))
        assert normal.impression_text == "No acute abnormality in the chest."
        assert not any(s.positive for s in normal.sentences)
    counts = Counter(
        s.report_error.error_type or "none"
        for s in iter_samples(200, seed=1, kinds=("ct",), size=16)
        if s.report_error is not None
    )
    assert set(counts) == {"none", *ERROR_TYPES}, counts
