"""Report error injection with labelled character spans.

Follows the radiology report error-checking set-up (SIMPLE: does the report contain an error;
COMPLEX: which type), with the error types ``wrong_laterality``, ``omitted_finding``,
``inserted_finding``, ``negation_flip``, ``wrong_severity`` (severity word or size) and
``wrong_location``. An error is applied to every sentence about the same finding (FINDINGS and
IMPRESSION alike), so it cannot be caught from the report's internal inconsistency, only by
comparing it with the image. Works on the structured synthetic reports and, through
:func:`segment_report`, on free-text real reports.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from data_prep.phantoms.catalogue import Catalogue
from data_prep.phantoms.reports import Report, Sentence, positive_sentence
from data_prep.phantoms.spec import Finding, sample_attributes

ERROR_TYPES: tuple[str, ...] = (
    "wrong_laterality",
    "omitted_finding",
    "inserted_finding",
    "negation_flip",
    "wrong_severity",
    "wrong_location",
)
# Keywords that tie a free-text sentence to a catalogue finding (first match wins).
FINDING_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        "pleural_effusion": re.compile(r"effusion", re.I),
        "pneumothorax": re.compile(r"pneumothora", re.I),
        "lung_nodule": re.compile(r"nodul", re.I),
        "lung_mass": re.compile(r"\bmass(es)?\b", re.I),
        "consolidation": re.compile(r"consolidat|airspace (disease|opacit)|infiltrat", re.I),
        "atelectasis": re.compile(r"atelecta", re.I),
        "pulmonary_edema": re.compile(r"edema", re.I),
        "cardiomegaly": re.compile(
            r"cardiomegaly|heart size|\bheart is\b|cardiac silhouette|cardiomediastinal silhouette", re.I
        ),
        "endotracheal_tube": re.compile(r"endotracheal|\bET tube", re.I),
        "intracranial_hemorrhage": re.compile(r"hemorrhage|haemorrhage|hematoma", re.I),
        "cerebral_infarct": re.compile(r"infarct", re.I),
        "central_venous_catheter": re.compile(r"central venous|\bPICC\b|central line|catheter", re.I),
    }
)
_NEGATION = re.compile(r"\b(no|not|without|negative for|free of|clear|normal|resolved)\b", re.I)
_SIDE = re.compile(r"\b(left|right|bilateral)\b", re.I)
_SEVERITY = re.compile(
    r"\b(small|large|mild|moderate|severe|tiny|trace)\b|\b(\d+(?:\.\d+)?)\s?(mm|cm)\b", re.I
)
_LOCATION = re.compile(r"\b(upper|middle|lower|apical|basal|base|apex|apices|bases)\b", re.I)
_SWAP_SEVERITY = MappingProxyType(
    {
        "small": "large",
        "large": "small",
        "mild": "severe",
        "severe": "mild",
        "moderate": "small",
        "tiny": "large",
        "trace": "large",
    }
)
_SWAP_LOCATION = MappingProxyType(
    {
        "upper": "lower",
        "lower": "upper",
        "middle": "upper",
        "apical": "basal",
        "basal": "apical",
        "base": "apex",
        "apex": "base",
        "apices": "bases",
        "bases": "apices",
    }
)
_Rule = tuple[re.Pattern[str], "str | Callable[[re.Match[str]], str]"]
_NEG_TO_POS: tuple[_Rule, ...] = (
    (re.compile(r"\b(There (?:is|are)) no\b"), r"\1"),
    (re.compile(r"\bis not enlarged\b"), "is enlarged"),
    (re.compile(r"^Heart size is normal"), "The heart is enlarged"),
    (re.compile(r"^No (?:evidence of )?(\w)"), lambda m: m.group(1).upper()),
    (re.compile(r"\bwithout\b"), "with"),
    (re.compile(r"\bno\b"), "a"),
)
_POS_TO_NEG: tuple[_Rule, ...] = (
    (re.compile(r"\b(There (?:is|are))(?: an?)?\b"), r"\1 no"),
    (re.compile(r"^An? (.+?) is (present|seen)"), r"No \1 is \2"),
    (re.compile(r"\bThe heart is enlarged"), "The heart is not enlarged"),
)


@dataclass(frozen=True)
class InjectedError:
    """A report with at most one injected error.

    Attributes:
        text: the (possibly altered) report.
        error_type: one of ``ERROR_TYPES``, or None when the report is unchanged.
        spans: ``[start, end)`` character spans of the changed text in ``text``.
        original_spans: the spans that were replaced or removed in the original report.
        finding: catalogue id the error is about, if known.
    """

    text: str
    error_type: str | None
    spans: list[tuple[int, int]] = field(default_factory=list)
    original_spans: list[tuple[int, int]] = field(default_factory=list)
    finding: str | None = None


def segment_report(text: str) -> Report:
    """Split free text into sentences tagged with a finding and polarity.

    Args:
        text: report text; ``FINDINGS:`` / ``IMPRESSION:`` headers start sections.

    Returns:
        The report with its sentences (sections ``findings`` or ``impression``).
    """
    sentences: list[Sentence] = []
    section = "findings"
    for m in re.finditer(r"[A-Z][A-Z ]+:|[^.\n:]+(?:[.:](?!\s*$)|\.|$)", text, re.M):
        chunk = m.group(0)
        if re.fullmatch(r"[A-Z][A-Z ]+:", chunk):
            section = "impression" if chunk.strip().startswith("IMPRESSION") else "findings"
            continue
        lead = len(chunk) - len(chunk.lstrip())
        body = chunk.strip()
        if len(body) < 3:
            continue
        start = m.start() + lead
        finding = next((fid for fid, pat in FINDING_PATTERNS.items() if pat.search(body)), None)
        positive = None if finding is None else not _NEGATION.search(body)
        sentences.append(Sentence(start, start + len(body), finding, positive, section))
    return Report(text, tuple(sentences))


def _same_case(word: str, new: str) -> str:
    return new.capitalize() if word[:1].isupper() else new


def _minimal_edit(start: int, old: str, new: str) -> tuple[int, int, str]:
    """Trim the common prefix and suffix, keeping whole words and never an empty replacement.

    Returns:
        The edit as ``(start, end, replacement)`` in report offsets.
    """
    p = 0
    while p < min(len(old), len(new)) and old[p] == new[p]:
        p += 1
    s = 0
    while s < min(len(old), len(new)) - p and old[-1 - s] == new[-1 - s]:
        s += 1
    while p > 0 and old[p - 1].isalnum():  # back to the start of the word
        p -= 1
    end_old, end_new = len(old) - s, len(new) - s
    while end_old < len(old) and (old[end_old].isalnum() or end_new <= p):  # to the end of a word
        end_old += 1
        end_new += 1
    return start + p, start + end_old, new[p:end_new]


def apply_edits(
    text: str, edits: list[tuple[int, int, str]]
) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """Apply non-overlapping edits.

    Args:
        text: original text.
        edits: ``(start, end, replacement)`` in original offsets.

    Returns:
        ``(new_text, spans_in_new_text, spans_in_original)``; zero-length replacements
        (deletions) give no span in the new text.
    """
    out, spans, orig, pos, shift = [], [], [], 0, 0
    for start, end, rep in sorted(edits):
        if start < pos:
            raise ValueError("overlapping edits")
        out.append(text[pos:start])
        new_start = start + shift
        out.append(rep)
        if rep:
            spans.append((new_start, new_start + len(rep)))
        if end > start:
            orig.append((start, end))
        shift += len(rep) - (end - start)
        pos = end
    out.append(text[pos:])
    return "".join(out), spans, orig


def _word_swap(
    report: Report, pattern: re.Pattern[str], swap: Any, rng: np.random.Generator
) -> tuple[list[tuple[int, int, str]], str | None] | None:
    cands = [s for s in report.sentences if s.positive and pattern.search(report.text[s.start : s.end])]
    if not cands:
        return None
    target = cands[int(rng.integers(len(cands)))]
    group = [s for s in cands if target.finding is not None and s.finding == target.finding] or [target]
    choice = int(rng.integers(2))
    edits = []
    for s in group:
        for m in pattern.finditer(report.text[s.start : s.end]):
            new = swap(m, choice)
            if new is not None and new != m.group(0):
                edits.append((s.start + m.start(), s.start + m.end(), new))
    return (edits, target.finding) if edits else None


def _swap_side(m: re.Match[str], choice: int) -> str:
    w = m.group(0)
    table = {"left": "right", "right": "left", "bilateral": ("left", "right")[choice]}
    return _same_case(w, table[w.lower()])


def _swap_severity(m: re.Match[str], choice: int) -> str:
    if m.group(2):
        value = float(m.group(2))
        new = value * 2 if value < 20 or choice else max(value / 2, 1)
        text = f"{new:.0f}" if float(new).is_integer() or m.group(3).lower() == "mm" else f"{new:.1f}"
        return m.group(0).replace(m.group(2), text, 1)
    w = m.group(1)
    return _same_case(w, _SWAP_SEVERITY[w.lower()] if w.lower() != "moderate" else ("mild", "severe")[choice])


def _swap_location(m: re.Match[str], choice: int) -> str:
    w = m.group(0)
    new = _SWAP_LOCATION[w.lower()]
    if w.lower() == "middle":
        new = ("upper", "lower")[choice]
    return _same_case(w, new)


def _flip(sentence: str, positive: bool, finding_name: str) -> str:
    rules = _POS_TO_NEG if positive else _NEG_TO_POS
    for pattern, rep in rules:
        if pattern.search(sentence):
            return pattern.sub(rep, sentence, count=1)
    return f"No {finding_name}." if positive else f"There is {finding_name}."


def _negation_flip(
    report: Report, rng: np.random.Generator
) -> tuple[list[tuple[int, int, str]], str | None] | None:
    cands = [
        s
        for s in report.sentences
        if s.finding is not None and s.positive is not None and s.section == "findings"
    ]
    if not cands:
        return None
    target = cands[int(rng.integers(len(cands)))]
    group = [s for s in report.sentences if s.finding == target.finding and s.positive == target.positive]
    name = target.finding.replace("_", " ") if target.finding else "abnormality"
    edits = []
    for s in group:
        old = report.text[s.start : s.end]
        edits.append(_minimal_edit(s.start, old, _flip(old, bool(s.positive), name)))
    return edits, target.finding


def _omit(report: Report, rng: np.random.Generator) -> tuple[list[tuple[int, int, str]], str | None] | None:
    cands = [s for s in report.sentences if s.positive and s.finding is not None]
    if not cands:
        return None
    target = cands[int(rng.integers(len(cands)))]
    group = [s for s in cands if s.finding == target.finding]
    edits: list[tuple[int, int, str]] = [
        (s.start - 1 if report.text[s.start - 1 : s.start] == " " else s.start, s.end, "") for s in group
    ]
    impression = [s for s in report.sentences if s.section == "impression"]
    if impression and all(s in group for s in impression):
        last = impression[-1]
        edits[group.index(last)] = (last.start - 1, last.end, " " + report.normal_impression)
    return edits, target.finding


def _insert(
    report: Report, rng: np.random.Generator, catalogue: Catalogue
) -> tuple[list[tuple[int, int, str]], str | None] | None:
    mentioned = {s.finding for s in report.sentences}
    text_lower = report.text
    candidates = report.insert_pool or tuple(f.id for f in catalogue.for_kind("cxr") if f.id != "normal")
    pool = [
        fid
        for fid in candidates
        if fid not in mentioned and fid in FINDING_PATTERNS and not FINDING_PATTERNS[fid].search(text_lower)
    ]
    findings = [s for s in report.sentences if s.section == "findings"]
    if not pool or not findings:
        return None
    fid = pool[int(rng.integers(len(pool)))]
    f = Finding(fid, sample_attributes(catalogue.findings[fid], rng))
    after = findings[int(rng.integers(len(findings)))]
    edits = [(after.end, after.end, " " + positive_sentence(f, rng))]
    impression = [s for s in report.sentences if s.section == "impression"]
    if impression and rng.uniform() < 0.5:
        edits.append((impression[-1].end, impression[-1].end, " " + positive_sentence(f, rng, short=True)))
    return edits, fid


def inject(
    report: Report, error_type: str, rng: np.random.Generator, catalogue: Catalogue
) -> InjectedError | None:
    """Inject one error of ``error_type`` into ``report``.

    Args:
        report: the correct report with tagged sentences.
        error_type: one of ``ERROR_TYPES``.
        rng: random generator.
        catalogue: findings catalogue (for inserted findings).

    Returns:
        The altered report with spans, or None when the report offers no place for that error.

    Raises:
        ValueError: on an unknown error type.
    """
    if error_type == "wrong_laterality":
        res = _word_swap(report, _SIDE, _swap_side, rng)
    elif error_type == "wrong_severity":
        res = _word_swap(report, _SEVERITY, _swap_severity, rng)
    elif error_type == "wrong_location":
        res = _word_swap(report, _LOCATION, _swap_location, rng)
    elif error_type == "negation_flip":
        res = _negation_flip(report, rng)
    elif error_type == "omitted_finding":
        res = _omit(report, rng)
    elif error_type == "inserted_finding":
        res = _insert(report, rng, catalogue)
    else:
        raise ValueError(f"unknown error type {error_type!r}; expected one of {ERROR_TYPES}")
    if res is None:
        return None
    edits, finding = res
    text, spans, orig = apply_edits(report.text, edits)
    if text == report.text:
        return None
    return InjectedError(text, error_type, spans, orig, finding)


def error_record(
    report: Report,
    rng: np.random.Generator,
    catalogue: Catalogue,
    counts: Counter[str],
    error_rate: float = 0.5,
) -> InjectedError:
    """Either keep the report (SIMPLE label "no error") or inject the least-used applicable error.

    Args:
        report: the correct report.
        rng: random generator.
        catalogue: findings catalogue.
        counts: counts of ``"none"`` and each error type so far; updated in place.
        error_rate: target fraction of altered reports.

    Returns:
        The record; ``error_type`` None means unchanged.
    """
    total = sum(counts.values())
    if counts["none"] < (1.0 - error_rate) * (total + 1) - 0.5 * rng.uniform():
        counts["none"] += 1
        return InjectedError(report.text, None)
    order = sorted(ERROR_TYPES, key=lambda t: (counts[t], rng.uniform()))
    for t in order:
        res = inject(report, t, rng, catalogue)
        if res is not None:
            counts[t] += 1
            return res
    counts["none"] += 1
    return InjectedError(report.text, None)


def error_json(rec: InjectedError, original: str) -> dict[str, Any]:
    """The JSONL form of an error record (without ids)."""
    return {
        "report": rec.text,
        "original_report": original,
        "has_error": rec.error_type is not None,
        "label": "error" if rec.error_type else "no error",
        "error_type": rec.error_type or "none",
        "spans": [list(s) for s in rec.spans],
        "original_spans": [list(s) for s in rec.original_spans],
        "error_finding": rec.finding or "",
    }
