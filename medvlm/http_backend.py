"""A backend that talks to an OpenAI-compatible server (vLLM, SGLang, or ``medvlm serve-api``).

Uses only the standard library. Images go inline as base64 data URLs. Yes/no probabilities come
from ``logprobs`` / ``top_logprobs`` when the server returns them.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from medvlm.errors import BackendError
from medvlm.grounding import verdict_step
from medvlm.openai_format import prompt_to_messages
from medvlm.processing import ChatPrompt
from medvlm.schema import Generation, GenerationSettings, ModelInfo

logger = logging.getLogger(__name__)

TOP_LOGPROBS = 20


class HTTPBackend:
    """OpenAI chat-completions client implementing the ``Backend`` protocol.

    Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000`` (``/v1`` is appended when missing).
        model: model name to request; the server's first model when None.
        api_key: sent as a bearer token when given.
        timeout: seconds per request (connect and read).
        multi_image: whether the served model takes several images in one prompt.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        multi_image: bool = True,
    ) -> None:
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.api_key = api_key
        self.timeout = timeout
        self.multi_image = multi_image
        self._model = model
        self._info: ModelInfo | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            raise BackendError(f"model server at {self.base_url} answered HTTP {e.code}: {detail}") from e
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise BackendError(f"model server at {self.base_url} is not reachable ({reason})") from e

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with self._request(method, path, body) as response:
            try:
                return json.loads(response.read().decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, TimeoutError) as e:
                raise BackendError(
                    f"model server at {self.base_url} sent an unreadable response ({e})"
                ) from e

    def info(self) -> ModelInfo:
        """Model id from ``/v1/models`` (and the ``medvlm`` version fields when the server is ours).

        Raises:
            BackendError: when the server is down or lists no model.
        """
        if self._info is None:
            listing = self._json("GET", "/models").get("data") or []
            if not listing:
                raise BackendError(f"model server at {self.base_url} lists no models")
            entry = next((m for m in listing if m.get("id") == self._model), listing[0])
            self._model = str(entry["id"])
            self._info = ModelInfo(
                model_version=str(entry.get("medvlm_model_version") or entry["id"]),
                adapter_version=entry.get("medvlm_adapter_version"),
                family=str(entry.get("medvlm_family") or "remote"),
                multi_image=bool(entry.get("medvlm_multi_image", self.multi_image)),
            )
        return self._info

    def _body(
        self, prompt: ChatPrompt, settings: GenerationSettings, stream: bool, yes_no: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.info() and self._model,
            "messages": prompt_to_messages(prompt),
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed,
            "stream": stream,
        }
        if settings.contrastive_alpha > 0:  # honoured by medvlm serve-api; other servers ignore it
            body["medvlm_contrastive_alpha"] = settings.contrastive_alpha
            body["medvlm_contrastive_beta"] = settings.contrastive_beta
        if yes_no:
            body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
        return body

    def generate(
        self, prompts: list[ChatPrompt], settings: GenerationSettings, yes_no: bool = False
    ) -> list[Generation]:
        """One chat-completions request per prompt (the server batches concurrent requests).

        Raises:
            BackendError: when the server is down, times out, or answers with an error.
        """
        results = []
        for prompt in prompts:
            reply = self._json("POST", "/chat/completions", self._body(prompt, settings, False, yes_no))
            try:
                choice = reply["choices"][0]
                text = str(choice["message"]["content"] or "")
            except (KeyError, IndexError, TypeError) as e:
                raise BackendError(f"model server at {self.base_url} sent no choices ({e})") from e
            yes, no = _yes_no_from_logprobs(choice.get("logprobs"), text) if yes_no else (None, None)
            results.append(Generation(text=text.strip(), yes_prob=yes, no_prob=no))
        return results

    def stream(self, prompt: ChatPrompt, settings: GenerationSettings) -> Iterator[str]:
        """Yield text deltas from a ``stream: true`` request (server-sent events).

        Raises:
            BackendError: when the server is down or the stream breaks.
        """
        with self._request(
            "POST", "/chat/completions", self._body(prompt, settings, True, False)
        ) as response:
            try:
                for raw in response:
                    line = raw.decode("utf-8").strip()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    delta = json.loads(payload)["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
            except (json.JSONDecodeError, KeyError, IndexError, TimeoutError) as e:
                raise BackendError(f"the stream from {self.base_url} broke off ({e})") from e


def _yes_no_from_logprobs(logprobs: Any, text: str) -> tuple[float | None, float | None]:
    content = (logprobs or {}).get("content") or []
    if not content:
        return None, None
    step = verdict_step([_word(e.get("token", "")) in ("yes", "no") for e in content], text)
    if step is None:  # no yes/no token: a confidence would belong to another word
        return None, None
    yes = no = 0.0
    for candidate in content[step].get("top_logprobs") or []:
        word = _word(candidate.get("token", ""))
        if word == "yes":
            yes += math.exp(float(candidate["logprob"]))
        elif word == "no":
            no += math.exp(float(candidate["logprob"]))
    return yes, no


def _word(token: str) -> str:
    return token.strip().lower()
