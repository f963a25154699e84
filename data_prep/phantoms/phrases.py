"""Noun phrases for findings with their attributes, shared by captions, questions and reports."""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from data_prep.phantoms.spec import Finding, StudySpec

MODALITY = MappingProxyType({"cxr": "chest radiograph", "ct": "CT", "slide": "histopathology"})
ORGAN = MappingProxyType({"cxr": "chest", "ct": "chest", "slide": "tissue"})
NAMES = MappingProxyType(
    {
        "normal": "no acute abnormality",
        "cardiomegaly": "cardiomegaly",
        "pleural_effusion": "pleural effusion",
        "pneumothorax": "pneumothorax",
        "lung_nodule": "lung nodule",
        "lung_mass": "lung mass",
        "consolidation": "consolidation",
        "atelectasis": "atelectasis",
        "pulmonary_edema": "pulmonary edema",
        "endotracheal_tube": "endotracheal tube",
        "central_venous_catheter": "central venous catheter",
        "intracranial_hemorrhage": "intracranial hemorrhage",
        "cerebral_infarct": "cerebral infarct",
        "normal_tissue": "normal tissue",
        "tumor": "tumor",
        "necrosis": "necrosis",
        "inflammation": "inflammation",
        "mitosis": "mitosis",
    }
)
LOBES = MappingProxyType(
    {
        "right_upper": "right upper lobe",
        "right_middle": "right middle lobe",
        "right_lower": "right lower lobe",
        "left_upper": "left upper lobe",
        "left_lower": "left lower lobe",
    }
)
_MASS_NOUNS = frozenset(
    {
        "consolidation",
        "atelectasis",
        "pulmonary_edema",
        "cardiomegaly",
        "necrosis",
        "inflammation",
        "normal_tissue",
        "tumor",
        "intracranial_hemorrhage",
        "mitosis",
    }
)


def with_article(finding_id: str) -> str:
    """The finding's name with an indefinite article where English needs one ("a pneumothorax")."""
    name = NAMES[finding_id]
    if finding_id in _MASS_NOUNS:
        return name
    return ("an " if name[0] in "aeiou" else "a ") + name


# Findings a question can be asked about, with a side and (for nodules and masses) a zone.
LATERALIZED = (
    "pleural_effusion",
    "pneumothorax",
    "lung_nodule",
    "lung_mass",
    "atelectasis",
    "central_venous_catheter",
)


def location(f: Finding) -> str:
    """Canonical location words of a finding, or an empty string.

    Args:
        f: the finding.

    Returns:
        e.g. ``"right upper zone"``, ``"left lower lobe"``, ``"bilateral"``, ``"left"``.
    """
    at = f.attributes
    if "lobe" in at:
        return LOBES[str(at["lobe"])]
    if "zone" in at:
        return f"{at['laterality']} {at['zone']} zone"
    if "laterality" in at:
        return str(at["laterality"])
    return ""


def article(phrase: str) -> str:
    """``phrase`` with "a" or "an" in front ("an 18 mm nodule", "a left pneumothorax")."""
    first = phrase.split()[0].lower()
    vowel = first[0] in "aeio" or (first.startswith(("8", "11", "18")) and not first.startswith("180"))
    return ("an " if vowel else "a ") + phrase


def describe(f: Finding, rng: np.random.Generator | None = None) -> str:
    """A noun phrase for one finding with its attributes, with an article where English needs one.

    Args:
        f: the finding.
        rng: when given, picks among equivalent phrasings.

    Returns:
        e.g. ``"a large left pleural effusion"``, ``"a 12 mm nodule in the right upper zone"``.
    """
    at = f.attributes
    pick = (lambda opts: opts[int(rng.integers(len(opts)))]) if rng is not None else (lambda opts: opts[0])
    if f.id == "pleural_effusion":
        if at["laterality"] == "bilateral":
            return f"{at['severity']} bilateral pleural effusions"
        return article(f"{at['severity']} {at['laterality']} pleural effusion")
    if f.id == "pneumothorax":
        return article(pick([f"{at['laterality']} pneumothorax", f"{at['laterality']}-sided pneumothorax"]))
    if f.id in ("lung_nodule", "lung_mass"):
        noun = "nodule" if f.id == "lung_nodule" else "mass"
        return article(
            pick(
                [
                    f"{at['size_mm']} mm {noun} in the {location(f)}",
                    f"{at['size_mm']} mm {at['laterality']} {at['zone']} zone {noun}",
                ]
            )
        )
    if f.id == "consolidation":
        return pick([f"consolidation in the {location(f)}", f"{location(f)} consolidation"])
    if f.id == "atelectasis":
        return pick(
            [
                f"{at['laterality']} basal atelectasis",
                f"plate-like atelectasis at the {at['laterality']} base",
            ]
        )
    if f.id == "central_venous_catheter":
        return article(
            pick(
                [
                    f"{at['laterality']}-sided central venous catheter",
                    f"{at['laterality']} subclavian central line with its tip in the SVC",
                ]
            )
        )
    if f.id == "pulmonary_edema":
        return pick(
            ["pulmonary edema", "interstitial pulmonary edema", "perihilar edema with Kerley B lines"]
        )
    if f.id == "cardiomegaly":
        return pick(["cardiomegaly", "an enlarged cardiac silhouette"])
    if f.id == "endotracheal_tube":
        return pick(["an endotracheal tube", "an endotracheal tube with its tip above the carina"])
    if f.id == "cerebral_infarct":
        return article(f"{at['laterality']} cerebral infarct")
    if "laterality" in at:
        return f"{at['laterality']} {NAMES[f.id]}"
    return NAMES[f.id]


def findings_list(spec: StudySpec, rng: np.random.Generator | None = None) -> str:
    """Comma-joined description of all findings, or ``"no acute abnormality"``."""
    parts = [describe(f, rng) for f in spec.findings]
    if not parts:
        return "normal tissue" if spec.kind == "slide" else "no acute abnormality"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]
