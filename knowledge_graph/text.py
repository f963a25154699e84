"""Text normalisation and tokenisation shared by validation and entity linking."""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|\?")
_SEP_RE = re.compile(r"[-/_]")


def _lower(text: str) -> str:
    """Lower-case without changing the length ("İ".lower() is two characters), so offsets hold."""
    if text.isascii():
        return text.lower()  # one character each: the same as the loop below, much faster
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


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
    return _TOKEN_RE.findall(_SEP_RE.sub(" ", _lower(text)))


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """Tokenise and keep character offsets into ``text``.

    Args:
        text: any text.

    Returns:
        ``(token, start, end)`` triples; ``text[start:end]`` is the token's original spelling.
    """
    lowered = _SEP_RE.sub(" ", _lower(text))
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN_RE.finditer(lowered)]


_STEM_KEEP = ("ss", "us", "is", "os")
# Determiners and possessives carry no meaning for matching ("clot in my lung" = "clot in the lung").
DETERMINERS = frozenset(
    {"the", "a", "an", "my", "his", "her", "your", "their", "its", "our", "this", "these"}
)


@lru_cache(maxsize=1 << 18)
def fold(token: str) -> str:
    """Fold one token for matching: British to American spelling and a light plural stem.

    ``haemorrhages`` → ``hemorrhage``, ``oedema`` → ``edema``, ``tumours`` → ``tumor``,
    ``opacities`` → ``opacity``. Applied identically to aliases and to text, so it only has to
    be consistent, not linguistically exact.

    Args:
        token: one lower-case token.

    Returns:
        The folded token.
    """
    t = token.replace("ae", "e").replace("oe", "e")
    if t.endswith("our") and len(t) > 4:
        t = t[:-3] + "or"
    if t.endswith("ours") and len(t) > 5:
        t = t[:-4] + "ors"
    if len(t) <= 3:
        return t
    if t.endswith("ies") and len(t) > 4:
        return t[:-3] + "y"
    if t.endswith("sses"):
        return t[:-2]
    if t.endswith(_STEM_KEEP):
        return t
    if t.endswith("s"):
        return t[:-1]
    return t


def alias_key(text: str) -> tuple[str, ...]:
    """Return the matching key of an alias or phrase: its folded tokens.

    Args:
        text: a name, synonym, abbreviation or text span.

    Returns:
        Tuple of folded tokens (empty for text without word characters).
    """
    return tuple(fold(t) for t in tokens(text) if t != "?" and t not in DETERMINERS)


# Derivational suffixes, longest first, for :func:`stem` (adjective/verb forms of finding nouns).
# Each is (suffix, replacement): "-osis"/"-oses"/"-otic" meet at "-ot", "-asis"/"-atic" at "-at".
_STEM_SUFFIXES = (
    ("ically", ""),
    ("ication", ""),
    ("oses", "ot"),
    ("ose", "ot"),
    ("ases", "at"),
    ("osis", "ot"),
    ("otic", "ot"),
    ("asis", "at"),
    ("atic", "at"),
    ("ation", ""),
    ("ated", ""),
    ("ement", ""),
    ("ment", ""),
    ("ings", ""),
    ("ing", ""),
    ("ical", ""),
    ("ular", ""),
    ("ule", ""),
    ("tous", ""),
    ("ous", ""),
    ("ity", ""),
    ("ied", ""),
    ("ion", ""),
    ("ic", ""),
    ("al", ""),
    ("ar", ""),
    ("ed", ""),
    ("ia", ""),
    ("is", ""),
    ("es", ""),
    ("a", ""),
    ("e", ""),
    ("y", ""),
    ("s", ""),
)
# Words too general to count as evidence in lexical scoring (prepositions, auxiliaries, ...).
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "that",
        "the",
        "there",
        "this",
        "to",
        "was",
        "what",
        "which",
        "with",
        "were",
        "will",
        "would",
        "you",
        "your",
        "its",
        "than",
        "not",
        "no",
        "but",
        "also",
        "often",
        "usually",
        "may",
        "more",
        "most",
        "other",
        "such",
        "typically",
        "very",
        "?",
        "look",
        "looks",
        "like",
        "see",
        "seen",
        "show",
        "shows",
        "doing",
        "something",
        "anything",
        "thing",
    }
)


@lru_cache(maxsize=1 << 18)
def stem(token: str) -> str:
    """Crude derivational stem, shared by both sides of lexical comparison.

    ``hemorrhagic`` and ``hemorrhage`` → ``hemorrhag``; ``nodular`` and ``nodule`` → ``nodul``;
    ``bleeding`` and ``bleed`` → ``bleed``. Up to two suffixes are removed, each the first listed that
    leaves at least four letters (three for the "-osis"/"-otic" pairs), so ``emphysematous`` and
    ``emphysema`` meet. Like :func:`fold`, it need only be consistent, not exact.

    Args:
        token: a folded lower-case token.

    Returns:
        The stem.
    """
    for _ in range(2):
        for suffix, replacement in _STEM_SUFFIXES:
            if token.endswith(suffix) and len(token) - len(suffix) >= (3 if replacement else 4):
                token = token[: -len(suffix)] + replacement
                break
        else:
            break
    return token


def stems(text: str) -> list[str]:
    """Return the stems of the content words of ``text`` (stop words dropped), in order."""
    return [stem(fold(t)) for t in tokens(text) if t not in STOPWORDS and t not in DETERMINERS]
