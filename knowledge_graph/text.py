"""Text normalisation and tokenisation shared by validation and entity linking."""

from __future__ import annotations

import re

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|\?")
_SEP_RE = re.compile(r"[-/_]")


def normalize(text: str) -> str:
    """Lower-case, split hyphens/slashes/underscores into spaces and drop other punctuation.

    Args:
        text: any text.

    Returns:
        Space-joined tokens (``"Ground-glass opacity!"`` → ``"ground glass opacity"``).
    """
    return " ".join(tokens(text))


def tokens(text: str) -> list[str]:
    """Split text into lower-case word tokens (a lone ``?`` is kept as a token).

    Args:
        text: any text.

    Returns:
        The tokens, in order.
    """
    return _TOKEN_RE.findall(_SEP_RE.sub(" ", text.lower()))


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """Tokenise and keep character offsets into ``text``.

    Args:
        text: any text.

    Returns:
        ``(token, start, end)`` triples; ``text[start:end]`` is the token's original spelling.
    """
    lowered = _SEP_RE.sub(" ", text.lower())
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN_RE.finditer(lowered)]
