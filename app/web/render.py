"""Answers, facts and the review queue as Markdown for the UI: pure functions, every text escaped.

Model output, questions and corrections are untrusted text: they are HTML-escaped and their
Markdown control characters are backslash-escaped, so an answer cannot inject a link, an image
(a request to another server) or markup into the page.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from app.store import CorrectionRecord, InteractionRecord
    from app.web.service import AskResult

_MARKDOWN_SPECIAL: Final = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
MAX_FACTS_SHOWN: Final = 8
NO_IDENTIFIERS: Final = "Do not type patient names or other identifiers into questions or corrections."


def escape(text: str) -> str:
    """Untrusted text as literal Markdown (HTML-escaped, control characters backslash-escaped)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False)).replace("\n", "  \n")


def code(text: str) -> str:
    """An identifier (version, fact id) as a code span: shown literally, so nothing is escaped inside."""
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def banner(notice: str) -> str:
    """The permanent banner at the top of every page: the model's notice and the no-identifiers rule.

    Args:
        notice: ``SYNTHETIC_NOTICE`` for the built-in model (trained on synthetic studies only,
            not for clinical use), else ``RESEARCH_NOTICE``.
    """
    synthetic = (
        " On a real image its answers demonstrate the pipeline, not diagnostic ability."
        if "synthetic" in notice.lower()
        else ""
    )
    return f"⚠ **{escape(notice)}**{synthetic} {NO_IDENTIFIERS}"


def views_markdown(descriptions: Sequence[str], warnings: Sequence[str] = ()) -> str:
    """What the model sees: one line per view description, then the input's warnings."""
    lines = ["**What the model sees**", *(f"- {escape(d)}" for d in descriptions)]
    lines += [f"- ⚠ {escape(w)}" for w in warnings]
    return "\n".join(lines)


def answer_markdown(result: AskResult) -> str:
    """The answer with everything needed to judge it: flags, confidence, warnings, cited facts.

    Args:
        result: the service's answer to one question.

    Returns:
        Markdown: the answer, the model and adapter versions, the grounding flag (with the
        ungrounded warning), confidence or abstention, refusals, warnings and the facts given to the
        model (cited ones first, marked), then the interaction's id.
    """
    answer = result.answer
    lines = [f"### Answer\n\n{escape(answer.text)}", ""]
    adapter = answer.model.adapter_version or "none"
    lines.append(f"- **Model:** {code(answer.model.model_version)} · **adapter:** {code(adapter)}")
    if answer.grounded is None:
        lines.append("- **Grounding:** not checked")
    elif answer.grounded:
        lines.append("- **Grounding:** the answer changed when the image was removed (grounded)")
    else:
        lines.append("- **Grounding:** ⚠ NOT GROUNDED: the answer did not change when the image was removed")
    if answer.refused:
        lines.append("- **Refused** by the safety gate (no answer was generated)")
    if answer.abstained:
        lines.append(f"- **Abstained:** yes/no confidence {answer.confidence:.2f} is below the threshold")
    elif answer.confidence is not None:
        lines.append(f"- **Confidence (yes/no):** {answer.confidence:.2f}")
    lines.append(f"- **Latency:** {answer.latency_ms:.0f} ms")
    for decision in answer.safety:
        lines.append(f"- ⚠ **{decision.action}** ({escape(decision.kind)}): {escape(decision.reason)}")
    for warning in [*answer.warnings, *result.notes]:
        lines.append(f"- ⚠ {escape(warning)}")
    cited = set(answer.cited_facts)
    facts = sorted(result.facts, key=lambda f: f.fact_id not in cited)[:MAX_FACTS_SHOWN]
    if facts:
        lines += ["", f"**Knowledge-graph facts given to the model** ({len(facts)} of {len(result.facts)}):"]
        for f in facts:
            mark = " **cited**" if f.fact_id in cited else ""
            lines.append(f"- {code(f.fact_id)}{mark}: {escape(f.text)} ({escape(f.source)})")
    elif not answer.refused:
        lines += ["", "No knowledge-graph facts were given to the model."]
    lines += ["", f"_Recorded as interaction {result.interaction_id}._"]
    return "\n".join(lines)


def queue_markdown(pairs: Sequence[tuple[InteractionRecord, CorrectionRecord]], me: str) -> str:
    """The review queue: one entry per pending correction, the reviewer's own ones marked.

    Args:
        pairs: ``(interaction, correction)`` from ``Store.pending_corrections``.
        me: the signed-in reviewer's pseudonym.

    Returns:
        Markdown, or a line saying the queue is empty.
    """
    if not pairs:
        return "No corrections are waiting for review."
    lines = [f"**{len(pairs)} correction(s) waiting for review**"]
    for interaction, correction in pairs:
        own = " (yours: another reviewer must review it)" if correction.author == me else ""
        lines += [
            "",
            f"**Correction {correction.id}**{own} · interaction {interaction.id} · "
            f"model {code(interaction.model_version)}",
            f"- Question: {escape(interaction.question)}",
            f"- Model's answer: {escape(interaction.answer)}",
            f"- Corrected answer: {escape(correction.corrected_answer)}",
        ]
    return "\n".join(lines)
