"""The free-text scrubber: identifiers are redacted (or refused), clinical text is left alone."""

from __future__ import annotations

import pytest

from app.store import PHIError, ValidationError
from app.store.scrub import scrub


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        ("Prior study of DOE^JANE^M shows", "NAME", "DOE"),
        ("Compare with O'BRIEN^SEAN", "NAME", "BRIEN"),
        ("seen on 2024-03-12 again", "DATE", "2024"),
        ("seen on 12/03/2024 again", "DATE", "2024"),
        ("seen on 3 March 2024 again", "DATE", "March"),
        ("seen on Mar 3, 2024 again", "DATE", "2024"),
        ("MRN 12345678 here", "ID", "12345678"),
        ("accession ACC0012345", "ID", "0012345"),
        ("study date 20240312", "ID", "20240312"),
        ("UID 1.2.840.113619.2.55.3.604688119", "UID", "113619"),
        ("mail j.doe@hospital.org now", "EMAIL", "doe@"),
        ("call +44 20 7946 0958 today", "PHONE", "7946"),
        ("call (555) 123-4567 today", "PHONE", "4567"),
    ],
)
def test_identifiers_are_redacted(text: str, kind: str, secret: str) -> None:
    result = scrub(text, field="question")
    assert secret not in result.text
    assert f"[{kind}]" in result.text
    assert result.found.get(kind, 0) >= 1 and result.redactions >= 1


@pytest.mark.parametrize(
    "text",
    [
        "Is there a 3.5 cm nodule in the right upper lobe?",
        "Fracture of C7 or T12? Compare 10 mm with 12 mm.",
        "BI-RADS 4, score 0.93 versus 0.52, 2 of 3 views",
        "Left lower lobe consolidation; heart size normal (CTR 0.48).",
    ],
)
def test_clinical_text_is_left_alone(text: str) -> None:
    result = scrub(text, field="question")
    assert result.text == text and result.found == {}


def test_reject_names_kinds_not_text() -> None:
    with pytest.raises(PHIError) as info:
        scrub("DOE^JANE born 1970-01-01", field="question", policy="reject")
    message = str(info.value)
    assert "DATE" in message and "NAME" in message and "question" in message
    assert "DOE" not in message and "1970" not in message


def test_empty_and_long_text_are_refused() -> None:
    with pytest.raises(ValidationError, match="the answer is empty"):
        scrub("  \n", field="answer")
    with pytest.raises(ValidationError, match="longer than 10 characters"):
        scrub("x" * 11, field="answer", max_chars=10)
