"""A scrubber for free text before it is stored: obvious patient identifiers are redacted or refused.

It catches the identifiers that slip into questions and corrections by habit — dates, MRN- and
accession-like digit runs, DICOM UIDs, DICOM person names (``Last^First``), e-mail addresses and
phone numbers — and replaces each with a bracketed tag (``[DATE]``). It is a safety net, not
de-identification: a free-text name without a caret or a courtesy title ("Mrs Jones") is not
found. Measurements (``3.5 cm``, ``T2``, ``C7``, ``10 mm``) are left alone: digit runs need 6
digits, phone numbers 9.

Nothing here logs or returns the matched text; :class:`ScrubResult` holds only the cleaned text and
the kinds found.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal

from app.store.errors import PHIError, ValidationError

ScrubPolicy = Literal["redact", "reject"]
MAX_TEXT_CHARS: Final = 8000

_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# Order matters: longer, more specific patterns first, so a UID is not taken for a phone number.
PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = (
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")),
    ("NAME", re.compile(r"\b[^\W\d_][\w'-]*(?:\^[\w'-]*)+")),
    # A name after a courtesy title, as clinicians write them: "Mrs Jones", "Dr. O'Brien-Smith",
    # "Mr John Smith". Case-sensitive on purpose: "MR" (the modality) and "ms" (milliseconds) stay.
    ("NAME", re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+[A-Z][\w'-]*(?:\s+[A-Z][a-z][\w'-]*)?")),
    ("UID", re.compile(r"\b\d+(?:\.\d+){3,}\b")),
    (
        "DATE",
        re.compile(
            r"\b(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"
            rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS}\.?,?\s+\d{{2,4}}"
            rf"|{_MONTHS}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}})\b",
            re.IGNORECASE,
        ),
    ),
    # Not inside a word or a decimal (``3.1415926535``), but a sentence may end right after the
    # number: a full stop followed by a digit continues a decimal, one followed by anything else ends it.
    ("PHONE", re.compile(r"(?<!\w)(?<!\d\.)\+?\(?\d(?:[\s().-]*\d){8,14}(?!\w|\.\d)")),
    ("ID", re.compile(r"\b[A-Za-z]{0,4}[-#:]?\d{6,}\b")),
)


@dataclass(frozen=True)
class ScrubResult:
    """Text after scrubbing.

    Attributes:
        text: the text with each identifier replaced by its tag (``[DATE]``, ``[ID]``, ...).
        found: kind → how many were replaced (empty when the text was clean).
    """

    text: str
    found: dict[str, int]

    @property
    def redactions(self) -> int:
        """How many identifiers were replaced."""
        return sum(self.found.values())


def scrub(
    text: str, *, field: str, policy: ScrubPolicy = "redact", max_chars: int = MAX_TEXT_CHARS
) -> ScrubResult:
    """Redact (or refuse) obvious patient identifiers in free text.

    Args:
        text: the free text (question, answer, correction).
        field: what it is, for the error message (``question``); the text itself is never quoted.
        policy: ``redact`` replaces identifiers with tags; ``reject`` raises instead.
        max_chars: the longest text accepted.

    Returns:
        The cleaned text and the kinds of identifier found.

    Raises:
        ValidationError: when the text is empty or longer than ``max_chars``.
        PHIError: under ``reject``, when an identifier is found (the message names only its kind).
    """
    if not text.strip():
        raise ValidationError(f"the {field} is empty")
    if len(text) > max_chars:
        raise ValidationError(f"the {field} is longer than {max_chars} characters")
    found: Counter[str] = Counter()
    cleaned = text
    for kind, pattern in PATTERNS:
        cleaned, count = pattern.subn(f"[{kind}]", cleaned)
        if count:
            found[kind] += count
    if found and policy == "reject":
        kinds = ", ".join(sorted(found))
        raise PHIError(f"the {field} looks like it holds a patient identifier ({kinds}); remove it and retry")
    return ScrubResult(cleaned, dict(found))
