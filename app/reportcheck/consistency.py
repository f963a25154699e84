"""Rule-based self-consistency checks of a radiology report (no model, no image).

A report is split into sections (FINDINGS, IMPRESSION; headers such as INDICATION or COMPARISON
are read but never checked: "rule out pneumothorax" is not a finding), sentences and clauses.
Each clause mention of a finding (the error injector's vocabulary,
``data_prep.phantoms.report_errors.FINDING_PATTERNS``) gets a polarity (affirmed, negated, or
hedged: "possible", "no new", "cannot be excluded"), sides, locations, severity words and sizes.

The rules, each naming its evidence sentences:

- ``laterality_conflict`` (``wrong_laterality``): FINDINGS puts a finding on one side only and
  IMPRESSION on the other side only.
- ``affirmed_and_negated`` (``negation_flip``): a finding is affirmed and also negated without a
  side or location that tells the two mentions apart ("Small left effusion." / "No effusion.").
- ``severity_conflict`` (``wrong_severity``): FINDINGS and IMPRESSION grade the same finding two or
  more steps apart (small vs large, mild vs severe), or give sizes differing by a factor of 2+.
- ``location_conflict`` (``wrong_location``): FINDINGS and IMPRESSION place it in opposite zones
  (upper vs lower).
- ``size_out_of_range`` (``wrong_severity``): a measurement outside the range its finding allows
  (a nodule is at most 3 cm, a mass at least 3 cm; nothing in a chest exceeds 40 cm): usually a
  mm/cm slip.

The phantoms' injected errors change every sentence about a finding alike, so these rules do not
catch them (only the image can); they catch the copy-and-edit slips of real reports.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Final, Literal

from data_prep.phantoms.report_errors import FINDING_PATTERNS

RULES_VERSION: Final = "reportcheck-rules@1"
Section = Literal["findings", "impression", "other"]
Polarity = Literal["affirmed", "negated", "hedged"]

_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z ]{2,30}):\s*", re.M)
_FINDINGS_HEADERS = frozenset({"findings", "finding", "report", "body"})
_IMPRESSION_HEADERS = frozenset({"impression", "impressions", "conclusion", "conclusions", "opinion"})
# A sentence ends at . ! ? before a space, a line end, or the end; not after a title or "vs".
_SENTENCE = re.compile(
    r"[^\n]+?(?:(?<!\bDr)(?<!\bMr)(?<!\bMrs)(?<!\bMs)(?<!\bvs)(?<!\bProf)(?<!\bSt)[.!?](?=\s|$)|(?=\n)|$)"
)
_SCOPE_SPLIT = re.compile(r";|\b(?:but|however|although|whereas|while|except)\b|\band (?=there\b)", re.I)
_CLAUSE_SPLIT = re.compile(r"[,:]|\band (?=(?:a|an|the|small|large|mild)\b)", re.I)
_NEGATION = re.compile(
    r"\b(no|not|without|negative for|free of|absence of|absent|resolved|clear of|cleared)\b", re.I
)
_NEGATION_AFTER = re.compile(
    r"\b(?:is|are|remains?)\s+(?:normal|unremarkable|within normal limits|not enlarged|absent|resolved)\b"
    r"|\bhas resolved\b|^\s*(?:normal|not enlarged|within normal limits)\b",
    re.I,
)
_HEDGE = re.compile(
    r"\b(possible|possibly|probable|may|might|cannot be excluded|can ?not be excluded|questionable|"
    r"suspicious for|concerning for|versus|vs|rule out|r/o|no new|no change|no interval|"
    r"no significant change|no increase|no decrease|unchanged|differential|unclear|uncertain|"
    r"excluded|borderline|equivocal|upper limits? of normal|indeterminate|resolution|improv\w*|"
    r"recommend\w*|evaluation|if clinically|sensitive|likely|suggest\w*)\b|\?",
    re.I,
)
# Past or other studies: "the nodules on previous exam", "seen on the prior CT".
_HEDGE_SCOPE = re.compile(r"\b(previous|previously|prior|outside|interval|CT scan|compared)\b", re.I)
# "No focal airspace disease", "no large effusion": a negation limited by an extent word leaves room
# for a lesser finding, so it never contradicts an affirmed mention.
_QUALIFIED_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|clear of)\b.*"
    r"\b(focal|large|significant|acute|definite|confluent|overt|frank|gross|new|discrete|dense|lobar|substantial|appreciable|visible|displaced|"
    r"suspicious|other|xxxx|definitive|definitely|residual|additional|further)\b",
    re.I,
)
# Words that make a pattern's hit another finding ("pericardial effusion" is not pleural).
_OTHER_FINDING: Final = {
    "pleural_effusion": re.compile(r"pericardial|joint|suprapatellar|knee|elbow|ascites", re.I),
    "pulmonary_edema": re.compile(r"laryngeal|soft tissue|pedal|extremit|scalp|cerebral", re.I),
    "lung_mass": re.compile(r"soft tissue mass|mediastinal mass|body mass", re.I),
}
# Findings named by the organ ("heart size", "cardiac silhouette"): asserted only with these words.
_NEEDS_ASSERTION: Final = {
    "cardiomegaly": re.compile(r"cardiomegaly|enlarg|increased|prominent|large", re.I),
}
_SIDE = re.compile(r"\b(left|right|bilateral|bilaterally|both)\b", re.I)
_LOCATION_AXIS: Final = {
    "upper": "upper",
    "apical": "upper",
    "apex": "upper",
    "apices": "upper",
    "middle": "middle",
    "mid": "middle",
    "lower": "lower",
    "basal": "lower",
    "base": "lower",
    "bases": "lower",
    "basilar": "lower",
}
_LOCATION = re.compile(r"\b(" + "|".join(_LOCATION_AXIS) + r")\b", re.I)
_SEVERITY_RANK: Final = {
    "trace": 0,
    "tiny": 0,
    "minimal": 0,
    "small": 1,
    "mild": 1,
    "moderate": 2,
    "large": 3,
    "severe": 3,
    "massive": 3,
    "extensive": 3,
}
_SEVERITY = re.compile(r"\b(" + "|".join(_SEVERITY_RANK) + r")\b", re.I)
_SIZE = re.compile(r"\b(\d+(?:\.\d+)?)\s?(mm|cm)\b", re.I)
# (lowest, highest) plausible size in mm; outside it the unit or the term is probably wrong.
SIZE_RANGE_MM: Final = {"lung_nodule": (1.0, 30.0), "lung_mass": (30.0, 400.0)}
MAX_SIZE_MM: Final = 400.0


@dataclass(frozen=True)
class Sentence:
    """One sentence of the report.

    Attributes:
        index: 0-based position among the report's sentences.
        section: ``findings``, ``impression`` or ``other`` (indication, comparison, ...).
        start: offset of its first character in the report.
        end: offset one past its last character.
        text: the sentence.
    """

    index: int
    section: Section
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Mention:
    """A finding named in one clause of a sentence.

    Attributes:
        sentence: where it is.
        finding: catalogue id (``pleural_effusion``).
        polarity: ``affirmed``, ``negated`` or ``hedged``.
        sides: ``left`` and/or ``right`` named in the clause (bilateral gives both).
        locations: zones named in the clause, on the upper/middle/lower axis.
        severities: severity ranks (0 trace ... 3 large/severe) named in the clause.
        sizes_mm: measurements in the clause, in millimetres.
        qualified: a negation limited by an extent word ("no focal", "no large", "no acute").
    """

    sentence: Sentence
    finding: str
    polarity: Polarity
    sides: frozenset[str] = frozenset()
    locations: frozenset[str] = frozenset()
    severities: tuple[int, ...] = ()
    sizes_mm: tuple[float, ...] = ()
    qualified: bool = False


@dataclass(frozen=True)
class ParsedReport:
    """The report split into sentences, with the finding mentions found in them."""

    text: str
    sentences: tuple[Sentence, ...]
    mentions: tuple[Mention, ...]
    has_sections: bool

    def status(self, finding: str) -> Literal["present", "absent", "not_mentioned", "unclear"]:
        """What the report says about a finding, from its checked (findings/impression) mentions."""
        polar = {m.polarity for m in self.mentions if m.finding == finding and m.sentence.section != "other"}
        if not polar:
            return "not_mentioned"
        if polar == {"affirmed"} or polar == {"affirmed", "hedged"}:
            return "present"
        if polar == {"negated"}:
            return "absent"
        return "unclear"


@dataclass(frozen=True)
class Inconsistency:
    """A rule that fired.

    Attributes:
        check: the rule (``laterality_conflict`` ...).
        error_type: the error type it indicates (one of the eval harness's ``ERROR_TYPES``).
        finding: the finding it is about.
        sentences: the evidence sentences.
        detail: one sentence saying what disagrees ("left in FINDINGS, right in IMPRESSION").
    """

    check: str
    error_type: str
    finding: str
    sentences: tuple[Sentence, ...]
    detail: str


def _section(header: str) -> Section:
    name = header.strip().lower()
    if name in _FINDINGS_HEADERS:
        return "findings"
    if name in _IMPRESSION_HEADERS:
        return "impression"
    return "other"


def split_sentences(text: str) -> tuple[tuple[Sentence, ...], bool]:
    """Split a report into sentences tagged with their section.

    Returns:
        The sentences and whether the report had a FINDINGS or IMPRESSION header (without one,
        every sentence counts as findings).
    """
    headers = list(_HEADER.finditer(text))
    blocks: list[tuple[Section, int, int]] = []
    if not headers:
        blocks.append(("findings", 0, len(text)))
    else:
        if text[: headers[0].start()].strip():
            blocks.append(("findings", 0, headers[0].start()))
        for i, h in enumerate(headers):
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            blocks.append((_section(h.group(1)), h.end(), end))
    has_sections = any(s in ("findings", "impression") for s, _, _ in blocks) and bool(headers)
    sentences: list[Sentence] = []
    for section, start, end in blocks:
        for m in _SENTENCE.finditer(text, start, end):
            body = m.group(0).strip()
            if len(body) < 3:
                continue
            lead = m.start() + (len(m.group(0)) - len(m.group(0).lstrip()))
            sentences.append(Sentence(len(sentences), section, lead, lead + len(body), body))
    return tuple(sentences), has_sections


def _pieces(text: str, boundary: re.Pattern[str]) -> list[tuple[int, str]]:
    """``text`` cut at ``boundary`` matches, as (offset, piece) pairs (empty pieces dropped)."""
    out, pos = [], 0
    for m in boundary.finditer(text):
        out.append((pos, text[pos : m.start()]))
        pos = m.end()
    out.append((pos, text[pos:]))
    return [(o, p) for o, p in out if p.strip()]


def _polarity(finding: str, scope: str, clause: str, start: int, end: int) -> tuple[Polarity, bool]:
    """Polarity of the hit ``scope[start:end]`` and whether a negation of it is qualified.

    Negation reaches across the commas of a list ("No consolidation, effusion or pneumothorax"),
    so it is read in the whole scope; hedges are read in the hit's own clause.
    """
    before, after = scope[:start], scope[end:]
    if _HEDGE.search(clause) or _HEDGE_SCOPE.search(scope):
        return "hedged", False
    if _NEGATION.search(before) or _NEGATION_AFTER.search(after):
        return "negated", bool(_QUALIFIED_NEGATION.search(before))
    if finding in _NEEDS_ASSERTION and not _NEEDS_ASSERTION[finding].search(scope):
        return "hedged", False  # "Cardiomediastinal silhouette is stable": describes, asserts nothing
    return "affirmed", False


def _clause_mentions(sentence: Sentence, scope: str, offset: int, clause: str) -> list[Mention]:
    """Findings named in ``clause``, which starts at ``offset`` in ``scope``."""
    out = []
    for finding, pattern in FINDING_PATTERNS.items():
        hit = pattern.search(clause)
        other = _OTHER_FINDING.get(finding)
        if hit is None or (other is not None and other.search(clause)):
            continue
        polarity, qualified = _polarity(finding, scope, clause, offset + hit.start(), offset + hit.end())
        sides: set[str] = set()
        for s in _SIDE.findall(clause):
            sides.update(
                ("left", "right") if s.lower() in ("bilateral", "bilaterally", "both") else (s.lower(),)
            )
        out.append(
            Mention(
                sentence,
                finding,
                polarity,
                frozenset(sides),
                frozenset(_LOCATION_AXIS[w.lower()] for w in _LOCATION.findall(clause)),
                tuple(_SEVERITY_RANK[w.lower()] for w in _SEVERITY.findall(clause)),
                tuple(float(v) * (10.0 if u.lower() == "cm" else 1.0) for v, u in _SIZE.findall(clause)),
                qualified,
            )
        )
    return out


def _sentence_mentions(sentence: Sentence) -> list[Mention]:
    found = [
        m
        for _, scope in _pieces(sentence.text, _SCOPE_SPLIT)
        for offset, clause in _pieces(scope, _CLAUSE_SPLIT)
        for m in _clause_mentions(sentence, scope, offset, clause)
    ]
    if len({m.finding for m in found}) != 1:
        return found
    # One finding in the sentence: its attributes may sit in another clause
    # ("Right upper lobe nodule, 2.5 cm."); the polarity stays the clause's own.
    whole = next(
        (
            m
            for m in _clause_mentions(sentence, sentence.text, 0, sentence.text)
            if m.finding == found[0].finding
        ),
        None,
    )
    if whole is None:
        return found
    return [
        replace(
            m,
            sides=m.sides or whole.sides,
            locations=m.locations or whole.locations,
            severities=m.severities or whole.severities,
            sizes_mm=m.sizes_mm or whole.sizes_mm,
        )
        for m in found
    ]


def parse_report(text: str) -> ParsedReport:
    """Sentences and finding mentions of a report.

    Args:
        text: the report as written (headers such as ``FINDINGS:`` start sections).

    Returns:
        The parsed report.
    """
    sentences, has_sections = split_sentences(text)
    mentions = [m for sentence in sentences for m in _sentence_mentions(sentence)]
    return ParsedReport(text, sentences, tuple(mentions), has_sections)


# -- the rules -----------------------------------------------------------------------------------


def _sides_compatible(a: Mention, b: Mention) -> bool:
    return not a.sides or not b.sides or bool(a.sides & b.sides)


def _cross_section_pairs(report: ParsedReport, finding: str) -> list[tuple[Mention, Mention]]:
    """Affirmed (findings, impression) mention pairs of one finding."""
    if not report.has_sections:
        return []
    affirmed = [m for m in report.mentions if m.finding == finding and m.polarity == "affirmed"]
    body = [m for m in affirmed if m.sentence.section == "findings"]
    impression = [m for m in affirmed if m.sentence.section == "impression"]
    return list(product(body, impression))


def _laterality(report: ParsedReport, finding: str) -> list[Inconsistency]:
    pairs = [(f, i) for f, i in _cross_section_pairs(report, finding) if f.sides and i.sides]
    if not pairs:
        return []
    body = frozenset().union(*(f.sides for f, _ in pairs))
    impression = frozenset().union(*(i.sides for _, i in pairs))
    if body & impression:
        return []
    f, i = pairs[0]
    detail = f"{'/'.join(sorted(body))} in FINDINGS, {'/'.join(sorted(impression))} in IMPRESSION"
    return [
        Inconsistency("laterality_conflict", "wrong_laterality", finding, (f.sentence, i.sentence), detail)
    ]


def _qualified_apart(negated: Mention, affirmed: Mention) -> bool:
    """Whether a side or zone tells a negated mention apart from an affirmed one."""
    if negated.sides and (not affirmed.sides or not negated.sides & affirmed.sides):
        return True
    return bool(negated.locations and (not affirmed.locations or not negated.locations & affirmed.locations))


def _affirmed_and_negated(report: ParsedReport, finding: str) -> list[Inconsistency]:
    checked = [m for m in report.mentions if m.finding == finding and m.sentence.section != "other"]
    for neg in (m for m in checked if m.polarity == "negated" and not m.qualified):
        for aff in (m for m in checked if m.polarity == "affirmed"):
            if aff.sentence.index != neg.sentence.index and not _qualified_apart(neg, aff):
                first, second = sorted((aff.sentence, neg.sentence), key=lambda s: s.index)
                detail = (
                    f"affirmed in sentence {aff.sentence.index + 1}, "
                    f"negated in sentence {neg.sentence.index + 1}"
                )
                return [
                    Inconsistency("affirmed_and_negated", "negation_flip", finding, (first, second), detail)
                ]
    return []


def _severity(report: ParsedReport, finding: str) -> list[Inconsistency]:
    pairs = [(f, i) for f, i in _cross_section_pairs(report, finding) if _sides_compatible(f, i)]
    graded = [(f, i) for f, i in pairs if len(f.severities) == 1 and len(i.severities) == 1]
    if graded and min(abs(f.severities[0] - i.severities[0]) for f, i in graded) >= 2:
        f, i = graded[0]
        words = {v: k for k, v in reversed(_SEVERITY_RANK.items())}
        detail = f"{words[f.severities[0]]} in FINDINGS, {words[i.severities[0]]} in IMPRESSION"
        return [
            Inconsistency("severity_conflict", "wrong_severity", finding, (f.sentence, i.sentence), detail)
        ]
    sized = [(f, i) for f, i in pairs if f.sizes_mm and i.sizes_mm]
    if sized:
        ratio = min(
            max(a, b) / max(min(a, b), 1e-6) for f, i in sized for a in f.sizes_mm for b in i.sizes_mm
        )
        if ratio >= 2.0:
            f, i = sized[0]
            detail = f"{f.sizes_mm[0]:g} mm in FINDINGS, {i.sizes_mm[0]:g} mm in IMPRESSION"
            return [
                Inconsistency(
                    "severity_conflict", "wrong_severity", finding, (f.sentence, i.sentence), detail
                )
            ]
    return []


def _location(report: ParsedReport, finding: str) -> list[Inconsistency]:
    pairs = [
        (f, i)
        for f, i in _cross_section_pairs(report, finding)
        if f.locations and i.locations and _sides_compatible(f, i)
    ]
    if not pairs:
        return []
    body = frozenset().union(*(f.locations for f, _ in pairs))
    impression = frozenset().union(*(i.locations for _, i in pairs))
    if body & impression:
        return []
    f, i = pairs[0]
    detail = f"{'/'.join(sorted(body))} zone in FINDINGS, {'/'.join(sorted(impression))} zone in IMPRESSION"
    return [Inconsistency("location_conflict", "wrong_location", finding, (f.sentence, i.sentence), detail)]


def _size_range(report: ParsedReport, finding: str) -> list[Inconsistency]:
    low, high = SIZE_RANGE_MM.get(finding, (0.0, MAX_SIZE_MM))
    for m in report.mentions:
        if m.finding != finding or m.polarity == "negated" or m.sentence.section == "other":
            continue
        for size in m.sizes_mm:
            if not low <= size <= high:
                detail = (
                    f"{size:g} mm is outside {low:g}-{high:g} mm for this finding: check the unit or the term"
                )
                return [Inconsistency("size_out_of_range", "wrong_severity", finding, (m.sentence,), detail)]
    return []


RULES: Final[tuple[Callable[[ParsedReport, str], list[Inconsistency]], ...]] = (
    _laterality,
    _affirmed_and_negated,
    _severity,
    _location,
    _size_range,
)


def check_consistency(report: ParsedReport) -> list[Inconsistency]:
    """Run every rule on every finding the report mentions.

    Args:
        report: from :func:`parse_report`.

    Returns:
        The rules that fired, in rule order then finding order (empty: no inconsistency found).
    """
    findings = list(dict.fromkeys(m.finding for m in report.mentions))
    return [hit for rule in RULES for finding in findings for hit in rule(report, finding)]


@dataclass(frozen=True)
class ConsistencyResult:
    """The parsed report and what the rules found."""

    report: ParsedReport
    inconsistencies: list[Inconsistency] = field(default_factory=list)


def check_report_text(text: str) -> ConsistencyResult:
    """Parse a report and run the rules on it (the module's one-call entry point)."""
    report = parse_report(text)
    return ConsistencyResult(report, check_consistency(report))
