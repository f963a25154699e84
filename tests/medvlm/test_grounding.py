"""Grounding: contrastive decoding direction, KV-cached unconditioned pass, ablation, abstention."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import medvlm
from medvlm.assistant import UNGROUNDED_WARNING, Assistant
from medvlm.backends import InProcessBackend
from medvlm.grounding import (
    ContrastiveLogitsProcessor,
    UnconditionedScorer,
    answer_polarity,
    is_yes_no_question,
    same_answer,
    stated_confidence,
    yes_no_confidence,
)
from medvlm.processing import ChatPrompt, build_prompt, without_images

NOISE = (np.random.default_rng(7).random((32, 32, 3)) * 255).astype(np.uint8)


def test_contrastive_moves_towards_the_image_supported_token() -> None:
    # Token 0 is what the language prior says with or without the image; token 1 is only
    # supported by the image. Plain greedy picks token 0; contrastive decoding must pick token 1.
    cond = torch.tensor([[2.0, 1.9, 0.0, -1.0]])
    uncond = torch.tensor([[3.0, 0.0, 0.0, -1.0]])
    ids = torch.zeros(1, 5, dtype=torch.long)
    processor = ContrastiveLogitsProcessor(lambda generated: uncond, prompt_len=5, alpha=1.0, beta=0.0)
    out = processor(ids, cond.clone())  # type: ignore[arg-type]
    assert cond.argmax().item() == 0 and out.argmax().item() == 1
    torch.testing.assert_close(out, 2 * cond - uncond)
    # Stronger alpha widens the gap in favour of the image-supported token.
    stronger = ContrastiveLogitsProcessor(lambda g: uncond, prompt_len=5, alpha=3.0, beta=0.0)(
        ids,  # type: ignore[arg-type]
        cond.clone(),  # type: ignore[arg-type]
    )
    assert (stronger[0, 1] - stronger[0, 0]) > (out[0, 1] - out[0, 0])
    # alpha = 0 is the identity.
    same = ContrastiveLogitsProcessor(lambda g: uncond, prompt_len=5, alpha=0.0)(ids, cond.clone())  # type: ignore[arg-type]
    torch.testing.assert_close(same, cond)


def test_plausibility_cutoff_never_promotes_implausible_tokens() -> None:
    cond = torch.tensor([[5.0, 4.0, -5.0]])
    uncond = torch.tensor([[5.0, 4.0, -20.0]])  # token 2 looks "image-specific" but is implausible
    out = ContrastiveLogitsProcessor(lambda g: uncond, prompt_len=1, alpha=1.0, beta=0.1)(
        torch.zeros(1, 1, dtype=torch.long),  # type: ignore[arg-type]
        cond,  # type: ignore[arg-type]
    )
    assert out[0, 2] == float("-inf") and out.argmax().item() == 0


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_unconditioned_scorer_cache_matches_full_forward(
    family: str, tiny_model_dir: Callable[[str], Path]
) -> None:
    loaded = medvlm.load(tiny_model_dir(family), device="cpu")
    backend = InProcessBackend(loaded)
    prompt = without_images(build_prompt(medvlm.AskRequest(images=[NOISE], question="Any nodule?"), True))
    plain = backend.encode([prompt])
    scorer = UnconditionedScorer(loaded.model, plain["input_ids"], plain["attention_mask"])
    generated = torch.tensor([[11, 22, 33]])
    for n in range(4):
        incremental = scorer(generated[:, :n])
        ids = torch.cat([plain["input_ids"], generated[:, :n]], dim=1)
        with torch.no_grad():
            full = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
        torch.testing.assert_close(incremental, full, atol=1e-4, rtol=1e-4)


def test_contrastive_generation_runs_end_to_end(llava: medvlm.LoadedModel) -> None:
    backend = InProcessBackend(llava)
    request = medvlm.AskRequest(images=[NOISE], question="What is seen?")
    prompt = build_prompt(request, llava.multi_image)
    plain = backend.generate([prompt], medvlm.GenerationSettings(max_new_tokens=5))[0]
    off = backend.generate([prompt], medvlm.GenerationSettings(max_new_tokens=5, contrastive_alpha=0.0))[0]
    on = backend.generate([prompt], medvlm.GenerationSettings(max_new_tokens=5, contrastive_alpha=2.0))[0]
    assert off.text == plain.text and on.text


def _scale_projector(loaded: medvlm.LoadedModel, factor: float) -> None:
    with torch.no_grad():
        for p in loaded.model.model.multi_modal_projector.parameters():
            p.mul_(factor)


def test_ablation_flags_an_image_independent_model(llava_dir: Path) -> None:
    loaded = medvlm.load(llava_dir, device="cpu")
    _scale_projector(loaded, 0.0)  # image features are all zero: the image cannot matter
    answer = Assistant(InProcessBackend(loaded)).ask(
        medvlm.AskRequest(images=[NOISE], question="What is seen?"),
        medvlm.GenerationSettings(max_new_tokens=6),
    )
    assert answer.grounded is False and answer.ablation_text == answer.raw_text


def test_ablation_passes_a_model_that_looks_at_the_image(llava_dir: Path) -> None:
    loaded = medvlm.load(llava_dir, device="cpu")
    _scale_projector(loaded, 30.0)  # image features dominate the tiny model's embeddings
    answer = Assistant(InProcessBackend(loaded)).ask(
        medvlm.AskRequest(images=[NOISE], question="What is seen?"),
        medvlm.GenerationSettings(max_new_tokens=6),
    )
    assert answer.grounded is True and answer.ablation_text != answer.raw_text


@dataclass
class FakeBackend:
    """A backend with scripted generations (tests the assistant's logic without a model)."""

    generations: list[medvlm.Generation]
    calls: list[list[ChatPrompt]] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)

    def info(self) -> medvlm.ModelInfo:
        return medvlm.ModelInfo("fake@000000000000", None, "fake", True)

    def generate(
        self, prompts: list[ChatPrompt], settings: medvlm.GenerationSettings, yes_no: bool = False
    ) -> list[medvlm.Generation]:
        self.calls.append(prompts)
        self.temperatures.append(settings.temperature)
        return self.generations[: len(prompts)]

    def stream(self, prompt: ChatPrompt, settings: medvlm.GenerationSettings) -> Iterator[str]:
        yield self.generations[0].text


def test_low_yes_no_confidence_abstains() -> None:
    unsure = FakeBackend([medvlm.Generation("Yes.", 0.30, 0.25), medvlm.Generation("No.", 0.2, 0.3)])
    request = medvlm.AskRequest(images=[NOISE], question="Is there a pneumothorax?")
    answer = Assistant(unsure).ask(request)
    assert answer.abstained and "Not confident" in answer.text and answer.raw_text == "Yes."
    assert answer.confidence == pytest.approx(0.30 / 0.55)
    assert answer.grounded is True  # "Yes." with the image, "No." with blank images
    assert len(unsure.calls[0]) == 2 and not np.asarray(unsure.calls[0][1].images[0]).any()  # blank probe
    # Unchanged with blank images: not stated as fact (this used to return the bare "Yes.").
    sure = FakeBackend([medvlm.Generation("Yes.", 0.9, 0.05), medvlm.Generation("Yes", 0.9, 0.05)])
    answer = Assistant(sure).ask(request)
    assert not answer.abstained and answer.grounded is False
    assert answer.text == f"{UNGROUNDED_WARNING} Model answer: Yes." and answer.warnings == [
        UNGROUNDED_WARNING
    ]
    assert answer.confidence == pytest.approx(0.9 / 0.95)


def test_confidence_belongs_to_the_stated_answer() -> None:
    request = medvlm.AskRequest(images=[NOISE], question="Is the heart enlarged?")
    blank = medvlm.Generation("Something else entirely.")
    # No yes/no token generated: no confidence, even if a backend reports token mass.
    for gen in (
        medvlm.Generation("The heart is enlarged."),
        medvlm.Generation("The heart is enlarged.", 0.6, 0.4),
    ):
        answer = Assistant(FakeBackend([gen, blank])).ask(request)
        assert answer.confidence is None and not answer.abstained and answer.text == gen.text
    # The text says "No" but the yes token had most of the mass: the confidence is that of "no".
    contradicts = FakeBackend([medvlm.Generation("No, it is normal.", 0.8, 0.2), blank])
    answer = Assistant(contradicts).ask(request)
    assert answer.confidence == pytest.approx(0.2) and answer.abstained
    assert "favour the opposite" in answer.text and answer.raw_text == "No, it is normal."
    agrees = FakeBackend([medvlm.Generation("No, it is normal.", 0.2, 0.8), blank])
    answer = Assistant(agrees).ask(request)
    assert answer.confidence == pytest.approx(0.8) and not answer.abstained
    assert answer.text == "No, it is normal." and answer.grounded is True and answer.warnings == []


def test_yes_no_step_is_none_without_a_yes_no_token(llava: medvlm.LoadedModel) -> None:
    backend = InProcessBackend(llava)
    tokenizer = llava.processor.tokenizer
    yes = backend._yes_no_ids[0][0]
    other = tokenizer.encode(" heart", add_special_tokens=False)[0]
    assert backend._yes_no_step(torch.tensor([other, other, other, yes]), "heart heart heart yes") is None
    assert backend._yes_no_step(torch.tensor([other, yes, other]), "heart yes heart") == 1
    # a reasoned answer ("It is small, so yes.") has its verdict at the end, beyond the lookahead
    reasoned = torch.tensor([other, other, other, other, yes, other])
    assert backend._yes_no_step(reasoned, "It is small, so yes.") == 4


def test_input_warnings_travel_to_the_answer() -> None:
    request = medvlm.AskRequest(images=[NOISE], question="What is seen?", warnings=["slice 2 may be missing"])
    answer = Assistant(FakeBackend([medvlm.Generation("A"), medvlm.Generation("B")])).ask(request)
    assert answer.warnings == ["slice 2 may be missing"] and answer.text == "A"


def test_yes_no_helpers() -> None:
    assert is_yes_no_question("Is there an effusion?") and is_yes_no_question("does it show a fracture")
    assert not is_yes_no_question("What is the cardiothoracic ratio?")
    assert yes_no_confidence(0.0, 0.0) is None and yes_no_confidence(0.2, 0.6) == pytest.approx(0.75)
    assert same_answer("Yes, there is.", "yes there is") and not same_answer("Yes", "No")
    assert (
        answer_polarity("Yes, there is.") == "yes"
        and answer_polarity("The heart looks enlarged, no doubt.") is None
    )
    assert answer_polarity("Well, no.") == "no" and stated_confidence("No.", 0.75, 0.25) == pytest.approx(
        0.25
    )
    assert stated_confidence("Maybe.", 0.75, 0.25) is None and stated_confidence("Yes", None, None) is None


def test_sampled_answers_are_ablated_greedily() -> None:
    backend = FakeBackend([medvlm.Generation("A sampled answer."), medvlm.Generation("Blank answer.")])
    request = medvlm.AskRequest(images=[NOISE], question="What is seen?")
    answer = Assistant(backend).ask(request, medvlm.GenerationSettings(temperature=0.7))
    assert backend.temperatures == [0.7, 0.0] and [len(c) for c in backend.calls] == [1, 2]
    assert answer.raw_text == "A sampled answer." and answer.grounded is True


def test_polarity_of_a_reasoned_answer() -> None:
    assert answer_polarity("It is on the patient's right, so no.") == "no"
    assert answer_polarity("It is in the upper zone, so Yes") == "yes"
    assert answer_polarity("Yes, it is small.") == "yes"
    assert answer_polarity("It is small and large.") is None
    assert answer_polarity("The nodule is not so notable") is None
