"""Entity linking: find graph concepts mentioned in free text.

Three steps, all dictionary-based and fast (well under a millisecond per sentence):

1. **Alias dictionary.** Every node's name, synonyms and abbreviations are folded
   (:func:`knowledge_graph.text.alias_key`: British/American spelling, light plural stem) into a
   token-tuple → node map. Text is scanned left to right, longest alias first.
2. **Derived forms.** A token in no alias whose derivational stem (:func:`knowledge_graph.text.stem`)
   is that of an alias token is read as that token: "haemorrhagic" as "haemorrhage", "nodular"
   as "nodule", "necrotic" as "necrosis" (marked ``fuzzy``, like a spelling correction).
3. **Misspellings.** A token that is in no alias and is not a common word is corrected to the
   closest alias token by Damerau-Levenshtein distance (1 for 4-8 letters, 2 for 9 or more),
   found through a symmetric-deletion index (the SymSpell idea) rather than a new dependency:
   the alias vocabulary is small (a few thousand tokens), so the index is built in milliseconds
   and a lookup is a handful of dictionary probes.
4. **Context.** ConText negation and uncertainty per sentence (:mod:`knowledge_graph.context`).

Short abbreviations are matched only where they are written in capitals ("PE", "MS"), so that
"us" or "pe" in running text is not taken for ultrasound or pulmonary embolism.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from knowledge_graph.context import ContextRules, assign_context
from knowledge_graph.schema import Node, NodeType
from knowledge_graph.text import DETERMINERS, alias_key, fold, stem, token_spans

logger = logging.getLogger(__name__)

COMMON_WORDS_PATH = Path(__file__).resolve().parent / "resources" / "common_words.txt"
_SENTENCE_RE = re.compile(r"[^.!;:\n]+(?:[.!;:\n]+|$)")
_TYPE_PRIORITY = MappingProxyType(
    {
        NodeType.FINDING: 0,
        NodeType.DISEASE: 1,
        NodeType.IMAGING_SIGN: 2,
        NodeType.TISSUE_PATTERN: 3,
    }
)


@dataclass(frozen=True)
class Entity:
    """A concept mentioned in the text.

    Attributes:
        text: the mention as written.
        node: the linked node id.
        name: the node's preferred name.
        negated: the text says it is absent ("no effusion").
        uncertain: the text is unsure or hypothetical ("possible effusion", "?TB").
        start: character offset of the mention.
        end: character offset just past the mention.
        fuzzy: True when a misspelling was corrected or a derived form ("nodular") was read as
            its alias word to link it.
    """

    text: str
    node: str
    name: str
    negated: bool
    uncertain: bool
    start: int
    end: int
    fuzzy: bool = False


def damerau_levenshtein(a: str, b: str) -> int:
    """Optimal-string-alignment distance (insertions, deletions, substitutions, transpositions).

    Args:
        a: first string.
        b: second string.

    Returns:
        The edit distance.
    """
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]


def _deletes(word: str, depth: int) -> set[str]:
    out = {word}
    frontier = {word}
    for _ in range(depth):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def _max_distance(word: str) -> int:
    return 0 if len(word) < 4 else 1 if len(word) < 9 else 2


class SpellingIndex:
    """Symmetric-deletion index over the alias vocabulary for bounded edit-distance lookup."""

    def __init__(self, vocabulary: Iterable[str], frequency: dict[str, int]) -> None:
        """Index a vocabulary.

        Args:
            vocabulary: folded alias tokens.
            frequency: how many aliases use each token (ties go to the more frequent).
        """
        self.frequency = frequency
        self.index: dict[str, set[str]] = {}
        for word in vocabulary:
            for d in _deletes(word, _max_distance(word)):
                self.index.setdefault(d, set()).add(word)

    def correct(self, word: str) -> str | None:
        """Return the closest vocabulary word within the allowed distance, or None."""
        limit = _max_distance(word)
        if limit == 0:
            return None
        candidates: set[str] = set()
        for d in _deletes(word, limit):
            candidates |= self.index.get(d, set())
        best: tuple[int, int, str] | None = None
        for c in candidates:
            dist = damerau_levenshtein(word, c)
            if dist <= min(limit, _max_distance(c)):
                key = (dist, -self.frequency.get(c, 0), c)
                if best is None or key < best:
                    best = key
        return best[2] if best else None


class EntityLinker:
    """Links text to graph nodes with an alias dictionary, spelling correction and ConText."""

    def __init__(
        self,
        nodes: Iterable[Node],
        rules: ContextRules | None = None,
        compositions: dict[tuple[str, str], tuple[str, ...]] | None = None,
    ) -> None:
        """Build the alias dictionary.

        Args:
            nodes: the graph's nodes.
            rules: ConText rules; the packaged ones when None.
            compositions: ``(anatomy id, visual attribute id) → finding ids`` located there with
                that attribute, so that "the heart is enlarged" links to cardiomegaly (see
                :func:`knowledge_graph.retriever.compositions_from_graph`).
        """
        self.rules = rules or ContextRules.load()
        self.compositions = compositions or {}
        self.names: dict[str, str] = {}
        self.aliases: dict[tuple[str, ...], str] = {}
        self.caps_only: set[tuple[str, ...]] = set()
        priority: dict[tuple[str, ...], int] = {}
        for n in nodes:
            self.names[n.id] = n.name
            rank = _TYPE_PRIORITY.get(n.type, 9)
            for form, is_abbrev in [(f, False) for f in (n.name, *n.synonyms)] + [
                (a, True) for a in n.abbreviations
            ]:
                key = alias_key(form)
                if not key:
                    continue
                if key in self.aliases and priority[key] <= rank:
                    continue
                self.aliases[key] = n.id
                priority[key] = rank
                if is_abbrev and len(form) <= 3:
                    self.caps_only.add(key)
        self.max_len = max((len(k) for k in self.aliases), default=1)
        freq: dict[str, int] = {}
        for key in self.aliases:
            for t in key:
                freq[t] = freq.get(t, 0) + 1
        self.vocabulary = set(freq)
        self.common = _load_common_words()
        self.spelling = SpellingIndex((w for w in freq if w.isalpha() and len(w) >= 4), freq)
        # stem → the most frequent alias token with that stem (ties: the shorter, then alphabetical)
        self.derived: dict[str, str] = {}
        for w in sorted(freq, key=lambda w: (-freq[w], len(w), w)):
            if w.isalpha() and len(w) >= 4:
                self.derived.setdefault(stem(w), w)

    def link(self, text: str) -> list[Entity]:
        """Find every mentioned concept with its negation and uncertainty.

        Args:
            text: question, report or draft answer.

        Returns:
            Entities in text order; the same node may appear more than once.
        """
        entities: list[Entity] = []
        for m in _SENTENCE_RE.finditer(text):
            entities.extend(self._link_sentence(text, m.start(), m.group(0)))
        return entities

    def _link_sentence(self, text: str, offset: int, sentence: str) -> list[Entity]:
        spans = [sp for sp in token_spans(sentence) if sp[0] not in DETERMINERS]
        if not spans:
            return []
        raw = [t for t, _, _ in spans]
        keys: list[str] = []
        fixed: list[bool] = []
        for t in raw:
            k = fold(t)
            if k not in self.vocabulary and t not in self.common and k.isalpha():
                c = self.derived.get(stem(k)) if len(k) >= 4 else None
                c = c or self.spelling.correct(k)
                if c is not None:
                    keys.append(c)
                    fixed.append(True)
                    continue
            keys.append(k)
            fixed.append(False)
        found: list[tuple[int, int, str]] = []
        i = 0
        while i < len(keys):
            for n in range(min(self.max_len, len(keys) - i), 0, -1):
                key = tuple(keys[i : i + n])
                node = self.aliases.get(key)
                if node is None:
                    continue
                if key in self.caps_only and not _written_in_caps(sentence, spans[i : i + n]):
                    continue
                if n == 1 and fixed[i] and keys[i] in self.common:
                    continue
                found.append((i, i + n, node))
                i += n
                break
            else:
                i += 1
        found += self._compose(found)
        flags = assign_context(self.rules, raw, [(s, e) for s, e, _ in found])
        out = []
        for (s, e, node), (neg, unc) in zip(found, flags, strict=True):
            start, end = offset + spans[s][1], offset + spans[e - 1][2]
            out.append(Entity(text[start:end], node, self.names[node], neg, unc, start, end, any(fixed[s:e])))
        return out

    def _compose(self, found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Findings described by an anatomy and a visual attribute in the same sentence."""
        if not self.compositions:
            return []
        extra: list[tuple[int, int, str]] = []
        for _s1, _e1, a in found:
            for s2, e2, v in found:
                for node in self.compositions.get((a, v), ()):
                    if all(n != node for _, _, n in found + extra):
                        # the span is the attribute's: its negation is what decides ("not enlarged")
                        extra.append((s2, e2, node))
        return extra


def _written_in_caps(sentence: str, spans: list[tuple[str, int, int]]) -> bool:
    return all(sentence[s:e].isupper() for _, s, e in spans if any(ch.isalpha() for ch in sentence[s:e]))


def _load_common_words(path: Path = COMMON_WORDS_PATH) -> frozenset[str]:
    words: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            words.update(line.split())
    return frozenset(words)
