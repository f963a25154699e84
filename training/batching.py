"""Turn examples into model batches: chat-formatted Llava inputs with answer-only labels.

Each example becomes ``prompt + answer + <|im_end|>`` where the prompt is the processor's chat
template applied to one user turn ``[image, question]`` with the generation prompt. Labels are
``-100`` on the prompt (including the image tokens) and padding, so the loss covers only the answer
(LLaVA stage-1/2 recipe).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from training.data import PixelCache, QAExample

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
END_OF_TURN = "<|im_end|>"


def chat_prompt(processor: Any, question: str, *, with_image: bool = True) -> str:
    """The prompt text for one user question, ending with the assistant header.

    Args:
        processor: a processor (or tokenizer) with a chat template.
        question: the question text.
        with_image: put one image placeholder before the question.

    Returns:
        The rendered prompt (image placeholder not yet expanded).
    """
    content: list[dict[str, str]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": question})
    prompt: str = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return prompt


@dataclass
class LlavaBatcher:
    """Builds Llava training batches.

    Attributes:
        processor: the model's ``LlavaProcessor``.
        pixels: pixel cache built on the processor's image processor.
        image_seq_len: image tokens per image (``(S / patch)**2``).
        max_answer_tokens: answers are cut to this many tokens (plus the end-of-turn token).
    """

    processor: Any
    pixels: PixelCache
    image_seq_len: int
    max_answer_tokens: int = 48

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def encode(self, question: str, answer: str) -> tuple[list[int], list[int]]:
        """Token ids and labels of one example (a one-turn :meth:`encode_turns`).

        Returns:
            ``(input_ids, labels)`` of equal length; labels are IGNORE_INDEX on the prompt.
        """
        return self.encode_turns([(question, answer)])

    def encode_turns(self, turns: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """Token ids and labels of a conversation about one image, rendered as the chat template does.

        The image goes in the first user turn; every answer and its end-of-turn token are labelled,
        the user turns (and the newline that ends each message) are not.

        Args:
            turns: ``(question, answer)`` pairs, at least one.

        Returns:
            ``(input_ids, labels)`` of equal length.
        """
        if not turns:
            raise ValueError("a conversation needs at least one turn")
        image_token = self.processor.image_token
        ids: list[int] = []
        labels: list[int] = []
        for k, (question, answer) in enumerate(turns):
            prompt = chat_prompt(self.processor, question, with_image=k == 0)
            if k == 0:
                prompt = prompt.replace(image_token, image_token * self.image_seq_len)
            prompt_ids = self._ids(("\n" if k else "") + prompt)
            answer_ids = self._ids(answer)[: self.max_answer_tokens] + self._ids(END_OF_TURN)
            ids += prompt_ids + answer_ids
            labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
        return ids, labels

    def conversations(self, groups: Sequence[Sequence[QAExample]]) -> dict[str, torch.Tensor]:
        """Collate multi-turn conversations, one image each (see :meth:`encode_turns`).

        Args:
            groups: each a non-empty list of examples about the same image.

        Returns:
            Same keys as :meth:`__call__`.
        """
        encoded = [self.encode_turns([(e.question, e.answer) for e in group]) for group in groups]
        return self._collate(encoded, [group[0] for group in groups])

    def __call__(
        self, examples: Sequence[QAExample], answers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Collate examples (right-padded).

        Args:
            examples: the examples (each must have an image).
            answers: replace the examples' answers (DPO chosen/rejected); None keeps them.

        Returns:
            ``input_ids`` / ``attention_mask`` / ``labels`` ``(B, T)`` and ``pixel_values`` ``(B, 3, S, S)``.
        """
        texts = answers if answers is not None else [e.answer for e in examples]
        encoded = [self.encode(e.question, a) for e, a in zip(examples, texts, strict=True)]
        return self._collate(encoded, examples)

    def _collate(
        self, encoded: Sequence[tuple[list[int], list[int]]], examples: Sequence[QAExample]
    ) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(ids) for ids, _ in encoded)
        tokenizer = self.processor.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, (ids, lab) in enumerate(encoded):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, : len(lab)] = torch.tensor(lab)
            mask[row, : len(ids)] = 1
        images = []
        for e in examples:
            if e.image is None:
                raise ValueError(f"example {e.id or e.question[:30]!r} has no image")
            images.append(e.image)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": labels,
            "pixel_values": self.pixels.get(images),
        }


def on_device_of(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its tensors moved to the device of ``model``'s parameters (the GPU, when there)."""
    device = next(model.parameters()).device
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def answer_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probability of the labelled tokens of each sequence.

    Args:
        logits: ``(B, T, V)`` next-token logits aligned with ``labels`` (position t predicts t+1).
        labels: ``(B, T)`` with IGNORE_INDEX where not scored.

    Returns:
        ``(B,)`` sums of ``log p(label_t+1 | <= t)`` over labelled positions.
    """
    import torch

    shifted_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    logp = torch.log_softmax(shifted_logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(dim=-1)
