"""The report-check question and answer parser shared by the eval harness and check-reports."""

from __future__ import annotations

import pytest

from data_prep.phantoms.report_errors import ERROR_TYPES
from data_prep.phantoms.report_verdict import REPORTCHECK_QUESTION, parse_report_verdict

TYPES = ("wrong_laterality", "omitted_finding", "negation_flip")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("No.", (False, "no_error")),
        ("no error", (False, "no_error")),
        ("The report is correct.", (False, "no_error")),
        ("Yes.", (True, "unknown")),
        ("Yes, wrong laterality.", (True, "wrong_laterality")),
        ("error: negation flip", (True, "negation_flip")),
        ("The report contains an error (omitted finding).", (True, "omitted_finding")),
        ("", (False, "no_error")),
    ],
)
def test_parse_report_verdict(answer: str, expected: tuple[bool, str]) -> None:
    assert parse_report_verdict(answer, TYPES) == expected


def test_default_types_are_the_injectors_and_the_question_names_them() -> None:
    assert parse_report_verdict("Yes: " + ERROR_TYPES[0].replace("_", " ")) == (True, ERROR_TYPES[0])
    assert all(t.replace("_", " ") in REPORTCHECK_QUESTION for t in ERROR_TYPES)
    assert "{report}" in REPORTCHECK_QUESTION
