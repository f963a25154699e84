"""The self-consistency rules: each fires on its contradiction and stays quiet on look-alikes."""

from __future__ import annotations

import pytest

from app.reportcheck.consistency import check_report_text, parse_report
from data_prep.phantoms.report_errors import ERROR_TYPES


def _fired(text: str) -> list[tuple[str, str, str]]:
    return [(c.check, c.error_type, c.finding) for c in check_report_text(text).inconsistencies]


FIRES = [
    (
        "FINDINGS: There is a small left pleural effusion. No pneumothorax.\n"
        "IMPRESSION: Small right pleural effusion.",
        ("laterality_conflict", "wrong_laterality", "pleural_effusion"),
    ),
    (
        "FINDINGS: There is a right pneumothorax. The heart is normal in size.\nIMPRESSION: No pneumothorax.",
        ("affirmed_and_negated", "negation_flip", "pneumothorax"),
    ),
    (
        "FINDINGS: There is a large right pleural effusion.\nIMPRESSION: Small right pleural effusion.",
        ("severity_conflict", "wrong_severity", "pleural_effusion"),
    ),
    (
        "FINDINGS: A 9 mm nodule in the right upper lobe.\nIMPRESSION: Right upper lobe nodule, 2.5 cm.",
        ("severity_conflict", "wrong_severity", "lung_nodule"),
    ),
    (
        "FINDINGS: Consolidation in the right lower lobe.\nIMPRESSION: Right upper lobe consolidation.",
        ("location_conflict", "wrong_location", "consolidation"),
    ),
    (
        "FINDINGS: There is a 45 mm nodule in the left upper lobe.\nIMPRESSION: Left upper lobe nodule.",
        ("size_out_of_range", "wrong_severity", "lung_nodule"),
    ),
]

QUIET = [
    # the same side in both sections
    "FINDINGS: Small left pleural effusion. No pneumothorax.\nIMPRESSION: Small left pleural effusion.",
    # bilateral in the findings, one side summarised in the impression
    "FINDINGS: Bilateral pleural effusions, larger on the left.\nIMPRESSION: Left pleural effusion.",
    # a negation qualified by the other side, and "no new" is not a negation
    "FINDINGS: Small left effusion. No right effusion. No new consolidation.\n"
    "IMPRESSION: Small left effusion.",
    # hedged mentions are neither affirmed nor negated
    "FINDINGS: Possible small right pneumothorax.\nIMPRESSION: No definite pneumothorax.",
    # mild vs moderate is one step: reader variation, not a contradiction
    "FINDINGS: Mild pulmonary edema.\nIMPRESSION: Moderate pulmonary edema.",
    # a range of severities is not graded
    "FINDINGS: Small to moderate right effusion.\nIMPRESSION: Large right effusion.",
    # the same zone named two ways, sizes close
    "FINDINGS: 8 mm nodule at the right apex.\nIMPRESSION: Right upper lobe nodule measuring 9 mm.",
    # the indication is never checked
    "INDICATION: Rule out left pneumothorax.\nFINDINGS: No pneumothorax.\nIMPRESSION: Normal chest.",
    # a normal report
    "FINDINGS: The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.\n"
    "IMPRESSION: No acute cardiopulmonary abnormality.",
    # no sections: the cross-section rules have nothing to compare
    "Left pleural effusion. Right pleural effusion.",
    # a mass of a mass's size
    "FINDINGS: 5 cm left upper lobe mass.\nIMPRESSION: Left upper lobe mass.",
]


@pytest.mark.parametrize(("text", "expected"), FIRES)
def test_rule_fires_and_names_its_evidence(text: str, expected: tuple[str, str, str]) -> None:
    hits = check_report_text(text).inconsistencies
    assert expected in [(c.check, c.error_type, c.finding) for c in hits]
    hit = next(c for c in hits if c.check == expected[0])
    assert hit.error_type in ERROR_TYPES and hit.detail
    assert hit.sentences and all(text[s.start : s.end] == s.text for s in hit.sentences)
    if hit.check != "size_out_of_range":  # the cross-section rules quote one sentence of each side
        assert {s.section for s in hit.sentences} == {"findings", "impression"}


@pytest.mark.parametrize("text", QUIET)
def test_rules_stay_quiet(text: str) -> None:
    assert _fired(text) == []


def test_mentions_polarity_sides_and_sections() -> None:
    report = parse_report(
        "COMPARISON: None.\nFINDINGS: Small left pleural effusion and no pneumothorax. "
        "The heart is not enlarged.\nIMPRESSION: Possible right lower lobe consolidation."
    )
    got = {(m.finding, m.polarity, m.sentence.section) for m in report.mentions}
    assert ("pleural_effusion", "affirmed", "findings") in got
    assert ("pneumothorax", "negated", "findings") in got
    assert ("cardiomegaly", "negated", "findings") in got
    assert ("consolidation", "hedged", "impression") in got
    effusion = next(m for m in report.mentions if m.finding == "pleural_effusion")
    assert effusion.sides == {"left"} and effusion.severities == (1,)
    assert report.status("pleural_effusion") == "present" and report.status("pneumothorax") == "absent"
    assert report.status("lung_nodule") == "not_mentioned"
    assert report.sentences[0].section == "other"


def test_units_are_read_as_millimetres() -> None:
    (m,) = parse_report("FINDINGS: A 1.2 cm nodule in the left lower lobe.").mentions
    assert m.sizes_mm == (12.0,) and m.locations == {"lower"}
