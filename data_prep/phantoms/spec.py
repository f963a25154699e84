"""Ground truth of one synthetic study: which findings, with which attributes.

Conventions (documented in docs/PHANTOMS.md): ``laterality`` is always the *patient's* side. On
a PA chest radiograph and on an axial CT shown in radiological convention the patient's right
is on the image's left, so ``left`` findings are drawn in the right half of the image.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_prep.phantoms.catalogue import Catalogue, FindingSpec

# Pairs of findings that may not share a side in one study (a hydropneumothorax is out of scope).
_SAME_SIDE_CONFLICTS: frozenset[frozenset[str]] = frozenset({frozenset({"pleural_effusion", "pneumothorax"})})


@dataclass(frozen=True)
class Finding:
    """One labelled finding.

    Attributes:
        id: catalogue id.
        attributes: attribute values by name (strings, or ints for ``size_mm``).
    """

    id: str
    attributes: dict[str, Any] = field(default_factory=dict)

    def sides(self) -> set[str]:
        """Patient sides the finding occupies (empty when it has no laterality)."""
        lat = self.attributes.get("laterality")
        if lat is None:
            lobe = self.attributes.get("lobe")
            return {str(lobe).split("_")[0]} if lobe else set()
        return {"left", "right"} if lat == "bilateral" else {str(lat)}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form: ``{"id": ..., "attributes": {...}}``."""
        return {"id": self.id, "attributes": dict(sorted(self.attributes.items()))}


@dataclass(frozen=True)
class StudySpec:
    """The ground truth of one study.

    Attributes:
        study_id: unique id, also the file stem of its outputs.
        patient_id: synthetic patient id (splits are by patient).
        kind: ``cxr``, ``ct`` or ``slide``.
        findings: abnormal findings; empty means the study is normal.
        region: body region imaged (``chest``, ``head``, ``tissue``); empty means the kind's default.
    """

    study_id: str
    patient_id: str
    kind: str
    findings: tuple[Finding, ...]
    region: str = ""

    @property
    def is_normal(self) -> bool:
        """True when the study has no finding."""
        return not self.findings

    def ids(self) -> list[str]:
        """Finding ids, or ``["normal"]`` for a normal study."""
        return [f.id for f in self.findings] or ["normal"]

    def get(self, finding_id: str) -> Finding | None:
        """The finding with this id, if present."""
        return next((f for f in self.findings if f.id == finding_id), None)


def sample_attributes(spec: FindingSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Draw every attribute of a finding uniformly from its allowed values.

    Args:
        spec: catalogue entry.
        rng: random generator.

    Returns:
        Attribute values by name.
    """
    out: dict[str, Any] = {}
    for name, attr in spec.attributes.items():
        if attr.int_range is not None:
            out[name] = int(rng.integers(attr.int_range[0], attr.int_range[1] + 1))
        else:
            out[name] = str(attr.values[int(rng.integers(len(attr.values)))])
    return out


def _conflicts(findings: list[Finding]) -> bool:
    for i, a in enumerate(findings):
        for b in findings[i + 1 :]:
            if frozenset({a.id, b.id}) in _SAME_SIDE_CONFLICTS and a.sides() & b.sides():
                return True
    return False


def sample_findings(
    catalogue: Catalogue,
    kind: str,
    rng: np.random.Generator,
    count_probs: tuple[float, ...] = (0.25, 0.30, 0.25, 0.20),
) -> tuple[Finding, ...]:
    """Draw 0..3 distinct abnormal findings for a study of ``kind``.

    Every abnormal finding of the kind is equally likely, so each has the same prevalence and
    a yes/no question about it cannot be answered from priors.

    Args:
        catalogue: the findings catalogue.
        kind: study kind.
        rng: random generator.
        count_probs: probabilities of 0, 1, 2, 3 ... findings.

    Returns:
        The findings, validated against the catalogue, in catalogue order.
    """
    pool = [f for f in catalogue.for_kind(kind) if f.id not in ("normal", "normal_tissue")]
    k = int(rng.choice(len(count_probs), p=np.asarray(count_probs) / sum(count_probs)))
    k = min(k, len(pool))
    while True:
        chosen = sorted(rng.choice(len(pool), size=k, replace=False).tolist())
        findings = [Finding(pool[i].id, sample_attributes(pool[i], rng)) for i in chosen]
        if not _conflicts(findings):
            break
    for f in findings:
        catalogue.validate(f.id, f.attributes, kind)
    return tuple(findings)


def balance_attributes(
    findings: tuple[Finding, ...],
    catalogue: Catalogue,
    counts: Counter[tuple[str, str, str]],
    rng: np.random.Generator,
) -> tuple[Finding, ...]:
    """Re-draw categorical attributes so each value stays equally frequent.

    For every categorical attribute, the value with the lowest count so far in ``counts`` (ties
    broken at random) is used, so a blind guess of laterality, severity, zone or lobe scores no
    better than chance. Draws that would break a same-side conflict are skipped.

    Args:
        findings: findings as sampled.
        catalogue: findings catalogue.
        counts: counts keyed by ``(finding id, attribute, value)``; updated in place.
        rng: random generator.

    Returns:
        The findings with balanced attribute values.
    """
    out: list[Finding] = []
    for f in findings:
        attrs = dict(f.attributes)
        for name, spec in catalogue.findings[f.id].attributes.items():
            if not spec.values:
                continue
            seen = [counts[(f.id, name, v)] for v in spec.values]
            best = [v for v, c in zip(spec.values, seen, strict=True) if c == min(seen)]
            attrs[name] = best[int(rng.integers(len(best)))]
        out.append(Finding(f.id, attrs))
    if _conflicts(out):
        out = list(findings)
    for f in out:
        for name, value in f.attributes.items():
            if catalogue.findings[f.id].attributes[name].values:
                counts[(f.id, name, str(value))] += 1
    return tuple(out)
