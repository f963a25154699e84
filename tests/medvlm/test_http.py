"""The HTTP backend against ``medvlm serve-api``'s server, in-process on 127.0.0.1, random port."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medvlm
from medvlm.assistant import Assistant
from medvlm.backends import InProcessBackend
from medvlm.http_backend import HTTPBackend
from medvlm.server import ModelServer

IMAGE = (np.random.default_rng(11).random((40, 40, 3)) * 255).astype(np.uint8)
KEY = "test-key-not-a-secret"


@pytest.fixture(scope="module")
def served(llava_dir: Path) -> Iterator[tuple[InProcessBackend, ModelServer]]:
    backend = InProcessBackend(medvlm.load(llava_dir, device="cpu"))
    server = ModelServer(backend, host="127.0.0.1", port=0, api_key=KEY)
    server.start()
    yield backend, server
    server.shutdown()


def _post(url: str, body: dict[str, Any], key: str | None = KEY) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_http_backend_gives_the_in_process_greedy_answer(
    served: tuple[InProcessBackend, ModelServer],
) -> None:
    local, server = served
    remote = HTTPBackend(server.url, api_key=KEY, timeout=30)
    assert remote.info().model_version == local.info().model_version
    assert remote.info().multi_image is False  # from the medvlm fields of /v1/models
    request = medvlm.AskRequest(
        images=[IMAGE], question="Is there an effusion?", contexts=[medvlm.ImageContext("CR", "CHEST", "PA")]
    )
    settings = medvlm.GenerationSettings(max_new_tokens=8)
    here = Assistant(local).ask(request, settings)
    there = Assistant(remote).ask(request, settings)
    assert there.raw_text == here.raw_text and there.ablation_text == here.ablation_text
    assert there.grounded == here.grounded
    # Both sides see the same greedy tokens, so both find a yes/no token or neither does (a
    # confidence without one would belong to another word); the generated token is always in the
    # top-20 logprobs, so when found, the remote mass agrees.
    assert (there.confidence is None) == (here.confidence is None)
    if here.confidence is not None:
        assert there.confidence == pytest.approx(here.confidence, abs=0.02)
    streamed = "".join(Assistant(remote).stream(request, settings)).strip()
    assert streamed == here.raw_text
    contrast = medvlm.GenerationSettings(max_new_tokens=6, contrastive_alpha=1.5, ablation=False)
    assert (
        Assistant(remote).ask(request, contrast).raw_text == Assistant(local).ask(request, contrast).raw_text
    )


def test_server_logprobs_are_the_greedy_tokens(served: tuple[InProcessBackend, ModelServer]) -> None:
    _, server = served
    body = {
        "messages": [{"role": "user", "content": "Is it?"}],
        "max_tokens": 3,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
    }
    status, reply = _post(server.url, body)
    content = reply["choices"][0]["logprobs"]["content"]
    assert status == 200 and len(content) == 3
    for entry in content:
        top = entry["top_logprobs"]
        assert len(top) == 5 and top[0]["token"] == entry["token"]
        assert top[0]["logprob"] == pytest.approx(entry["logprob"]) and top[0]["logprob"] <= 0
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)


def test_yes_no_mass_from_openai_logprobs() -> None:
    from medvlm.http_backend import _yes_no_from_logprobs

    logprobs = {
        "content": [
            {
                "token": " Yes",
                "logprob": -0.2,
                "top_logprobs": [
                    {"token": " Yes", "logprob": float(np.log(0.6))},
                    {"token": "yes", "logprob": float(np.log(0.1))},
                    {"token": " No", "logprob": float(np.log(0.2))},
                    {"token": "Maybe", "logprob": float(np.log(0.1))},
                ],
            },
        ]
    }
    yes, no = _yes_no_from_logprobs(logprobs, "Yes")
    assert yes == pytest.approx(0.7) and no == pytest.approx(0.2)
    # No yes/no token among the first three: no mass at all (it used to fall back to token 1).
    entry = {"token": "The", "logprob": -0.1, "top_logprobs": [{"token": " Yes", "logprob": -2.0}]}
    assert _yes_no_from_logprobs({"content": [entry] * 4}, "The The The The") == (None, None)
    three = {"content": [entry, entry, logprobs["content"][0]]}
    assert _yes_no_from_logprobs(three, "The The Yes")[0] == pytest.approx(0.7)
    # a reasoned answer's verdict comes last: "It is small, so yes."
    reasoned = {"content": [entry] * 5 + [logprobs["content"][0], entry]}
    assert _yes_no_from_logprobs(reasoned, "It is small, so Yes.")[0] == pytest.approx(0.7)
    assert _yes_no_from_logprobs(reasoned, "It is small and Yes more")[0] is None


def test_server_refuses_remote_image_urls(served: tuple[InProcessBackend, ModelServer]) -> None:
    _, server = served
    for url in ("http://169.254.169.254/latest/meta-data", "file:///etc/passwd", "https://example.org/x.png"):
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "What is this?"},
                    ],
                }
            ],
            "max_tokens": 2,
        }
        status, reply = _post(server.url, body)
        assert status == 400 and "only inline data:image" in reply["error"]["message"]


def test_server_needs_the_api_key(served: tuple[InProcessBackend, ModelServer]) -> None:
    _, server = served
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    assert _post(server.url, body, key=None)[0] == 401
    assert _post(server.url, body, key="wrong")[0] == 401
    status, reply = _post(server.url, body)
    assert status == 200 and reply["choices"][0]["message"]["role"] == "assistant"
    with pytest.raises(medvlm.BackendError, match="HTTP 401"):
        HTTPBackend(server.url, api_key="wrong").info()


def test_server_down_is_one_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free port, nothing listening once closed
    backend = HTTPBackend(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(medvlm.BackendError, match="is not reachable"):
        backend.info()


def _raw_post(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send a hand-made request (headers the urllib client would not send) and read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    payload = rest.split(b"\r\n\r\n", 1)[1]
    return int(status_line.split()[1]), json.loads(payload)


def test_server_answers_400_to_a_bad_content_length(served: tuple[InProcessBackend, ModelServer]) -> None:
    _, server = served
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: abc\r\nConnection: close\r\n"
    )
    status, reply = _raw_post(server.port, head)
    assert status == 400 and reply["error"]["message"] == "the Content-Length header is not a number"
    status, reply = _raw_post(server.port, head.replace("abc", str(10**12)))
    assert status == 413 and "larger than" in reply["error"]["message"]
    status, _ = _post(server.url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert status == 200  # still serving


def _png_url(width: int, height: int) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_image_pixel_cap_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from medvlm.openai_format import data_url_to_image

    decoded: list[tuple[int, int]] = []
    convert = Image.Image.convert

    def spy(self: Image.Image, *args: Any, **kwargs: Any) -> Image.Image:
        decoded.append(self.size)
        return convert(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "convert", spy)
    bomb = _png_url(6000, 5000)  # 30 MP of zeros: a few kB compressed
    with pytest.raises(medvlm.RequestError, match="30000000 pixels, more than the limit of 1000000"):
        data_url_to_image(bomb, max_pixels=1_000_000)
    assert decoded == []  # refused from the header, never decoded
    assert data_url_to_image(_png_url(20, 10), max_pixels=1_000_000).size == (20, 10)


def test_server_refuses_big_images_and_garbage_without_reprs(
    served: tuple[InProcessBackend, ModelServer],
) -> None:
    _, server = served

    def ask_with(url: str) -> tuple[int, str]:
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]
        status, reply = _post(
            server.url, {"messages": [{"role": "user", "content": content}], "max_tokens": 1}
        )
        return status, reply["error"]["message"]

    status, message = ask_with(_png_url(8000, 7000))  # 56 MP > the 50 MP default
    assert status == 400 and "more than the limit of 50000000" in message
    status, message = ask_with("data:image/png;base64," + "QUJD" * 10)
    assert status == 400 and "object at 0x" not in message and "<" not in message
    assert message == "the image data URL does not hold a readable PNG, JPEG or WebP image"


def test_server_refuses_a_public_address_without_a_key(served: tuple[InProcessBackend, ModelServer]) -> None:
    local, _ = served
    with pytest.raises(medvlm.RequestError, match="not loopback"):
        ModelServer(local, host="0.0.0.0", port=0)
