"""Image checks through the model layer, and the verdict that combines them with the rules.

Two kinds of image check, both through ``medvlm.assistant.Assistant`` (safety gate, image-ablation
grounding check, yes/no confidence with abstention):

- ``findings`` (default): one yes/no question per chest finding ("Is there a pleural effusion?"),
  compared with what the report says about it. Report "present", model "no" → ``inserted_finding``;
  report "absent", model "yes" → ``negation_flip``; not mentioned, model "yes" → ``omitted_finding``.
  Existence is what the built-in model answers best (docs/RESULTS.md); side, zone and size it does
  not, so these are left to the rules.
- ``report``: the evaluation harness's question (:data:`REPORTCHECK_QUESTION`, the report in the
  prompt, "name the error type"), parsed as ``medvlm eval reportcheck`` parses it.

An answer that did not change when the image was blanked (``Answer.grounded is False``) never
makes a report erroneous: its disagreement is kept as a ``possible_error``, marked ungrounded. An
abstained or refused answer counts for nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from app.reportcheck.consistency import ConsistencyResult, ParsedReport, Sentence
from app.store.scrub import scrub
from data_prep.phantoms.phrases import with_article
from data_prep.phantoms.report_verdict import NO_ERROR, REPORTCHECK_QUESTION, parse_report_verdict
from medvlm.assistant import Assistant
from medvlm.grounding import answer_polarity
from medvlm.schema import Answer, AskRequest, GenerationSettings, KnowledgeFact

ImageMode = Literal["findings", "report", "both", "none"]
Verdict = Literal["error", "possible_error", "no_error"]
# Chest-radiograph findings asked about one by one (catalogue ids of the phantoms and the graph).
CHEST_FINDINGS: Final = (
    "pleural_effusion",
    "pneumothorax",
    "lung_nodule",
    "lung_mass",
    "consolidation",
    "atelectasis",
    "pulmonary_edema",
    "cardiomegaly",
)


def finding_question(finding: str) -> str:
    """The yes/no existence question for a finding, worded as in the phantoms' VQA."""
    return f"Is there {with_article(finding)}?"


@dataclass(frozen=True)
class ImageAnswer:
    """One question put to the model about the study's images, and what it says about the report.

    Attributes:
        check: ``finding_question`` or ``report_question``.
        finding: the finding asked about (None for the report question).
        question: the question as asked (the report question's report text left out).
        report_says: ``present``, ``absent``, ``not_mentioned``, ``unclear`` (None: report question).
        model_says: ``yes``/``no`` for a finding, ``error``/``no error`` for the report, None when
            the model gave no usable answer (refused, abstained, no yes/no word).
        confidence: the yes/no confidence of the answer, None when not available.
        grounded: the ablation check (False: the answer did not change with blank images).
        abstained: the model's confidence was below the threshold.
        refused: the safety gate refused the question (outside the model's scope).
        error_type: the error the disagreement indicates, None when it agrees or says nothing.
    """

    check: str
    finding: str | None
    question: str
    report_says: str | None
    model_says: str | None
    confidence: float | None
    grounded: bool | None
    abstained: bool
    refused: bool
    error_type: str | None

    def as_json(self) -> dict[str, Any]:
        """The JSON form written in the results file."""
        return {
            "check": self.check,
            "finding": self.finding,
            "question": self.question,
            "report_says": self.report_says,
            "model_says": self.model_says,
            "confidence": None if self.confidence is None else round(self.confidence, 3),
            "grounded": self.grounded,
            "abstained": self.abstained,
            "refused": self.refused,
            "error_type": self.error_type,
        }


@dataclass(frozen=True)
class ImageCheck:
    """The image checks of one study.

    Attributes:
        mode: which checks ran.
        answers: one per question.
        asked: the ``(question, Answer)`` pairs as given to the model, for the audit log.
        refused: the safety gate refused the study's images (no image evidence at all).
        model_version: the model that answered; adapter_version likewise.
    """

    mode: ImageMode
    answers: list[ImageAnswer] = field(default_factory=list)
    asked: list[tuple[str, Answer]] = field(default_factory=list)
    refused: bool = False
    model_version: str | None = None
    adapter_version: str | None = None


def _finding_error(report_says: str, model_says: str | None) -> str | None:
    if report_says == "present" and model_says == "no":
        return "inserted_finding"
    if report_says == "absent" and model_says == "yes":
        return "negation_flip"
    if report_says == "not_mentioned" and model_says == "yes":
        return "omitted_finding"
    return None


def _finding_answer(finding: str, report: ParsedReport, answer: Answer) -> ImageAnswer:
    usable = not answer.refused and not answer.abstained
    model_says = answer_polarity(answer.raw_text) if usable else None
    report_says = report.status(finding)
    return ImageAnswer(
        "finding_question",
        finding,
        finding_question(finding),
        report_says,
        model_says,
        answer.confidence,
        answer.grounded,
        answer.abstained,
        answer.refused,
        _finding_error(report_says, model_says),
    )


def _report_answer(answer: Answer) -> ImageAnswer:
    usable = not answer.refused and not answer.abstained
    has_error, kind = parse_report_verdict(answer.raw_text) if usable else (False, NO_ERROR)
    return ImageAnswer(
        "report_question",
        None,
        REPORTCHECK_QUESTION.format(report="<report>"),
        None,
        None if not usable else ("error" if has_error else "no error"),
        answer.confidence,
        answer.grounded,
        answer.abstained,
        answer.refused,
        kind if has_error else None,
    )


@dataclass(frozen=True)
class ImageChecker:
    """Asks the model about a study's views.

    Attributes:
        assistant: the model layer (backend, safety gate).
        settings: generation settings (the model's scope included); ablation is always on.
        mode: ``findings``, ``report`` or ``both``.
        findings: the findings asked about in ``findings`` mode.
        request_builder: views, question → ``AskRequest`` (``app.commands.model.views_to_request``).
    """

    assistant: Assistant
    settings: GenerationSettings
    mode: ImageMode
    request_builder: Callable[[list[Any], str, list[KnowledgeFact]], AskRequest]
    findings: tuple[str, ...] = CHEST_FINDINGS

    def check(self, views: list[Any], report: ParsedReport) -> ImageCheck:
        """Ask every question of the mode about the views, in one generation batch.

        Raises:
            MedVLMError: when the backend fails (the job records the study as failed).
        """
        questions: list[tuple[str | None, str]] = []
        if self.mode in ("findings", "both"):
            questions += [(f, finding_question(f)) for f in self.findings]
        if self.mode in ("report", "both"):
            questions.append((None, REPORTCHECK_QUESTION.format(report=report.text)))
        if not questions:
            return ImageCheck("none")
        requests = [self.request_builder(views, q, []) for _, q in questions]
        answers = self.assistant.ask_batch(requests, self.settings)
        parsed = [
            _finding_answer(f, report, a) if f is not None else _report_answer(a)
            for (f, _), a in zip(questions, answers, strict=True)
        ]
        info = answers[0].model
        return ImageCheck(
            self.mode,
            parsed,
            [(q, a) for (_, q), a in zip(questions, answers, strict=True)],
            refused=all(a.refused for a in answers),
            model_version=info.model_version,
            adapter_version=info.adapter_version,
        )


@dataclass(frozen=True)
class StudyVerdict:
    """What the job writes about one report.

    Attributes:
        verdict: ``error`` (a rule fired, or a grounded confident image disagreement),
            ``possible_error`` (only ungrounded image disagreements) or ``no_error``.
        error_type: the first error type of the evidence (rules first, then grounded image
            answers, then ungrounded ones for a ``possible_error``), ``no_error`` when none.
        error_types: the error types stated as fact (rules, grounded image answers), in order.
        possible_error_types: the types only ungrounded image answers indicate (never facts).
        evidence: one JSON object per check that fired.
        grounded: False when an image answer used was not grounded, True when all were, None when
            no image answer was used.
    """

    verdict: Verdict
    error_type: str
    error_types: list[str]
    possible_error_types: list[str]
    evidence: list[dict[str, Any]]
    grounded: bool | None

    @property
    def has_error(self) -> bool:
        """Whether the report is stated to contain an error (never from an ungrounded answer)."""
        return self.verdict == "error"


# Names after a title ("discussed with Dr. Smith"): the Store's scrubber does not catch them.
_TITLED_NAME = re.compile(
    r"\b(?:Dr|Doctor|Mr|Mrs|Ms|Miss|Prof|Nurse)\.?\s+[A-Z][\w'^-]+(?:\s+[A-Z][\w'^-]+)?"
)


def quote(text: str) -> str:
    """A report sentence as the results may quote it: identifiers and titled names redacted."""
    return _TITLED_NAME.sub("[NAME]", scrub(text, field="evidence sentence").text)


def _sentence_json(sentence: Sentence) -> dict[str, Any]:
    return {"index": sentence.index, "section": sentence.section, "text": quote(sentence.text)}


def _image_evidence(a: ImageAnswer, report: ParsedReport) -> dict[str, Any]:
    if a.finding is not None:
        conf = "" if a.confidence is None else f" (confidence {a.confidence:.2f})"
        detail = f"the report says {a.report_says.replace('_', ' ') if a.report_says else '?'}; "
        detail += f"the model answers {a.model_says}{conf}"
        sentences = [m.sentence for m in report.mentions if m.finding == a.finding]
    else:
        detail, sentences = f"the model says the report contains an error ({a.error_type})", []
    if a.grounded is False:
        detail += "; ungrounded: the answer did not change when the image was removed"
    return {
        "source": "image",
        "check": a.check,
        "error_type": a.error_type,
        "finding": a.finding,
        "detail": detail,
        "sentences": [_sentence_json(s) for s in dict.fromkeys(sentences)],
        "grounded": a.grounded,
        "confidence": None if a.confidence is None else round(a.confidence, 3),
    }


def combine(consistency: ConsistencyResult, image: ImageCheck | None) -> StudyVerdict:
    """The verdict of one report from the rules and the image checks.

    Args:
        consistency: what the rules found.
        image: the image checks, None when they were not run.

    Returns:
        The verdict with its evidence.
    """
    evidence: list[dict[str, Any]] = [
        {
            "source": "consistency",
            "check": c.check,
            "error_type": c.error_type,
            "finding": c.finding,
            "detail": c.detail,
            "sentences": [_sentence_json(s) for s in c.sentences],
            "grounded": None,
            "confidence": None,
        }
        for c in consistency.inconsistencies
    ]
    used = [a for a in (image.answers if image else []) if not a.refused and not a.abstained]
    disagreeing = [a for a in used if a.error_type is not None]
    confirmed = [a for a in disagreeing if a.grounded is True]
    possible = [a for a in disagreeing if a.grounded is not True]
    evidence += [_image_evidence(a, consistency.report) for a in confirmed + possible]
    if consistency.inconsistencies or confirmed:
        verdict: Verdict = "error"
    elif possible:
        verdict = "possible_error"
    else:
        verdict = "no_error"
    types = list(dict.fromkeys(str(e["error_type"]) for e in evidence if e["grounded"] is not False))
    maybe = [str(a.error_type) for a in possible if str(a.error_type) not in types]
    grounded = None if not used else all(a.grounded is True for a in used)
    first = types[0] if types else (maybe[0] if maybe else NO_ERROR)
    return StudyVerdict(verdict, first, types, list(dict.fromkeys(maybe)), evidence, grounded)
