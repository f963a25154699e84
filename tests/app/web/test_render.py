"""The Markdown the UI shows: every flag of an answer, escaped untrusted text, the banner, the queue."""

from __future__ import annotations

from datetime import UTC, datetime

from app.commands.model import RESEARCH_NOTICE, SYNTHETIC_NOTICE
from app.store import CorrectionRecord, InteractionRecord
from app.web import render
from app.web.service import AskResult
from medvlm import Answer, KnowledgeFact, ModelInfo, SafetyDecision
from medvlm.assistant import UNGROUNDED_WARNING

INFO = ModelInfo("builtin-0.2.0+ab8b3c8d", None, "llava", False)
FACTS = [
    KnowledgeFact("pleural_effusion", "Fluid in the pleural space.", "medvlm-curated@1.0"),
    KnowledgeFact("empyema", "Pus in the pleural space.", "medvlm-curated@1.0"),
]


def _result(**changes: object) -> AskResult:
    fields: dict[str, object] = {
        "text": "No effusion [pleural_effusion].",
        "model": INFO,
        "grounded": True,
        "confidence": 0.91,
        "abstained": False,
        "refused": False,
        "safety": [],
        "latency_ms": 812.4,
        "views": ["Image 1: CR CHEST"],
        "cited_facts": ["pleural_effusion"],
    }
    fields.update(changes)
    return AskResult(Answer(**fields), FACTS, [], 7, "0" * 64)  # type: ignore[arg-type]


def test_an_answer_shows_versions_flags_confidence_and_cited_facts_first() -> None:
    text = render.answer_markdown(_result())
    assert "`builtin-0.2.0+ab8b3c8d`" in text and "**adapter:** `none`" in text
    assert "(grounded)" in text and "0.91" in text and "812 ms" in text
    assert text.index("`pleural_effusion` **cited**") < text.index("`empyema`")
    assert "interaction 7" in text


def test_ungrounded_abstained_and_refused_answers_say_so() -> None:
    ungrounded = render.answer_markdown(_result(grounded=False, warnings=[UNGROUNDED_WARNING]))
    assert "NOT GROUNDED" in ungrounded and "did not change when the image was removed" in ungrounded
    abstained = render.answer_markdown(_result(abstained=True, confidence=0.55))
    assert "Abstained" in abstained and "0.55" in abstained
    refusal = SafetyDecision(
        "modality_mismatch", "refuse", "The model covers chest radiographs only.", "image 1"
    )
    refused = render.answer_markdown(_result(refused=True, grounded=None, confidence=None, safety=[refusal]))
    assert "Refused" in refused and "chest radiographs only" in refused and "not checked" in refused


def test_untrusted_text_cannot_inject_markup_or_fetch_anything() -> None:
    evil = (
        "Yes ![x](http://evil.example/t.png) <img src=x onerror=alert(1)> [link](http://evil.example) `code`"
    )
    text = render.answer_markdown(_result(text=evil))
    assert "![x](" not in text and "<img" not in text and "[link](" not in text
    assert "&lt;img" in text and r"\!\[x\]\(http://evil" in text


def test_the_banner_says_synthetic_and_not_for_clinical_use() -> None:
    builtin = render.banner(SYNTHETIC_NOTICE)
    assert "synthetic data only" in builtin and "not for clinical use" in builtin
    assert "identifiers" in builtin
    other = render.banner(RESEARCH_NOTICE)
    assert "not for clinical use" in other and "synthetic" not in other


def test_the_review_queue_marks_ones_own_corrections() -> None:
    now = datetime.now(UTC)
    interaction = InteractionRecord(
        3, now, "U-" + "a" * 20, "S-" + "b" * 20, "Effusion?", "No.", "m@1", None, True, 0.9,
        False, False, (), 10.0, 0,
    )  # fmt: skip
    mine = CorrectionRecord(5, now, 3, "U-" + "c" * 20, "Small effusion.", "pending", 0)
    theirs = CorrectionRecord(6, now, 3, "U-" + "d" * 20, "Large <b>effusion</b>.", "pending", 0)
    text = render.queue_markdown([(interaction, mine), (interaction, theirs)], me="U-" + "c" * 20)
    assert "2 correction(s)" in text and "**Correction 5** (yours" in text and "**Correction 6** ·" in text
    assert "<b>" not in text
    assert render.queue_markdown([], me="x") == "No corrections are waiting for review."
