"""Grounding at answer time: visual contrastive decoding, image ablation, yes/no confidence.

Visual contrastive decoding follows M3ID ("Multi-Modal Hallucination Control by Visual
Information Grounding", Favero et al., CVPR 2024) and VCD (Leng et al., CVPR 2024): at every
step the next-token logits given the image are pushed away from the logits of the same text
without the image, ``(1 + a) * l_img - a * l_noimg``, so tokens the language prior favours
regardless of the image lose weight. VCD's adaptive plausibility constraint keeps only tokens
whose probability with the image is at least ``beta`` times the best one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import transformers
from transformers import LogitsProcessor

logger = logging.getLogger(__name__)

# transformers 5 renamed the ``past_key_values`` argument and output field to ``cache``.
_CACHE_KWARG = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"

YES_WORDS = ("yes",)
NO_WORDS = ("no",)
YES_NO_LOOKAHEAD = 3  # a yes/no answer's verdict is the first yes/no among its first 3 tokens or words
# ... or a reasoned answer's last clause: "It is on the patient's right, so no." (the built-in model
# reads an attribute off before checking a stated one, training.data.reasoned)
_REASONED_VERDICT = re.compile(r"\bso\s+(yes|no)\W*$", re.IGNORECASE)
_YES_NO_QUESTION = re.compile(
    r"^\s*(is|are|was|were|does|do|did|has|have|had|can|could|should|will|would|may|might|must)\b",
    re.IGNORECASE,
)


class UnconditionedScorer:
    """Next-token logits of the prompt *without* the image, kept in step with generation.

    The unconditioned pass runs alongside generation with its own KV cache: the first call
    encodes the text-only prompt plus the tokens generated so far, later calls feed only the new
    token.

    Args:
        model: the same model that generates (its language path runs without pixel values).
        input_ids: (batch, prompt_len_u) text-only prompt, left-padded.
        attention_mask: (batch, prompt_len_u) mask of it.
    """

    def __init__(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.model = model
        self.input_ids = input_ids
        self.attention_mask = attention_mask
        self.cache: Any = None
        self.seen = 0  # generated tokens already fed

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor) -> torch.Tensor:
        """Logits (batch, vocab) for the next token after ``generated`` (batch, n_generated)."""
        if self.cache is None:
            ids = torch.cat([self.input_ids, generated], dim=1)
        else:
            ids = generated[:, self.seen :]
        mask = self.attention_mask
        ones = torch.ones(
            generated.shape[0], generated.shape[1] - self.seen, dtype=mask.dtype, device=mask.device
        )
        self.attention_mask = torch.cat([mask, ones], dim=1)
        # Explicit positions: some families (Qwen2-VL) otherwise reuse rope offsets that the
        # conditioned pass stored on the model.
        positions = (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        out = self.model(
            input_ids=ids,
            attention_mask=self.attention_mask,
            position_ids=positions,
            use_cache=True,
            **{_CACHE_KWARG: self.cache},
        )
        self.cache = out.get("cache", None) if "cache" in out else out.get("past_key_values", None)
        self.seen = generated.shape[1]
        logits: torch.Tensor = out.logits[:, -1, :]
        return logits


class ContrastiveLogitsProcessor(LogitsProcessor):
    """Visual contrastive decoding as a ``LogitsProcessor`` (M3ID / VCD).

    ``scores' = (1 + alpha) * scores - alpha * unconditioned``, then tokens whose conditioned
    probability is below ``beta`` times the maximum are set to ``-inf``.

    Args:
        unconditioned: returns (batch, vocab) logits without the image for the tokens generated
            so far; an ``UnconditionedScorer`` in production, any callable in tests.
        prompt_len: length of the conditioned prompt in ``input_ids`` (generation starts after it).
        alpha: strength ``a`` >= 0; 0 leaves the scores unchanged.
        beta: plausibility cut-off in [0, 1).
    """

    def __init__(
        self,
        unconditioned: Callable[[torch.Tensor], torch.Tensor],
        prompt_len: int,
        alpha: float,
        beta: float = 0.1,
    ) -> None:
        if alpha < 0 or not 0 <= beta < 1:
            raise ValueError(f"alpha must be >= 0 and beta in [0, 1), got {alpha}, {beta}")
        self.unconditioned = unconditioned
        self.prompt_len = prompt_len
        self.alpha = alpha
        self.beta = beta

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Return contrasted scores.

        Args:
            input_ids: (batch, prompt_len + n_generated) tokens so far.
            scores: (batch, vocab) conditioned logits for the next token.

        Returns:
            (batch, vocab) contrasted logits.
        """
        if self.alpha == 0:
            return scores
        generated = input_ids[:, self.prompt_len :]
        uncond = self.unconditioned(generated).to(scores.dtype)
        vocab = min(uncond.shape[-1], scores.shape[-1])
        contrasted = scores.clone()
        contrasted[:, :vocab] = (1 + self.alpha) * scores[:, :vocab] - self.alpha * uncond[:, :vocab]
        if self.beta > 0:
            probs = scores.softmax(dim=-1)
            keep = probs >= self.beta * probs.max(dim=-1, keepdim=True).values
            contrasted = contrasted.masked_fill(~keep, float("-inf"))
        return contrasted  # type: ignore[return-value]


def is_yes_no_question(question: str) -> bool:
    """Whether a question asks for yes or no (it opens with an auxiliary verb)."""
    return bool(_YES_NO_QUESTION.match(question))


def yes_no_token_ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Token ids whose text is "yes" or "no" in any case, with or without a leading space."""
    ids: dict[str, set[int]] = {"yes": set(), "no": set()}
    for key, words in (("yes", YES_WORDS), ("no", NO_WORDS)):
        for word in words:
            for variant in (word, word.capitalize(), word.upper()):
                for text in (variant, " " + variant):
                    tokens = tokenizer.encode(text, add_special_tokens=False)
                    if len(tokens) == 1:
                        ids[key].add(int(tokens[0]))
    return sorted(ids["yes"]), sorted(ids["no"])


def yes_no_probs(step_logits: torch.Tensor, yes_ids: list[int], no_ids: list[int]) -> tuple[float, float]:
    """Probability mass of yes and no tokens in one step's logits (vocab,)."""
    probs = step_logits.float().softmax(dim=-1)
    return float(probs[yes_ids].sum()), float(probs[no_ids].sum())


def yes_no_confidence(yes_prob: float | None, no_prob: float | None) -> float | None:
    """Confidence of a yes/no answer: ``max(p_yes, p_no) / (p_yes + p_no)``, in [0.5, 1].

    Returns:
        None when the probabilities are missing or both (almost) zero.
    """
    if yes_prob is None or no_prob is None or yes_prob + no_prob < 1e-6:
        return None
    return max(yes_prob, no_prob) / (yes_prob + no_prob)


def answer_polarity(text: str, lookahead: int = YES_NO_LOOKAHEAD) -> str | None:
    """The polarity an answer states: a yes/no among its first words, or a reasoned verdict.

    Args:
        text: the generated answer.
        lookahead: how many leading words to search (the yes/no token is searched as far).

    Returns:
        ``"yes"`` or ``"no"`` when one of the first words is that word, or when the answer ends
        "..., so yes." / "..., so no."; None otherwise.
    """
    for word in normalise_answer(text).split()[:lookahead]:
        if word in ("yes", "no"):
            return word
    reasoned = _REASONED_VERDICT.search(text)
    return reasoned.group(1).lower() if reasoned else None


def verdict_step(is_yes_no: Sequence[bool], text: str, lookahead: int = YES_NO_LOOKAHEAD) -> int | None:
    """Which generated token carries the answer's yes/no verdict (see :func:`answer_polarity`).

    Args:
        is_yes_no: per generated token, whether it is a yes or no token.
        text: the decoded answer.
        lookahead: how many leading tokens may open the answer with the verdict.

    Returns:
        The first yes/no token among the first ``lookahead``; else, for a reasoned answer ("..., so
        no."), the last yes/no token; None when the answer states no verdict.
    """
    for step, flag in enumerate(is_yes_no[:lookahead]):
        if flag:
            return step
    if _REASONED_VERDICT.search(text):
        last = [step for step, flag in enumerate(is_yes_no) if flag]
        return last[-1] if last else None
    return None


def stated_confidence(text: str, yes_prob: float | None, no_prob: float | None) -> float | None:
    """Probability of the polarity the answer states, among yes and no: ``p(stated) / (p_yes + p_no)``.

    Unlike ``yes_no_confidence``, this belongs to the answer shown: an answer reading "No" while
    the yes token had most of the mass gets a value below 0.5.

    Args:
        text: the generated answer.
        yes_prob: yes-token mass at the yes/no step, None when no yes/no token was generated.
        no_prob: no-token mass at the same step.

    Returns:
        A value in [0, 1], or None when the answer states no polarity or the probabilities are
        missing or both (almost) zero.
    """
    polarity = answer_polarity(text)
    if polarity is None or yes_prob is None or no_prob is None or yes_prob + no_prob < 1e-6:
        return None
    return (yes_prob if polarity == "yes" else no_prob) / (yes_prob + no_prob)


def normalise_answer(text: str) -> str:
    """Lower-case words only, for comparing an answer with its image-ablated twin."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def same_answer(answer: str, ablated: str) -> bool:
    """Whether the answer given with blank images is the same answer (then it is not grounded)."""
    return normalise_answer(answer) == normalise_answer(ablated)
