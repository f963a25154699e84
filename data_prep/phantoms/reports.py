"""Radiology reports (FINDINGS and IMPRESSION) written from a chest radiograph's ground truth.

Each sentence is kept with the finding it is about and its polarity, so error injection
(:mod:`data_prep.phantoms.report_errors`) can change a report exactly and label the changed
character spans. Phrasing varies by template so a model cannot learn one sentence per finding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from data_prep.phantoms.phrases import LOBES
from data_prep.phantoms.spec import Finding, StudySpec


@dataclass(frozen=True)
class Sentence:
    """One sentence of a report, located in the report text.

    Attributes:
        start: offset of the first character in the report.
        end: offset one past the last character.
        finding: catalogue id the sentence is about, or None.
        positive: True if it asserts the finding, False if it negates it, None if neither.
        section: ``findings`` or ``impression``.
    """

    start: int
    end: int
    finding: str | None
    positive: bool | None
    section: str


@dataclass(frozen=True)
class Report:
    """Report text with its sentences.

    Attributes:
        text: the report.
        sentences: its sentences, located in ``text``.
        normal_impression: what the impression says when nothing is found (used by omissions).
        insert_pool: finding ids an inserted-finding error may add (empty: chest radiograph findings).
    """

    text: str
    sentences: tuple[Sentence, ...]
    normal_impression: str = "No acute cardiopulmonary abnormality."
    insert_pool: tuple[str, ...] = ()

    @property
    def findings_text(self) -> str:
        """The FINDINGS section body."""
        return self._section("findings")

    @property
    def impression_text(self) -> str:
        """The IMPRESSION section body."""
        return self._section("impression")

    def _section(self, name: str) -> str:
        parts = [self.text[s.start : s.end] for s in self.sentences if s.section == name]
        return " ".join(parts)


def _a(word: object) -> str:
    """Indefinite article for ``word`` ("an 18 mm", "a 20 mm", "an endotracheal")."""
    w = str(word)
    vowel_sound = w[:1].lower() in "aeio" or (w.startswith(("8", "11", "18")) and not w.startswith("180"))
    return "an" if vowel_sound else "a"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


# A finding's phrasings: (impression sentence, findings-section sentences to pick from).
_Phrasings = tuple[str, tuple[str, ...]]


def _effusion(at: Mapping[str, Any], side: str) -> _Phrasings:
    noun = "pleural effusions" if side == "bilateral" else "pleural effusion"
    severity = str(at["severity"])
    templates = (
        f"There is a {severity} {side} {noun}.",
        f"{severity.capitalize()} {side} {noun} blunting the costophrenic angle.",
        f"A {severity} {side} {noun} is present.",
    )
    options = tuple(
        t.replace("a small bilateral", "small bilateral").replace("a large bilateral", "large bilateral")
        for t in templates
    )
    return f"{severity.capitalize()} {side} {noun}.", options


def _pneumothorax(at: Mapping[str, Any], side: str) -> _Phrasings:
    return f"{side.capitalize()} pneumothorax.", (
        f"There is a {side} pneumothorax.",
        f"A {side} pneumothorax is present with a visible pleural line.",
    )


def _opacity(noun: str) -> Callable[[Mapping[str, Any], str], _Phrasings]:
    def phrasings(at: Mapping[str, Any], side: str) -> _Phrasings:
        size, zone = at["size_mm"], at["zone"]
        return f"{size} mm {side} {zone} zone {noun}.", (
            f"{_a(size).capitalize()} {size} mm {noun} is seen in the {side} {zone} zone.",
            f"There is {_a(size)} {size} mm {noun} in the {side} {zone} zone.",
        )

    return phrasings


def _consolidation(at: Mapping[str, Any], side: str) -> _Phrasings:
    lobe = LOBES[str(at["lobe"])]
    return f"{lobe.capitalize()} consolidation.", (
        f"There is consolidation in the {lobe}.",
        f"Airspace consolidation in the {lobe}.",
    )


def _atelectasis(at: Mapping[str, Any], side: str) -> _Phrasings:
    return f"{side.capitalize()} basal atelectasis.", (
        f"Plate-like atelectasis at the {side} base.",
        f"There is {side} basal atelectasis.",
    )


def _edema(at: Mapping[str, Any], side: str) -> _Phrasings:
    return "Pulmonary edema.", (
        "Perihilar haziness and Kerley B lines consistent with pulmonary edema.",
        "There is pulmonary edema.",
    )


def _cardiomegaly(at: Mapping[str, Any], side: str) -> _Phrasings:
    return "Cardiomegaly.", ("The heart is enlarged.", "There is cardiomegaly.")


def _ett(at: Mapping[str, Any], side: str) -> _Phrasings:
    return "Endotracheal tube in place.", (
        "An endotracheal tube terminates above the carina.",
        "Endotracheal tube in satisfactory position.",
    )


def _hemorrhage(at: Mapping[str, Any], side: str) -> _Phrasings:
    return f"{side.capitalize()} intracranial hemorrhage.", (
        f"There is a hyperdense {side} intraparenchymal hemorrhage.",
        f"A hyperdense collection in the {side} cerebral hemisphere is consistent with hemorrhage.",
    )


def _infarct(at: Mapping[str, Any], side: str) -> _Phrasings:
    return f"{side.capitalize()} cerebral infarct.", (
        f"There is a hypodense wedge-shaped area in the {side} cerebral hemisphere"
        " consistent with an infarct.",
        f"Hypodensity with loss of grey-white differentiation in the {side} hemisphere, an infarct.",
    )


def _cvc(at: Mapping[str, Any], side: str) -> _Phrasings:
    return f"{side.capitalize()} central venous catheter in place.", (
        f"A {side} subclavian central venous catheter terminates in the SVC.",
        f"{side.capitalize()}-sided central venous catheter with its tip in the SVC.",
    )


_POSITIVE: Mapping[str, Callable[[Mapping[str, Any], str], _Phrasings]] = MappingProxyType(
    {
        "pleural_effusion": _effusion,
        "pneumothorax": _pneumothorax,
        "lung_nodule": _opacity("nodule"),
        "lung_mass": _opacity("mass"),
        "consolidation": _consolidation,
        "atelectasis": _atelectasis,
        "pulmonary_edema": _edema,
        "cardiomegaly": _cardiomegaly,
        "endotracheal_tube": _ett,
        "intracranial_hemorrhage": _hemorrhage,
        "cerebral_infarct": _infarct,
        "central_venous_catheter": _cvc,
    }
)


def positive_sentence(f: Finding, rng: np.random.Generator, *, short: bool = False) -> str:
    """A sentence asserting ``f`` with its attributes.

    Args:
        f: the finding.
        rng: random generator (phrasing; not drawn from when ``short``).
        short: impression style (terse).

    Returns:
        The sentence, ending with a full stop.

    Raises:
        ValueError: for a finding without report phrasings.
    """
    phrasings = _POSITIVE.get(f.id)
    if phrasings is None:
        raise ValueError(f"no report sentence for {f.id!r}")
    impression, options = phrasings(f.attributes, str(f.attributes.get("laterality", "")))
    return impression if short else _pick(rng, options)


NEGATIVE_SENTENCES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cardiomegaly": ("Heart size is normal.", "The cardiac silhouette is not enlarged."),
        "pleural_effusion": ("No pleural effusion.", "There is no pleural effusion."),
        "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
        "consolidation": ("No focal consolidation.", "There is no consolidation."),
        "pulmonary_edema": ("No pulmonary edema.", "There is no pulmonary edema."),
    }
)
# Order of sentences in FINDINGS: devices, heart, lungs, pleura.
_ORDER = (
    "endotracheal_tube",
    "central_venous_catheter",
    "cardiomegaly",
    "lung_nodule",
    "lung_mass",
    "consolidation",
    "atelectasis",
    "pulmonary_edema",
    "pleural_effusion",
    "pneumothorax",
)


def negative_sentence(finding_id: str, rng: np.random.Generator) -> str:
    """A sentence negating ``finding_id`` (only findings in ``NEGATIVE_SENTENCES``)."""
    return _pick(rng, list(NEGATIVE_SENTENCES[finding_id]))


class ReportBuilder:
    """Accumulates sentences into report text, recording their spans."""

    def __init__(self) -> None:
        self.text = ""
        self.sentences: list[Sentence] = []

    def header(self, title: str) -> None:
        """Start a section: ``FINDINGS:`` or ``IMPRESSION:`` on a new line."""
        self.text += ("\n" if self.text else "") + f"{title}:"

    def add(self, sentence: str, finding: str | None, positive: bool | None, section: str) -> None:
        """Append one sentence after a space."""
        self.text += " "
        start = len(self.text)
        self.text += sentence
        self.sentences.append(Sentence(start, len(self.text), finding, positive, section))

    def build(
        self,
        normal_impression: str = "No acute cardiopulmonary abnormality.",
        insert_pool: tuple[str, ...] = (),
    ) -> Report:
        """The finished report."""
        return Report(self.text, tuple(self.sentences), normal_impression, insert_pool)


def write_report(spec: StudySpec, rng: np.random.Generator) -> Report:
    """Write a chest radiograph or CT report from ground truth.

    Args:
        spec: the study (``kind`` ``cxr`` or ``ct``).
        rng: random generator (phrasing and which negatives are stated).

    Returns:
        The report with FINDINGS and IMPRESSION sections.

    Raises:
        ValueError: for a study kind without report templates.
    """
    if spec.kind == "ct":
        return _ct_report(spec, rng)
    if spec.kind != "cxr":
        raise ValueError(f"no report templates for kind {spec.kind!r}")
    b = ReportBuilder()
    b.header("FINDINGS")
    present = {f.id: f for f in spec.findings}
    for fid in _ORDER:
        if fid in present:
            b.add(positive_sentence(present[fid], rng), fid, True, "findings")
        elif fid in NEGATIVE_SENTENCES and rng.uniform() < 0.8:
            b.add(negative_sentence(fid, rng), fid, False, "findings")
    if not any(
        present.get(k)
        for k in ("lung_nodule", "lung_mass", "consolidation", "atelectasis", "pulmonary_edema")
    ):
        b.add(
            _pick(rng, ["The lungs are clear.", "The lungs are otherwise clear."][:1]), None, None, "findings"
        )
    b.add(
        _pick(rng, ["No acute osseous abnormality.", "The visualized bones are intact."]),
        None,
        None,
        "findings",
    )
    b.header("IMPRESSION")
    if not spec.findings:
        b.add(
            _pick(rng, ["No acute cardiopulmonary abnormality.", "Normal chest radiograph."]),
            None,
            None,
            "impression",
        )
    for fid in _ORDER:
        if fid in present:
            b.add(positive_sentence(present[fid], rng, short=True), fid, True, "impression")
    return b.build()


_CT_NEGATIVES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "lung_nodule": ("No pulmonary nodule.", "There is no suspicious pulmonary nodule."),
        "pleural_effusion": ("No pleural effusion.", "There is no pleural effusion."),
        "intracranial_hemorrhage": ("No intracranial hemorrhage.", "There is no intracranial hemorrhage."),
        "cerebral_infarct": ("No evidence of acute infarct.", "There is no acute infarct."),
    }
)
_CT_NORMAL: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "chest": ("The heart and mediastinum are unremarkable.", "No acute abnormality in the chest."),
        "head": (
            "The ventricles are normal in size. The calvarium is intact.",
            "No acute intracranial abnormality.",
        ),
    }
)
_CT_ORDER: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chest": ("lung_nodule", "pleural_effusion"),
        "head": ("intracranial_hemorrhage", "cerebral_infarct"),
    }
)


def _ct_report(spec: StudySpec, rng: np.random.Generator) -> Report:
    region = spec.region or "chest"
    b = ReportBuilder()
    b.header("FINDINGS")
    present = {f.id: f for f in spec.findings}
    for fid in _CT_ORDER[region]:
        if fid in present:
            text = positive_sentence(present[fid], rng).replace(
                "blunting the costophrenic angle", "layering posteriorly"
            )
            b.add(text, fid, True, "findings")
        elif rng.uniform() < 0.7:
            b.add(_pick(rng, list(_CT_NEGATIVES[fid])), fid, False, "findings")
    background, normal = _CT_NORMAL[region]
    for sentence in background.split(". "):
        b.add(sentence.rstrip(".") + ".", None, None, "findings")
    b.header("IMPRESSION")
    if not spec.findings:
        b.add(normal, None, None, "impression")
    for fid in _CT_ORDER[region]:
        if fid in present:
            b.add(positive_sentence(present[fid], rng, short=True), fid, True, "impression")
    return b.build(normal_impression=normal, insert_pool=_CT_ORDER[region])
