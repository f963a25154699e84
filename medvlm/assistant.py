"""Answer an ``AskRequest`` with any backend: safety gate, prompt, generation, grounding checks.

This is the one place where the pieces meet: ``SafetyGate`` before generation, the prompt built
for the backend's family, the image-ablation check (the same question with blank images; an
unchanged answer is flagged as not grounded in the image) and yes/no abstention.

An answer that did not change with blank images is never stated as fact: its text leads with
``UNGROUNDED_WARNING`` and the warning is also in ``Answer.warnings``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from medvlm.backends import Backend
from medvlm.grounding import answer_polarity, is_yes_no_question, same_answer, stated_confidence
from medvlm.processing import ChatPrompt, build_prompt, cited_fact_ids, with_blank_images
from medvlm.safety import SafetyGate, refusal_text
from medvlm.schema import Answer, AskRequest, Generation, GenerationSettings, SafetyDecision

logger = logging.getLogger(__name__)

UNGROUNDED_WARNING = "This answer did not change when the image was removed: it may not come from the image."


@dataclass(frozen=True)
class Assistant:
    """Safe, grounded answers from a backend.

    Attributes:
        backend: in-process or HTTP backend.
        gate: the pre-generation safety gate.
    """

    backend: Backend
    gate: SafetyGate = field(default_factory=SafetyGate)

    def ask(self, request: AskRequest, settings: GenerationSettings | None = None) -> Answer:
        """Answer one request.

        Args:
            request: images, their metadata, question, history and knowledge facts.
            settings: decoding and grounding settings (defaults when None).

        Returns:
            The answer with model / adapter versions, grounding flag, confidence and safety decisions.

        Raises:
            BackendError: when the backend cannot answer.
        """
        return self.ask_batch([request], settings)[0]

    def ask_batch(
        self, requests: list[AskRequest], settings: GenerationSettings | None = None
    ) -> list[Answer]:
        """Answer several requests in one generation batch (plus their ablation probes).

        Args:
            requests: the requests; refused ones are answered without generation.
            settings: shared decoding and grounding settings.

        Returns:
            One answer per request, in order.
        """
        settings = settings or GenerationSettings()
        start = time.perf_counter()
        info = self.backend.info()
        decisions = [self.gate.check(r, settings.scope) for r in requests]
        todo = [i for i, d in enumerate(decisions) if not any(x.action == "refuse" for x in d)]
        prompts = {i: build_prompt(requests[i], info.multi_image) for i in todo}
        yes_no = any(is_yes_no_question(requests[i].question) for i in todo)
        batch: list[ChatPrompt] = [prompts[i] for i in todo]
        blanks = [with_blank_images(prompts[i]) for i in todo] if settings.ablation else []
        generations: list[Generation] = []
        probes: list[tuple[str, str]] = []  # (answer with image, answer with blank images), greedy
        if batch and settings.temperature == 0:  # greedy: the probes ride in the same batch
            out = self.backend.generate(batch + blanks, settings, yes_no=yes_no)
            generations = out[: len(todo)]
            probes = [(g.text, b.text) for g, b in zip(generations, out[len(todo) :], strict=False)]
        elif batch:
            # Sampled answers differ from blank-image answers by chance alone, so the ablation
            # pair is decoded greedily; the clinician sees the sampled answer.
            generations = self.backend.generate(batch, settings, yes_no=yes_no)
            if blanks:
                out = self.backend.generate(batch + blanks, replace(settings, temperature=0.0))
                probes = [(g.text, b.text) for g, b in zip(out[: len(todo)], out[len(todo) :], strict=True)]
        latency = (time.perf_counter() - start) * 1000
        answers = []
        for i, request in enumerate(requests):
            if i not in prompts:
                answers.append(
                    Answer(
                        text=refusal_text(decisions[i]),
                        model=info,
                        grounded=None,
                        confidence=None,
                        abstained=False,
                        refused=True,
                        safety=decisions[i],
                        latency_ms=latency,
                        views=build_prompt(request, info.multi_image).views,
                        warnings=list(request.warnings),
                    )
                )
                continue
            k = todo.index(i)
            probe = probes[k] if probes else None
            answers.append(
                self._answer(request, prompts[i], generations[k], probe, settings, decisions[i], latency)
            )
        return answers

    def _answer(
        self,
        request: AskRequest,
        prompt: ChatPrompt,
        gen: Generation,
        probe: tuple[str, str] | None,
        settings: GenerationSettings,
        decisions: list[SafetyDecision],
        latency: float,
    ) -> Answer:
        confidence = None
        if is_yes_no_question(request.question):
            confidence = stated_confidence(gen.text, gen.yes_prob, gen.no_prob)
        abstained = confidence is not None and confidence < settings.abstain_threshold
        text = gen.text
        if abstained and confidence is not None and confidence < 0.5:
            text = (
                f'The model answered "{answer_polarity(gen.text)}" but its own yes/no probabilities '
                f"favour the opposite (confidence {confidence:.2f}); please review the images."
            )
        elif abstained:
            text = (
                f"Not confident enough to answer yes or no (confidence {confidence:.2f} below "
                f"{settings.abstain_threshold:.2f}); please review the images."
            )
        grounded = None if probe is None else not same_answer(*probe)
        warnings = list(request.warnings)
        if grounded is False:
            logger.info("answer unchanged with blank images: flagged as not grounded")
            warnings.append(UNGROUNDED_WARNING)
            if not abstained:
                text = f"{UNGROUNDED_WARNING} Model answer: {text}"
        return Answer(
            text=text,
            model=self.backend.info(),
            grounded=grounded,
            confidence=confidence,
            abstained=abstained,
            refused=False,
            safety=decisions,
            latency_ms=latency,
            views=prompt.views,
            cited_facts=cited_fact_ids(gen.text, [f.fact_id for f in request.facts]),
            raw_text=gen.text,
            ablation_text=None if probe is None else probe[1],
            warnings=warnings,
        )

    def stream(self, request: AskRequest, settings: GenerationSettings | None = None) -> Iterator[str]:
        """Stream the answer's text (no ablation or abstention: those need the whole answer).

        Yields:
            Text chunks; the refusal text as one chunk when the gate refuses.
        """
        settings = settings or GenerationSettings()
        decisions = self.gate.check(request, settings.scope)
        if any(d.action == "refuse" for d in decisions):
            yield refusal_text(decisions)
            return
        yield from self.backend.stream(build_prompt(request, self.backend.info().multi_image), settings)
