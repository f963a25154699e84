"""Captions, VQA conversations and ProbMed-style probe pairs from a study's ground truth.

Closed questions are balanced by construction so that a blind model (one that sees the question
but not the image) cannot beat chance by much: a :class:`Balancer` per split keeps the counts of
each answer per template and finding, and the generator picks which absent finding or which
option letter to use so that the counts stay level. Answers are short and canonical ("yes",
"no", a letter, or one word) so evaluation is exact.

Probe pairs follow ProbMed (Yan et al., "Worse than Random? An Embarrassingly Simple Probing
Evaluation of Large Multimodal Models in Medical VQA", 2024): each question whose gold answer is
"yes" is paired with an adversarial question about a hallucinated finding, attribute or
position whose gold answer is "no".
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from data_prep.phantoms.catalogue import Catalogue
from data_prep.phantoms.phrases import (
    LATERALIZED,
    LOBES,
    MODALITY,
    NAMES,
    ORGAN,
    findings_list,
    location,
    with_article,
)
from data_prep.phantoms.spec import Finding, StudySpec

LETTERS = ("A", "B", "C", "D")
_EXISTENCE = (
    "Is there {x}?",
    "Is there evidence of {x}?",
    "Does this image show {x}?",
    "Is {x} present?",
)
_NORMAL = MappingProxyType(
    {
        "cxr": "Is this chest radiograph normal?",
        "ct": "Is this CT normal?",
        "slide": "Is this tissue normal?",
    }
)
_CAPTIONS_ABN = (
    "{Mod} showing {f}.",
    "{Mod} with {f}.",
    "Findings on this {mod}: {f}.",
    "This {mod} demonstrates {f}.",
)
_CAPTIONS_NORMAL = (
    "{Mod} with no acute abnormality.",
    "Normal {mod}.",
    "{Mod}: no abnormal finding.",
    "This {mod} is unremarkable.",
)
_CAPTIONS_NORMAL_SLIDE = (
    "H&E-stained tissue patch with normal glands and no tumor.",
    "Normal tissue: regular glands with uniform nuclei.",
    "This H&E-stained patch shows normal tissue.",
)
_OTHER_MODALITY = MappingProxyType(
    {
        "cxr": ("a CT scan", "a histopathology slide"),
        "ct": ("a chest radiograph", "a histopathology slide"),
        "slide": ("a chest radiograph", "a CT scan"),
    }
)
_THIS_MODALITY = MappingProxyType(
    {"cxr": "a chest radiograph", "ct": "a CT scan", "slide": "a histopathology slide"}
)


@dataclass
class Balancer:
    """Answer counts per balancing key, for one split (no module-level state)."""

    counts: Counter[tuple[str, ...]] = field(default_factory=Counter)

    def add(self, *key: str) -> None:
        """Count one answer under ``key``."""
        self.counts[key] += 1

    def get(self, *key: str) -> int:
        """Count under ``key``."""
        return self.counts[key]


@dataclass(frozen=True)
class QA:
    """One question-answer pair about an image."""

    question: str
    answer: str
    question_type: str  # "closed" | "open"
    template: str
    finding: str = ""
    options: tuple[str, ...] = ()


def _pick(rng: np.random.Generator, seq: tuple[str, ...] | list[str]) -> str:
    return seq[int(rng.integers(len(seq)))]


def caption(spec: StudySpec, rng: np.random.Generator) -> str:
    """A one-sentence caption of the study.

    Args:
        spec: ground truth.
        rng: random generator (template and phrasing choice).

    Returns:
        The caption.
    """
    mod = MODALITY[spec.kind]
    if spec.kind == "ct":
        mod = f"axial {spec.region} CT" if spec.region else "axial CT"
    if spec.kind == "slide":
        mod = "H&E-stained tissue patch"
        if spec.is_normal:
            return _pick(rng, _CAPTIONS_NORMAL_SLIDE)
    if spec.is_normal:
        t = _pick(rng, _CAPTIONS_NORMAL)
        return t.format(mod=mod, Mod=mod[0].upper() + mod[1:])
    t = _pick(rng, _CAPTIONS_ABN)
    return t.format(mod=mod, Mod=mod[0].upper() + mod[1:], f=findings_list(spec, rng))


def _balanced(bal: Balancer, key: tuple[str, ...], answer: str, other: str, rng: np.random.Generator) -> bool:
    """Whether asking a question with ``answer`` keeps its counts level with ``other``."""
    mine, theirs = bal.get(*key, answer), bal.get(*key, other)
    return mine < theirs or (mine == theirs and bool(rng.uniform() < 0.5))


def _existence_questions(
    spec: StudySpec, pool: list[str], rng: np.random.Generator, bal: Balancer
) -> list[QA]:
    """Yes/no questions about findings, asked only while that finding's yes and no counts stay level.

    Each finding of the pool is considered in random order; a question whose answer is ahead of
    the other answer for that finding is skipped, so per finding (and per template) the split
    holds as many "yes" as "no" answers, give or take one.
    """
    out: list[QA] = []
    present = {f.id for f in spec.findings}
    for j in rng.permutation(len(pool)):
        fid = pool[int(j)]
        ans, other = ("yes", "no") if fid in present else ("no", "yes")
        if _balanced(bal, ("existence", fid), ans, other, rng):
            out.append(
                QA(_pick(rng, _EXISTENCE).format(x=with_article(fid)), ans, "closed", "existence", fid)
            )
            bal.add("existence", fid, ans)
    ans, other = ("yes", "no") if spec.is_normal else ("no", "yes")
    if _balanced(bal, ("normal",), ans, other, rng):
        out.append(QA(_NORMAL[spec.kind], ans, "closed", "normal"))
        bal.add("normal", ans)
    return out


def _multiple_choice(spec: StudySpec, pool: list[str], rng: np.random.Generator, bal: Balancer) -> list[QA]:
    present = [f.id for f in spec.findings]
    absent = [p for p in pool if p not in present]
    if not present or len(absent) < 3:
        return []
    correct = _pick(rng, present)
    counts = [bal.get("mc_finding", letter) for letter in LETTERS]
    slots = [i for i, c in enumerate(counts) if c == min(counts)]
    slot = slots[int(rng.integers(len(slots)))]
    distractors = [absent[i] for i in rng.choice(len(absent), size=3, replace=False)]
    options = [*distractors[:slot], correct, *distractors[slot:]]
    text = (
        "Which of the following is seen in this image? "
        + " ".join(f"{LETTERS[i]}) {NAMES[o]}" for i, o in enumerate(options))
        + " Answer with the letter."
    )
    bal.add("mc_finding", LETTERS[slot])
    return [QA(text, LETTERS[slot], "closed", "mc_finding", correct, tuple(options))]


def _attribute_questions(f: Finding, rng: np.random.Generator) -> list[QA]:
    out: list[QA] = []
    at, name = f.attributes, NAMES[f.id]
    lat = at.get("laterality")
    if f.id in LATERALIZED and lat in ("left", "right"):
        q = _pick(
            rng,
            (
                f"On which side of the patient is the {name}? Answer left or right.",
                f"Is the {name} on the patient's left or right?",
            ),
        )
        out.append(QA(q, str(lat), "closed", "laterality", f.id, ("left", "right")))
    if "severity" in at:
        out.append(
            QA(
                f"Is the {name} small or large?",
                str(at["severity"]),
                "closed",
                "severity",
                f.id,
                ("small", "large"),
            )
        )
    if "zone" in at:
        out.append(
            QA(
                f"In which lung zone is the {name}? Answer upper, middle or lower.",
                str(at["zone"]),
                "closed",
                "zone",
                f.id,
                ("upper", "middle", "lower"),
            )
        )
    if "lobe" in at:
        lobes = tuple(LOBES.values())
        out.append(QA(f"Which lobe is the {name} in?", LOBES[str(at["lobe"])], "closed", "lobe", f.id, lobes))
    loc = location(f)
    if loc:
        out.append(QA(f"Where is the {name}?", loc, "open", "location", f.id))
    return out


def _pool(spec: StudySpec, catalogue: Catalogue, pool: list[str] | None) -> list[str]:
    if pool is not None:
        return pool
    return [f.id for f in catalogue.for_kind(spec.kind) if f.id not in ("normal", "normal_tissue")]


def questions(
    spec: StudySpec,
    catalogue: Catalogue,
    rng: np.random.Generator,
    bal: Balancer,
    pool: list[str] | None = None,
) -> list[QA]:
    """All question-answer pairs for one study.

    Args:
        spec: ground truth.
        catalogue: findings catalogue (the pool of askable findings).
        rng: random generator.
        bal: the split's answer counts, updated in place.
        pool: finding ids that may be asked about (default: every abnormal finding of the kind).

    Returns:
        Closed (existence, normal, multiple choice, laterality, severity, zone, lobe) and open
        (modality, organ, findings, location) questions.
    """
    pool = _pool(spec, catalogue, pool)
    out = _existence_questions(spec, pool, rng, bal)
    out += _multiple_choice(spec, pool, rng, bal)
    for f in spec.findings:
        out += _attribute_questions(f, rng)
    out.append(
        QA(
            _pick(rng, ("What imaging modality is this?", "What kind of image is this?")),
            MODALITY[spec.kind],
            "open",
            "modality",
        )
    )
    if spec.kind != "slide":
        out.append(QA("Which organ system is shown?", spec.region or ORGAN[spec.kind], "open", "organ"))
    out.append(
        QA(
            _pick(
                rng,
                (
                    "What abnormalities are seen in this image?",
                    "Describe the findings.",
                    "What does this image show?",
                ),
            ),
            findings_list(spec),
            "open",
            "findings",
        )
    )
    return out


def _probe(pair: str, q: str, a: str, kind: str, cat: str, fid: str, evidence: str) -> dict[str, Any]:
    record = {"pair_id": pair, "question": q, "answer": a, "kind": kind, "category": cat, "finding": fid}
    if evidence:
        record["evidence"] = evidence
    return record


def _pair(
    pair_id: str,
    true_q: str,
    false_q: str,
    category: str,
    finding: str,
    false_finding: str | None = None,
    *,
    evidence: str = "",
) -> list[dict[str, Any]]:
    """A true record (gold "yes") and its adversarial twin (gold "no") under one ``pair_id``.

    ``evidence``, for attribute and position pairs, is what the image shows, in words that complete
    "It is ...": ``"on the patient's left"``, ``"small"``, ``"in the upper zone"``. Both records carry
    it, so a trainer can teach a reasoned answer (read the attribute off, then compare).
    """
    return [
        _probe(pair_id, true_q, "yes", "true", category, finding, evidence),
        _probe(
            pair_id,
            false_q,
            "no",
            "adversarial",
            category,
            finding if false_finding is None else false_finding,
            evidence,
        ),
    ]


def _finding_pairs(pid: str, f: Finding, absent: list[str], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Existence, side, severity, zone and lobe pairs for one present finding (those that apply)."""
    name, at = NAMES[f.id], f.attributes
    out: list[dict[str, Any]] = []
    if absent:
        fake = _pick(rng, absent)
        out += _pair(
            f"{pid}e",
            f"Is there {with_article(f.id)}?",
            f"Is there {with_article(fake)}?",
            "existence",
            f.id,
            fake,
        )
    lat = at.get("laterality")
    if lat in ("left", "right"):
        flip = "right" if lat == "left" else "left"
        q = f"Is the {name} on the patient's {{}}?"
        out += _pair(
            f"{pid}a", q.format(lat), q.format(flip), "attribute", f.id, evidence=f"on the patient's {lat}"
        )
    if "severity" in at:
        flip = "large" if at["severity"] == "small" else "small"
        out += _pair(
            f"{pid}s",
            f"Is the {name} {at['severity']}?",
            f"Is the {name} {flip}?",
            "attribute",
            f.id,
            evidence=str(at["severity"]),
        )
    if "zone" in at:
        fake_zone = _pick(rng, [z for z in ("upper", "middle", "lower") if z != at["zone"]])
        q = f"Is the {name} in the {{}} zone?"
        out += _pair(
            f"{pid}z",
            q.format(at["zone"]),
            q.format(fake_zone),
            "position",
            f.id,
            evidence=f"in the {at['zone']} zone",
        )
    if "lobe" in at:
        fake_lobe = _pick(rng, [v for k, v in LOBES.items() if k != at["lobe"]])
        q = f"Is the {name} in the {{}}?"
        lobe = LOBES[str(at["lobe"])]
        out += _pair(
            f"{pid}l", q.format(lobe), q.format(fake_lobe), "position", f.id, evidence=f"in the {lobe}"
        )
    return out


def probe_pairs(
    spec: StudySpec, catalogue: Catalogue, rng: np.random.Generator, pool: list[str] | None = None
) -> list[dict[str, Any]]:
    """ProbMed-style probe pairs: a true question (gold "yes") and an adversarial one (gold "no").

    Every study gets a modality pair; each present finding an existence pair (when some
    finding is absent) and pairs for the attributes it has (side, severity, zone, lobe).

    Args:
        spec: ground truth.
        catalogue: findings catalogue.
        rng: random generator.
        pool: finding ids a hallucinated finding is drawn from (default: the kind's findings).

    Returns:
        Records with ``pair_id``, ``question``, ``answer``, ``kind`` ("true" | "adversarial"),
        ``category`` ("modality" | "existence" | "attribute" | "position") and ``finding``;
        attribute and position records also ``evidence`` (see :func:`_pair`).
    """
    sid = spec.study_id
    other = _pick(rng, _OTHER_MODALITY[spec.kind])
    out = _pair(f"{sid}-p0", f"Is this {_THIS_MODALITY[spec.kind]}?", f"Is this {other}?", "modality", "")
    absent = [p for p in _pool(spec, catalogue, pool) if spec.get(p) is None]
    for i, f in enumerate(spec.findings, start=1):
        out += _finding_pairs(f"{sid}-p{i}", f, absent, rng)
    return out
