"""Convert between ``ChatPrompt`` and the OpenAI chat-completions message format.

Images travel inline as base64 ``data:`` URLs, never as remote URLs (a server that fetches URLs
is an SSRF risk, and an air-gapped site has nothing to fetch from).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any

from PIL import Image, UnidentifiedImageError

from medvlm.errors import RequestError
from medvlm.processing import ChatPrompt

MAX_IMAGE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # width x height; checked from the header, before decoding
_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.*)$", re.DOTALL)


def image_to_data_url(image: Image.Image) -> str:
    """Encode an image as a lossless PNG ``data:`` URL."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_url_to_image(url: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode a base64 ``data:`` URL into an RGB image.

    Args:
        url: the ``data:image/...;base64,...`` URL.
        max_pixels: largest width x height accepted; checked from the image header before the
            pixels are decoded, so a decompression bomb is refused without being decoded.

    Raises:
        RequestError: for anything but an inline PNG / JPEG / WebP data URL (remote URLs are
            refused: the server never fetches), undecodable data, or an image over ``max_pixels``.
    """
    match = _DATA_URL.match(url)
    if match is None:
        scheme = url.split(":", 1)[0][:16] if ":" in url else "no scheme"
        raise RequestError(f"only inline data:image/...;base64 URLs are accepted, not {scheme!r} URLs")
    try:
        raw = base64.b64decode(match.group(2), validate=False)
    except (binascii.Error, ValueError) as e:
        raise RequestError("the image data URL is not valid base64") from e
    if len(raw) > MAX_IMAGE_BYTES:
        raise RequestError(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise RequestError(
                    f"the image has {width * height} pixels, more than the limit of {max_pixels}"
                )
            return image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise RequestError(f"the image has more pixels than the limit of {max_pixels}") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError("the image data URL does not hold a readable PNG, JPEG or WebP image") from e


def prompt_to_messages(prompt: ChatPrompt) -> list[dict[str, Any]]:
    """OpenAI messages for a prompt: image parts become ``image_url`` parts with data URLs."""
    images = iter(prompt.images)
    messages = []
    for message in prompt.messages:
        parts: list[dict[str, Any]] = []
        for part in message["content"]:
            if part.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": image_to_data_url(next(images))}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        messages.append({"role": message["role"], "content": parts})
    return messages


def messages_to_prompt(messages: Any, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> ChatPrompt:
    """A ``ChatPrompt`` from OpenAI messages (string or list-of-parts content).

    Args:
        messages: the request's ``messages``.
        max_image_pixels: largest width x height of each image (see ``data_url_to_image``).

    Raises:
        RequestError: for a malformed message list, an unknown part type or a non-data image URL.
    """
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    out: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise RequestError("each message needs a role of system, user or assistant")
        content = message.get("content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    parts.append({"type": "text", "text": str(part.get("text", ""))})
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url", "") if isinstance(url, dict) else str(url or "")
                    images.append(data_url_to_image(url, max_image_pixels))
                    parts.append({"type": "image"})
                else:
                    raise RequestError(f"unsupported content part type {str(kind)[:32]!r}")
        else:
            raise RequestError("message content must be a string or a list of parts")
        out.append({"role": message["role"], "content": parts})
    return ChatPrompt(messages=out, images=images, views=[])
