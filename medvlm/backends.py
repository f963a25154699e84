"""The backend interface and its in-process (transformers) implementation.

A backend turns rendered-neutral ``ChatPrompt``s into ``Generation``s. Two implementations share
the ``Backend`` protocol: ``InProcessBackend`` here, and ``medvlm.http_backend.HTTPBackend`` for
an OpenAI-compatible server (vLLM, SGLang, or ``medvlm serve-api``). Safety, ablation and
abstention live above the backends, in ``medvlm.assistant``, so every backend gets them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch

from medvlm.grounding import (
    ContrastiveLogitsProcessor,
    UnconditionedScorer,
    verdict_step,
    yes_no_probs,
    yes_no_token_ids,
)
from medvlm.loading import LoadedModel
from medvlm.processing import ChatPrompt, without_images
from medvlm.schema import Generation, GenerationSettings, ModelInfo

logger = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """What the assistant needs from a model, wherever it runs."""

    def info(self) -> ModelInfo:
        """Model and adapter versions, family, and whether several images fit in one prompt."""
        ...

    def generate(
        self, prompts: list[ChatPrompt], settings: GenerationSettings, yes_no: bool = False
    ) -> list[Generation]:
        """Answer a batch of prompts; with ``yes_no``, also return yes/no token probabilities."""
        ...

    def stream(self, prompt: ChatPrompt, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer to one prompt as text chunks, as they are generated."""
        ...


class InProcessBackend:
    """Generation with a model loaded in this process (``medvlm.load``).

    Calls are serialised with a lock: one model generates one batch at a time.

    Args:
        loaded: the loaded model and processor.
    """

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._lock = threading.Lock()
        self._yes_no_ids = yes_no_token_ids(loaded.processor.tokenizer)

    def info(self) -> ModelInfo:
        """Versions of the model and active adapter (they change on switch / merge)."""
        return ModelInfo(
            model_version=self.loaded.model_version,
            adapter_version=self.loaded.adapter_version,
            family=self.loaded.family,
            multi_image=self.loaded.multi_image,
        )

    def render(self, prompt: ChatPrompt) -> str:
        """The prompt as text, through the model's own chat template."""
        text: str = self.loaded.processor.apply_chat_template(
            prompt.messages, add_generation_prompt=True, tokenize=False
        )
        return text

    def encode(self, prompts: list[ChatPrompt]) -> Any:
        """Processor inputs for a batch (left-padded), on the model's device.

        Args:
            prompts: prompts that all have images, or all have none.

        Returns:
            A ``BatchFeature`` with ``input_ids`` (batch, seq), ``attention_mask`` and the
            family's pixel inputs.
        """
        texts = [self.render(p) for p in prompts]
        processor = self.loaded.processor
        if any(p.images for p in prompts):
            inputs = processor(
                text=texts, images=[p.images for p in prompts], return_tensors="pt", padding=True
            )
        else:
            inputs = processor.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.loaded.device)
        for key, value in inputs.items():
            if torch.is_floating_point(value):
                inputs[key] = value.to(self.loaded.model.dtype)
        return inputs

    def _generate_kwargs(
        self, prompts: list[ChatPrompt], inputs: Any, settings: GenerationSettings
    ) -> dict[str, Any]:
        tokenizer = self.loaded.processor.tokenizer
        kwargs: dict[str, Any] = {
            **inputs,
            "max_new_tokens": settings.max_new_tokens,
            "do_sample": settings.temperature > 0,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if settings.temperature > 0:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if settings.contrastive_alpha > 0:
            plain = self.encode([without_images(p) for p in prompts])
            scorer = UnconditionedScorer(self.loaded.model, plain["input_ids"], plain["attention_mask"])
            processor = ContrastiveLogitsProcessor(
                scorer, inputs["input_ids"].shape[1], settings.contrastive_alpha, settings.contrastive_beta
            )
            kwargs["logits_processor"] = [processor]
        return kwargs

    @torch.no_grad()
    def _run(self, prompts: list[ChatPrompt], settings: GenerationSettings, logits: bool) -> tuple[Any, Any]:
        with self._lock:
            inputs = self.encode(prompts)
            kwargs = self._generate_kwargs(prompts, inputs, settings)
            torch.manual_seed(settings.seed)
            out = self.loaded.model.generate(**kwargs, return_dict_in_generate=True, output_logits=logits)
        return out.sequences[:, inputs["input_ids"].shape[1] :], out.logits

    def generate(
        self, prompts: list[ChatPrompt], settings: GenerationSettings, yes_no: bool = False
    ) -> list[Generation]:
        """Generate answers for a batch of prompts.

        Args:
            prompts: the prompts (batched together, left-padded).
            settings: decoding settings; ``contrastive_alpha > 0`` adds visual contrastive decoding.
            yes_no: also return the yes/no probability mass at the answer's yes/no token (from the
                logits with the image, before contrastive decoding); None when the answer states no
                verdict (:func:`medvlm.grounding.verdict_step`).

        Returns:
            One ``Generation`` per prompt, in order.
        """
        new_tokens, step_logits = self._run(prompts, settings, yes_no)
        texts = self.loaded.processor.batch_decode(new_tokens, skip_special_tokens=True)
        results = []
        for row, text in enumerate(texts):
            yes = no = None
            step = self._yes_no_step(new_tokens[row], text) if yes_no and step_logits else None
            if step is not None:
                yes, no = yes_no_probs(step_logits[step][row], *self._yes_no_ids)
            results.append(Generation(text=text.strip(), yes_prob=yes, no_prob=no))
        return results

    def generate_with_logprobs(
        self, prompt: ChatPrompt, settings: GenerationSettings, top: int
    ) -> tuple[Generation, list[dict[str, Any]]]:
        """Generate one answer and the OpenAI-style ``logprobs.content`` list of its tokens.

        Args:
            prompt: the prompt.
            settings: decoding settings.
            top: how many alternatives per token (``top_logprobs``).

        Returns:
            The generation and, per generated token, ``{"token", "logprob", "top_logprobs"}``.
        """
        new_tokens, step_logits = self._run([prompt], settings, True)
        tokenizer = self.loaded.processor.tokenizer
        content = []
        for step, token in enumerate(new_tokens[0].tolist()):
            if token == tokenizer.pad_token_id and step > 0:
                break
            logp = step_logits[step][0].float().log_softmax(-1)
            values, ids = logp.topk(top)
            content.append(
                {
                    "token": tokenizer.decode([token]),
                    "logprob": float(logp[token]),
                    "top_logprobs": [
                        {"token": tokenizer.decode([i]), "logprob": float(v)}
                        for v, i in zip(values.tolist(), ids.tolist(), strict=True)
                    ],
                }
            )
        text = self.loaded.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()
        return Generation(text=text), content

    def _yes_no_step(self, tokens: torch.Tensor, text: str) -> int | None:
        """The step of the answer's yes/no verdict token (:func:`medvlm.grounding.verdict_step`)."""
        wanted = set(self._yes_no_ids[0]) | set(self._yes_no_ids[1])
        return verdict_step([token in wanted for token in tokens.tolist()], text)

    def stream(self, prompt: ChatPrompt, settings: GenerationSettings) -> Iterator[str]:
        """Yield text chunks of the answer as they are decoded (``TextIteratorStreamer``).

        Args:
            prompt: one prompt.
            settings: decoding settings.

        Yields:
            Decoded text pieces; their concatenation is the greedy answer of ``generate``.
        """
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(
            self.loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._lock, torch.no_grad():
                    inputs = self.encode([prompt])
                    kwargs = self._generate_kwargs([prompt], inputs, settings)
                    torch.manual_seed(settings.seed)
                    self.loaded.model.generate(**kwargs, streamer=streamer)
            except Exception as e:  # surfaced to the consumer below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, name="medvlm-generate", daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if errors:
            raise errors[0]
