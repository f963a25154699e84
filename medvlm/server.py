"""Serve an in-process model through the OpenAI chat-completions API (stdlib ``http.server``).

``medvlm serve-api`` runs this so that ``HTTPBackend`` is tested here against the same API that
vLLM or SGLang serve in production. The standard library is enough for one model on one machine
(requests are serialised by the backend's lock anyway) and adds no dependency to audit.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (``stream: true`` gives server-sent
events). Optional bearer API key, required to bind a non-loopback address. Images must be inline
``data:`` URLs: remote URLs are refused (the server never fetches anything, so it cannot be used
for SSRF), and an image over ``max_image_pixels`` is refused from its header, before decoding.
Error replies are one sentence, never an object's repr or a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from medvlm.backends import InProcessBackend
from medvlm.errors import MedVLMError, RequestError
from medvlm.openai_format import DEFAULT_MAX_IMAGE_PIXELS, messages_to_prompt
from medvlm.schema import GenerationSettings

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_TOKENS_LIMIT = 4096


def settings_from_body(body: dict[str, Any]) -> GenerationSettings:
    """Decoding settings from an OpenAI request body (plus ``medvlm_contrastive_*`` extensions).

    Raises:
        RequestError: for out-of-range values.
    """
    try:
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        return GenerationSettings(
            max_new_tokens=min(max_tokens, MAX_TOKENS_LIMIT),
            temperature=float(_number(body, "temperature", 1.0)),
            top_p=float(_number(body, "top_p", 1.0)),
            seed=int(body.get("seed") or 0),
            contrastive_alpha=float(body.get("medvlm_contrastive_alpha") or 0.0),
            contrastive_beta=float(body.get("medvlm_contrastive_beta") or 0.1),
            ablation=False,
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise RequestError(
            "invalid generation parameters (max_tokens, temperature, top_p, seed or medvlm_contrastive_*)"
        ) from e


def _number(body: dict[str, Any], key: str, default: float) -> Any:
    value = body.get(key)
    return default if value is None else value


class ModelServer:
    """An OpenAI-compatible HTTP server around an ``InProcessBackend``.

    Args:
        backend: the in-process backend that answers.
        host: interface to bind (keep ``127.0.0.1`` or an internal network).
        port: TCP port; 0 picks a free one (see ``port`` after construction).
        api_key: when set, every ``/v1`` request needs ``Authorization: Bearer <api_key>``.
        model_name: the id listed by ``/v1/models``; the model version when None.
        max_image_pixels: largest width x height of one image in a request.

    Raises:
        RequestError: when ``host`` is not a loopback address and no ``api_key`` is given.
        OSError: when the address cannot be bound.
    """

    def __init__(
        self,
        backend: InProcessBackend,
        host: str = "127.0.0.1",
        port: int = 8000,
        api_key: str | None = None,
        model_name: str | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        if not api_key and not is_loopback(host):
            raise RequestError(f"binding {host} (not loopback) needs an API key")
        self.backend = backend
        self.api_key = api_key
        self.max_image_pixels = max_image_pixels
        self.model_name = model_name or backend.info().model_version
        self.httpd = ThreadingHTTPServer((host, port), _handler_class(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the server (``http://host:port``)."""
        host = self.httpd.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until ``shutdown`` (blocking)."""
        self.httpd.serve_forever()

    def start(self) -> None:
        """Serve in a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="medvlm-api", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def models(self) -> dict[str, Any]:
        """The ``/v1/models`` listing, with medvlm's version fields."""
        info = self.backend.info()
        return {
            "object": "list",
            "data": [
                {
                    "id": self.model_name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "medvlm",
                    "medvlm_model_version": info.model_version,
                    "medvlm_adapter_version": info.adapter_version,
                    "medvlm_family": info.family,
                    "medvlm_multi_image": info.multi_image,
                }
            ],
        }

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a non-streaming chat-completions request.

        Raises:
            RequestError: for a malformed request or a non-data image URL.
        """
        prompt = messages_to_prompt(body.get("messages"), self.max_image_pixels)
        settings = settings_from_body(body)
        try:
            top = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        except (TypeError, ValueError) as e:
            raise RequestError("top_logprobs must be an integer") from e
        logprobs: dict[str, Any] | None = None
        if top > 0:
            gen, content = self.backend.generate_with_logprobs(prompt, settings, min(top, 20))
            logprobs = {"content": content}
        else:
            gen = self.backend.generate([prompt], settings)[0]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": gen.text},
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                }
            ],
        }


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error_payload(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": status}}


class _BodyTooLarge(RequestError):
    """The request body is over ``MAX_BODY_BYTES`` (HTTP 413)."""


def _content_length(value: str | None) -> int:
    """The request body's length from its header.

    Raises:
        RequestError: when the header is missing, not a number, not positive or over the limit.
    """
    try:
        length = int(value or 0)
    except ValueError as e:
        raise RequestError("the Content-Length header is not a number") from e
    if length <= 0:
        raise RequestError("the request body is missing")
    if length > MAX_BODY_BYTES:
        raise _BodyTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    return length


def _chunk(ident: str, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


class _ApiHandler(BaseHTTPRequestHandler):
    """Request handler; ``api`` is set on the per-server subclass made by ``_handler_class``."""

    protocol_version = "HTTP/1.1"
    api: ModelServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, _error_payload(status, message))

    def _authorised(self) -> bool:
        if not self.api.api_key:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.api.api_key}".encode()):
            return True
        self._error(401, "missing or wrong API key")
        return False

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, "no such route")
        elif self._authorised():
            self._send(200, self.api.models())

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, "no such route")
            return
        if not self._authorised():
            return
        try:
            body = self._read_body()
            if body.get("stream"):
                self._stream(body)
            else:
                self._send(200, self.api.complete(body))
        except RequestError as e:
            self.close_connection = True  # an unread or rejected body must not be read as a request
            self._error(413 if isinstance(e, _BodyTooLarge) else 400, str(e))
        except MedVLMError as e:
            logger.warning("generation failed: %s", type(e).__name__)
            self._error(500, str(e))
        except Exception as e:  # the API boundary: report the failure, keep serving
            logger.exception("unexpected failure answering a request")
            self._error(500, f"generation failed ({type(e).__name__})")

    def _read_body(self) -> dict[str, Any]:
        """The JSON object in the request body.

        Raises:
            RequestError: for a bad Content-Length, a body that is not JSON, or not an object.
        """
        length = _content_length(self.headers.get("Content-Length"))
        try:
            body = json.loads(self.rfile.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError("the request body is not valid JSON") from e
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    def _stream(self, body: dict[str, Any]) -> None:
        prompt = messages_to_prompt(body.get("messages"), self.api.max_image_pixels)
        settings = settings_from_body(body)
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self._event(ident, {"role": "assistant"})
        for piece in self.api.backend.stream(prompt, settings):
            if piece:
                self._event(ident, {"content": piece})
        self._event(ident, {}, "stop")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _event(self, ident: str, delta: dict[str, Any], finish: str | None = None) -> None:
        self.wfile.write(_chunk(ident, self.api.model_name, delta, finish))
        self.wfile.flush()


def _handler_class(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_ApiHandler,), {"api": server})
