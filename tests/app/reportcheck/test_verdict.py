"""Image checks and the combined verdict: ungrounded answers are never stated as fact."""

from __future__ import annotations

import numpy as np
import pytest

from app.commands.model import views_to_request
from app.reportcheck.consistency import check_report_text
from app.reportcheck.verdict import (
    ImageChecker,
    combine,
    finding_question,
)
from data_prep.types import ImageView
from medvlm import GenerationSettings, ModelScope
from medvlm.assistant import Assistant
from tests.app.reportcheck.fakes import ScriptedBackend

VIEW = ImageView(
    np.full((64, 64), 128, np.uint8) + np.eye(64, dtype=np.uint8) * 100,
    "CR",
    "CHEST",
    "dicom",
    "DICOM CR test view",
)
NORMAL = "FINDINGS: No pleural effusion or pneumothorax.\nIMPRESSION: Normal chest."
EFFUSION = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Small left pleural effusion."


def _checker(
    backend: ScriptedBackend, mode: str = "findings", scope: ModelScope | None = None
) -> ImageChecker:
    settings = GenerationSettings(max_new_tokens=8, scope=scope)
    return ImageChecker(Assistant(backend), settings, mode, views_to_request)  # type: ignore[arg-type]


def test_grounded_disagreement_is_an_error() -> None:
    # The report negates an effusion; the model sees one, grounded.
    checker = _checker(ScriptedBackend(present=frozenset({"pleural effusion"})))
    rules = check_report_text(NORMAL)
    image = checker.check([VIEW], rules.report)
    verdict = combine(rules, image)
    assert verdict.verdict == "error" and verdict.has_error and verdict.error_type == "negation_flip"
    assert verdict.grounded is True and verdict.possible_error_types == []
    (evidence,) = verdict.evidence
    assert evidence["source"] == "image" and evidence["finding"] == "pleural_effusion"
    assert evidence["sentences"][0]["text"] == "No pleural effusion or pneumothorax."
    assert image.model_version == "scripted@0123456789ab" and image.adapter_version == "adapter@ba9876543210"
    assert len(image.asked) == len(image.answers) == 8


def test_ungrounded_disagreement_is_only_possible() -> None:
    checker = _checker(ScriptedBackend(present=frozenset({"pleural effusion"}), grounded=False))
    rules = check_report_text(NORMAL)
    verdict = combine(rules, checker.check([VIEW], rules.report))
    assert verdict.verdict == "possible_error" and not verdict.has_error
    assert verdict.error_types == [] and verdict.possible_error_types == ["negation_flip"]
    assert verdict.grounded is False and "ungrounded" in verdict.evidence[0]["detail"]


@pytest.mark.parametrize(
    ("report", "present", "expected"),
    [
        (EFFUSION, frozenset(), "inserted_finding"),  # the report affirms what the model does not see
        (NORMAL, frozenset({"lung nodule"}), "omitted_finding"),  # the report does not mention it
        (EFFUSION, frozenset({"pleural effusion"}), "no_error"),
    ],
)
def test_finding_disagreements(report: str, present: frozenset[str], expected: str) -> None:
    rules = check_report_text(report)
    verdict = combine(rules, _checker(ScriptedBackend(present=present)).check([VIEW], rules.report))
    assert verdict.error_type == expected


def test_report_question_mode() -> None:
    backend = ScriptedBackend(report_answer="Yes, wrong laterality.")
    rules = check_report_text(EFFUSION)
    image = _checker(backend, mode="report").check([VIEW], rules.report)
    assert [a.check for a in image.answers] == ["report_question"] and image.answers[0].model_says == "error"
    assert "Small left pleural effusion" in backend.prompts[0]  # the report is in the prompt
    assert combine(rules, image).error_type == "wrong_laterality"


def test_refused_images_give_no_image_evidence() -> None:
    ct = ImageView(VIEW.pixels, "CT", "HEAD", "dicom", "DICOM CT head")
    scope = ModelScope(frozenset({"CR", "DX"}), frozenset({"CHEST"}), name="the built-in model")
    rules = check_report_text(NORMAL)
    image = _checker(ScriptedBackend(present=frozenset({"pleural effusion"})), scope=scope).check(
        [ct], rules.report
    )
    assert image.refused and all(a.refused and a.model_says is None for a in image.answers)
    verdict = combine(rules, image)
    assert verdict.verdict == "no_error" and verdict.grounded is None


def test_rules_and_image_evidence_together() -> None:
    text = "FINDINGS: Small left pleural effusion.\nIMPRESSION: Small right pleural effusion."
    rules = check_report_text(text)
    verdict = combine(rules, None)
    assert verdict.error_types == ["wrong_laterality"] and verdict.evidence[0]["source"] == "consistency"
    assert finding_question("pleural_effusion") == "Is there a pleural effusion?"
    assert finding_question("consolidation") == "Is there consolidation?"


def test_evidence_sentences_are_scrubbed() -> None:
    text = (
        "FINDINGS: Left pleural effusion, discussed with Dr. Smith on 03/04/2026.\n"
        "IMPRESSION: Right pleural effusion."
    )
    verdict = combine(check_report_text(text), None)
    quoted = " ".join(s["text"] for e in verdict.evidence for s in e["sentences"])
    assert "03/04/2026" not in quoted and "Smith" not in quoted and "[NAME]" in quoted
