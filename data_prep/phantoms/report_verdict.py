"""The report-check question and the reading of its answer, shared by the evaluation harness
(``medvlm eval reportcheck``) and batch report checking (``medvlm check-reports``), so the model is
asked in production exactly what it was evaluated on, and both read its answer the same way.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Final

from data_prep.phantoms.report_errors import ERROR_TYPES

NO_ERROR: Final = "no_error"
REPORTCHECK_QUESTION: Final = (
    "Here is the radiology report for this image:\n{report}\n"
    "Does the report contain an error? Answer yes or no. If yes, name the error type: "
    + ", ".join(t.replace("_", " ") for t in ERROR_TYPES)
    + "."
)

_ARTICLES = {"a", "an", "the"}
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_ERROR_WORDS = re.compile(r"\b(error|errors|incorrect|wrong|mistake|inconsistent|contradict\w*)\b")


def _normalize(text: str) -> str:
    words = text.lower().translate(_PUNCT).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def parse_report_verdict(answer: str, error_types: Sequence[str] = ERROR_TYPES) -> tuple[bool, str]:
    """Parse a free-text report-check answer into (has_error, error_type).

    ``error: laterality`` → (True, "laterality"); ``no error`` → (False, "no_error"). "yes", "error",
    "wrong" and the like claim an error unless the answer opens with "no error"; the error type is the
    first of ``error_types`` named in the answer (underscores read as spaces); "unknown" when an
    error is claimed without a recognised type.

    Args:
        answer: the model's answer.
        error_types: the known error types (default: the injector's).

    Returns:
        The verdict and the type (``"no_error"`` when no error).
    """
    text = _normalize(answer)
    if not text:
        return False, NO_ERROR
    denies = re.match(r"^(no error|no errors|error free)\b", text) is not None
    claims_error = bool(_ERROR_WORDS.search(text)) and not denies
    if not claims_error and text.split()[0] == "yes":
        claims_error = True
    if not claims_error:
        return False, NO_ERROR
    for kind in error_types:
        if _normalize(kind.replace("_", " ")) in text:
            return True, kind
    return True, "unknown"
