"""A scripted backend for the report-check tests: answers by finding, grounded or not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

import medvlm
from medvlm.processing import ChatPrompt


def _question(prompt: ChatPrompt) -> str:
    parts = [p for m in prompt.messages for p in m.get("content", []) if isinstance(p, dict)]
    return " ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


@dataclass
class ScriptedBackend:
    """Answers "Yes." to questions naming a finding in ``present``, "No." otherwise.

    With blank images it answers ``blank_answer`` (a different answer: grounded), or the same as
    with the image when ``grounded`` is False. ``report_answer`` answers the report question.
    """

    present: frozenset[str] = frozenset()
    grounded: bool = True
    report_answer: str = "No error."
    blank_answer: str = "I cannot tell from this image."
    prompts: list[str] = field(default_factory=list)

    def info(self) -> medvlm.ModelInfo:
        return medvlm.ModelInfo("scripted@0123456789ab", "adapter@ba9876543210", "fake", True)

    def _one(self, prompt: ChatPrompt) -> medvlm.Generation:
        question = _question(prompt)
        self.prompts.append(question)
        blank = not any(np.asarray(i).any() for i in prompt.images)
        if blank and self.grounded:
            return medvlm.Generation(self.blank_answer)
        if "radiology report" in question:
            return medvlm.Generation(self.report_answer, 0.9, 0.05)
        if any(name in question for name in self.present):
            return medvlm.Generation("Yes.", 0.9, 0.05)
        return medvlm.Generation("No.", 0.05, 0.9)

    def generate(
        self, prompts: list[ChatPrompt], settings: medvlm.GenerationSettings, yes_no: bool = False
    ) -> list[medvlm.Generation]:
        return [self._one(p) for p in prompts]

    def stream(self, prompt: ChatPrompt, settings: medvlm.GenerationSettings) -> Iterator[str]:
        yield self._one(prompt).text
