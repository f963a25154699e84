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
5. **Dense span linking** (optional, when the caller passes a ``span_linker``): a noun-phrase-like
   span that no finding, disease, sign or pattern alias resolves, inside the scope of a negation
   or uncertainty trigger ("no subarachnoid blood", "? retained fluid", "X is not seen"), is
   embedded and linked to the nearest finding/disease/sign node when the cosine clears
   :data:`SPAN_THRESHOLD`. A predicate adjective is composed with its subject first ("the
   mediastinum is not widened" → "widened mediastinum"). Such entities carry the trigger's status
   and ``source="dense"``; without a span linker (no encoder) this step does not run.

Plural and possessive forms of abbreviations ("PEs", "ETTs", "NGT's") match like the singular.

Short abbreviations are matched only where they are written in capitals ("PE", "MS"), so that
"us" or "pe" in running text is not taken for ultrasound or pulmonary embolism.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from knowledge_graph.context import QUESTION_WORDS, ContextRules, assign_context
from knowledge_graph.schema import RETRIEVABLE_TYPES, Node, NodeType
from knowledge_graph.text import DETERMINERS, STOPWORDS, alias_key, fold, stem, token_spans, tokens

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
# "PEs", "ETTs", "NGT's": an abbreviation in capitals with a plural or possessive ending.
_ABBREV_PLURAL_RE = re.compile(r"([A-Z][A-Z0-9]*[A-Z])(?:'[sS]|s)")
SPAN_THRESHOLD = 0.6
"""Cosine a span must reach to be dense-linked (chosen on the burned query sets and probe sentences;
wrong links clustered at 0.51-0.56, right ones at 0.61-0.74)."""
_SPAN_MAX_TOKENS = 6
_MAX_SPECIALISATIONS = 2
_SPAN_SEPARATORS = frozenset({"and", "or", "nor", "?"})
_COPULAS = frozenset(
    {"is", "are", "was", "were", "appears", "appear", "seems", "seem", "looks", "look", "be"}
)
_Header = tuple[frozenset[str], frozenset[str]]
"""What an anatomy header ("Kidneys:") carries to the next sentence: anatomy ids, word stems."""
SpanLinker = Callable[[list[str]], list[tuple[str, float] | None]]
"""Maps phrases to their best ``(node id, cosine)`` among findings, diseases and signs (or None)."""


@dataclass(frozen=True)
class Specialisation:
    """A node specific to an anatomy, reachable from a generic word in a clause about it.

    Attributes:
        rest: derivational stems of one of the node's aliases without its anatomy words
            ("adrenal nodule" → ``("nodul",)``): the generic word(s) to look for.
        node: the specific node (adrenal_nodule).
        words: stems of the whole alias; among several candidates for one word, the one sharing
            most of them with the clause wins ("abdominal aorta ... aneurysm" → abdominal aortic
            aneurysm rather than aortic aneurysm).
    """

    rest: tuple[str, ...]
    node: str
    words: frozenset[str]


@dataclass(frozen=True)
class _Candidate:
    """An unresolved span in a trigger's scope, waiting for dense linking."""

    phrase: str
    start: int
    end: int
    negated: bool
    uncertain: bool
    linked: frozenset[str]


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
            its alias word to link it, or when the entity was dense-linked.
        source: ``alias`` (the alias dictionary, with its compositions) or ``dense`` (a span
            linked by embedding similarity: less certain, see :data:`SPAN_THRESHOLD`).
        similarity: the cosine of a dense-linked span to its node; None for alias links.
    """

    text: str
    node: str
    name: str
    negated: bool
    uncertain: bool
    start: int
    end: int
    fuzzy: bool = False
    source: str = "alias"
    similarity: float | None = None


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
        specialisations: dict[str, tuple[Specialisation, ...]] | None = None,
        hypernyms: dict[str, frozenset[str]] | None = None,
        locations: dict[str, frozenset[str]] | None = None,
    ) -> None:
        """Build the alias dictionary.

        Args:
            nodes: the graph's nodes.
            rules: ConText rules; the packaged ones when None.
            compositions: ``(anatomy id, visual attribute id) → finding ids`` located there with
                that attribute, so that "the heart is enlarged" links to cardiomegaly (see
                :func:`knowledge_graph.retriever.compositions_from_graph`).
            specialisations: ``anatomy id → specialisations`` located there (or in an anatomy
                it is part of), so that a generic word in a clause about that anatomy links to the
                specific node ("adrenal glands ... without nodules" → adrenal nodule; see
                :func:`knowledge_graph.retriever.specialisations_from_graph`).
            hypernyms: ``node id → its is_a ancestors``; a head-noun link (see
                :meth:`_heads`) is not added when the graph already relates the two nodes by is_a.
            locations: ``node id → anatomy ids`` it is located in (with their kinds); a finding
                linked beside an anatomy it is located in is never replaced by a specialisation.
        """
        self.rules = rules or ContextRules.load()
        self.compositions = compositions or {}
        self.specialisations = specialisations or {}
        self.hypernyms = hypernyms or {}
        self.locations = locations or {}
        self.names: dict[str, str] = {}
        self.types: dict[str, NodeType] = {}
        self.span_threshold = SPAN_THRESHOLD
        self.aliases: dict[tuple[str, ...], str] = {}
        self.caps_only: set[tuple[str, ...]] = set()
        priority: dict[tuple[str, ...], int] = {}
        for n in nodes:
            self.names[n.id] = n.name
            self.types[n.id] = n.type
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
        # "gas" and "air" are one thing in imaging reports: an alias with one also matches with
        # the other ("free subdiaphragmatic gas"), unless that spelling is another node's alias
        for key, node in list(self.aliases.items()):
            for a, b in (("air", "gas"), ("gas", "air")):
                if a in key:
                    variant = tuple(b if t == a else t for t in key)
                    if variant not in self.aliases:
                        self.aliases[variant] = node
                        priority[variant] = priority[key]
        # generic word → the findings/diseases whose alias is that word plus an anatomy
        # ("herniation" → brain herniation); used when the word alone names only a group node
        self.by_rest: dict[tuple[str, ...], frozenset[str]] = {}
        for specs in self.specialisations.values():
            for sp in specs:
                self.by_rest[sp.rest] = self.by_rest.get(sp.rest, frozenset()) | {sp.node}
        self.max_len = max((len(k) for k in self.aliases), default=1)
        # words of anatomy names ("abdominal", "thoracic"): a header may be made of them
        self.anatomy_tokens = frozenset(
            t for key, node in self.aliases.items() if self.types[node] is NodeType.ANATOMY for t in key
        )
        self.anatomy_stems = frozenset(stem(t) for t in self.anatomy_tokens)
        # stems of finding/disease/sign/pattern aliases, to move a status from a visual attribute
        # to the finding of the same word ("no cavitation": texture_cavitary → cavity)
        self.finding_stems: dict[tuple[str, ...], str] = {}
        # preferred names of those nodes (two words or more), for head-noun links
        self.preferred: dict[tuple[str, ...], str] = {}
        for key, node in sorted(self.aliases.items(), key=lambda kv: (priority[kv[0]], len(kv[0]), kv[0])):
            if self.types[node] in RETRIEVABLE_TYPES and key not in self.caps_only:
                self.finding_stems.setdefault(tuple(stem(t) for t in key), node)
        for n_id, n_name in self.names.items():
            key = alias_key(n_name)
            if self.types[n_id] in RETRIEVABLE_TYPES and len(key) >= 2 and self.aliases.get(key) == n_id:
                self.preferred[key] = n_id
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

    def link(self, text: str, span_linker: SpanLinker | None = None) -> list[Entity]:
        """Find every mentioned concept with its negation and uncertainty.

        Args:
            text: question, report or draft answer.
            span_linker: embeds unresolved spans in a negation/uncertainty scope and returns their
                nearest finding/disease/sign; None (no encoder) skips dense span linking.

        Returns:
            Entities in text order; the same node may appear more than once.
        """
        entities: list[Entity] = []
        candidates: list[_Candidate] = []
        header: _Header = (frozenset(), frozenset())
        for start, sentence, field in self._sentences(text):
            ents, cands, header = self._link_sentence(
                text, start, sentence, span_linker is not None, header, field
            )
            entities.extend(ents)
            candidates.extend(cands)
        if candidates and span_linker is not None:
            entities.extend(self._dense_entities(text, candidates, span_linker))
            entities.sort(key=lambda e: (e.start, e.end))
        return entities

    def _sentences(self, text: str) -> list[tuple[int, str, int]]:
        """Split text into sentences at ``. ! ; :`` and new lines, keeping a synoptic field whole.

        A report field whose value is only a status ("Perineural invasion: absent.",
        "Margins: not identified", "Pneumothorax: none", "Malignancy: suspected") is one sentence,
        so the value's trigger acts backward on the field's label; a value with content of its
        own ("Kidneys: no stones.") stays a separate sentence after an anatomy header.
        """
        parts = [(m.start(), m.group(0)) for m in _SENTENCE_RE.finditer(text)]
        out: list[tuple[int, str, int]] = []
        i = 0
        while i < len(parts):
            start, sentence = parts[i]
            if sentence.rstrip().endswith(":") and i + 1 < len(parts) and self._status_only(parts[i + 1][1]):
                out.append((start, sentence + parts[i + 1][1], len(sentence)))
                i += 2
                continue
            out.append((start, sentence, 0))
            i += 1
        return out

    def _status_only(self, value: str) -> bool:
        """Whether a field value is only negation/uncertainty triggers (and filler words)."""
        raw = [t for t in tokens(value) if t not in DETERMINERS]
        if not raw:
            return False
        status = {
            i
            for ts, te, trig in self.rules.find(raw)
            if trig.category in ("negated", "uncertain")
            for i in range(ts, te)
        }
        return bool(status) and all(i in status or t in STOPWORDS for i, t in enumerate(raw))

    def _value_status(self, value: list[str]) -> tuple[bool, bool]:
        """``(negated, uncertain)`` of a status-only field value, whatever its triggers' direction."""
        cats = {trig.category for _, _, trig in self.rules.find(value)}
        return "negated" in cats and "uncertain" not in cats, "uncertain" in cats

    def _dense_entities(
        self, text: str, candidates: list[_Candidate], span_linker: SpanLinker
    ) -> list[Entity]:
        out: list[Entity] = []
        for c, hit in zip(candidates, span_linker([c.phrase for c in candidates]), strict=True):
            if hit is None or hit[1] < self.span_threshold or hit[0] in c.linked or hit[0] not in self.names:
                continue
            if any(e.node == hit[0] and e.start == c.start for e in out):
                continue
            node, sim = hit
            out.append(
                Entity(
                    text[c.start : c.end],
                    node,
                    self.names[node],
                    c.negated,
                    c.uncertain,
                    c.start,
                    c.end,
                    fuzzy=True,
                    source="dense",
                    similarity=round(sim, 4),
                )
            )
        return out

    def _keys(
        self, sentence: str, spans: list[tuple[str, int, int]]
    ) -> tuple[list[str], list[bool], list[bool]]:
        """Folded keys, spelling-corrected flags and written-in-capitals flags of the tokens."""
        keys: list[str] = []
        fixed: list[bool] = []
        caps: list[bool] = []
        for t, a, b in spans:
            written = sentence[a:b]
            k = fold(t)
            plural = _ABBREV_PLURAL_RE.fullmatch(written)
            if plural and fold(plural.group(1).lower()) in self.vocabulary:
                keys.append(fold(plural.group(1).lower()))  # "PEs", "NGT's" → "pe", "ngt"
                fixed.append(False)
                caps.append(True)
                continue
            caps.append(written.isupper() or not any(ch.isalpha() for ch in written))
            if t.endswith("'s") and k not in self.vocabulary and fold(t[:-2]) in self.vocabulary:
                k = fold(t[:-2])  # possessive: "heart's" → "heart"
            if k not in self.vocabulary and t not in self.common and k.isalpha():
                c = self.derived.get(stem(k)) if len(k) >= 4 else None
                c = c or self.spelling.correct(k)
                if c is not None:
                    keys.append(c)
                    fixed.append(True)
                    continue
            keys.append(k)
            fixed.append(False)
        return keys, fixed, caps

    def _link_sentence(
        self,
        text: str,
        offset: int,
        sentence: str,
        want_spans: bool = False,
        carried: _Header = (frozenset(), frozenset()),
        field: int = 0,
    ) -> tuple[list[Entity], list[_Candidate], _Header]:
        """Link one sentence; ``carried`` holds the anatomy ids and word stems of a header
        ("Kidneys:", "Thoracic aorta:") just before it; ``field`` (when not 0) is where the value
        of a synoptic field starts in the sentence ("Perineural invasion: |absent.").

        Returns the entities, the dense-span candidates and what this sentence carries to the
        next one (when it is itself such a header).
        """
        spans = [sp for sp in token_spans(sentence) if sp[0] not in DETERMINERS]
        if not spans:
            return [], [], (frozenset(), frozenset())
        raw = [t for t, _, _ in spans]
        keys, fixed, caps = self._keys(sentence, spans)
        found: list[tuple[int, int, str]] = []
        i = 0
        while i < len(keys):
            for n in range(min(self.max_len, len(keys) - i), 0, -1):
                key = tuple(keys[i : i + n])
                node = self.aliases.get(key)
                if node is None:
                    continue
                if key in self.caps_only and not all(caps[i : i + n]):
                    continue
                if n == 1 and fixed[i] and keys[i] in self.common:
                    continue
                found.append((i, i + n, node))
                i += n
                break
            else:
                i += 1
        anatomy = {n for _, _, n in found if self.types.get(n) is NodeType.ANATOMY}
        header: _Header = (frozenset(), frozenset())
        if self._is_header(sentence, raw, found):
            header = (frozenset(anatomy), frozenset(stem(k) for k in keys))
        found = self._specialise(keys, found, anatomy | carried[0], carried[1])
        found += self._group_children(keys, found)
        found += self._heads(keys, found)
        found += self._compose(found, carried[0])
        # an alias that starts with a negation trigger ("no mass effect") keeps the trigger working
        # for the rest of the sentence ("... or midline shift"); the alias itself is not negated
        ctx = [(s + self._leading_trigger(raw, s, e), e) for s, e, _ in found]
        commas = frozenset(i for i in range(1, len(spans)) if "," in sentence[spans[i - 1][2] : spans[i][1]])
        flags = assign_context(self.rules, raw, ctx, commas)
        if any(c[0] != f[0] for c, f in zip(ctx, found, strict=True)):
            own = assign_context(self.rules, raw, [(s, e) for s, e, _ in found], commas)
            flags = [o if c[0] != f[0] else fl for o, c, f, fl in zip(own, ctx, found, flags, strict=True)]
        if field:  # "Perineural invasion: absent.": the value's status is the label's
            value = [t for t, a, _ in spans if a >= field]
            label_end = len(raw) - len(value)
            status = self._value_status(value)
            flags = [
                (fl[0] or status[0], fl[1] or status[1]) if e <= label_end else fl
                for (_, e, _), fl in zip(found, flags, strict=True)
            ]
        moved = self._attribute_findings(keys, found, flags)
        found += [m for m, _ in moved]
        flags += [f for _, f in moved]
        out = []
        for (s, e, node), (neg, unc) in zip(found, flags, strict=True):
            start, end = offset + spans[s][1], offset + spans[e - 1][2]
            out.append(Entity(text[start:end], node, self.names[node], neg, unc, start, end, any(fixed[s:e])))
        if not want_spans:
            return out, [], header
        linked = frozenset(n for *_, n in found)
        cands = [
            _Candidate(phrase, offset + spans[s][1], offset + spans[e - 1][2], neg, unc, linked)
            for phrase, s, e, neg, unc in self._scope_spans(sentence, spans, found, ctx)
        ]
        return out, cands, header

    def _group_children(
        self, keys: list[str], found: list[tuple[int, int, str]]
    ) -> list[tuple[int, int, str]]:
        """A word that links only a group (an abnormality class: "herniation" → hernia) also links
        the one finding or disease whose alias is that word plus an anatomy (brain herniation);
        with two or more such nodes ("hernia": hiatus, diaphragmatic, ...) it links nothing more,
        and a finding already linked in the sentence is not linked twice."""
        linked = {n for *_, n in found}
        extra: list[tuple[int, int, str]] = []
        for s, e, node in found:
            if self.types.get(node) is not NodeType.GROUP:
                continue
            children = self.by_rest.get(tuple(stem(k) for k in keys[s:e]), frozenset())
            if len(children) == 1 and not children & linked:
                extra.append((s, e, next(iter(children))))
        return extra

    def _is_header(self, sentence: str, raw: list[str], found: list[tuple[int, int, str]]) -> bool:
        """Whether the sentence is an anatomy header such as "Kidneys:" or "Liver and spleen:"."""
        if not sentence.rstrip().endswith(":"):
            return False
        covered = {i for s, e, n in found if self.types.get(n) is NodeType.ANATOMY for i in range(s, e)}
        content = [i for i, t in enumerate(raw) if t not in STOPWORDS]
        return bool(covered) and all(
            i in covered or stem(fold(raw[i])) in self.anatomy_stems for i in content
        )

    def _leading_trigger(self, raw: list[str], s: int, e: int) -> int:
        """Length of a forward negation trigger that starts the mention ``raw[s:e]`` (else 0)."""
        for ts, te, trig in self.rules.find(raw[s:e]):
            if ts == 0 and te < e - s and trig.category == "negated" and trig.direction == "forward":
                return te
            break
        return 0

    def _specialise(
        self,
        keys: list[str],
        found: list[tuple[int, int, str]],
        anatomy: set[str] | frozenset[str],
        context: frozenset[str] = frozenset(),
    ) -> list[tuple[int, int, str]]:
        """Resolve generic words in a clause about an anatomy to that anatomy's specific node.

        A window of tokens whose stems are a specialisation's ``rest`` ("nodules" in "adrenal
        glands ... without nodules") links to the specialisation. A finding already linked there
        that the graph does not place in that anatomy (lung nodule) is replaced; one that it does
        place there ("ground glass opacities in both lungs") is kept. Among several
        specialisations of one window, those sharing most alias words with the clause win.
        """
        cands = [sp for a in sorted(anatomy) for sp in self.specialisations.get(a, ())]
        if not cands:
            return found
        stems_ = [stem(k) for k in keys]
        present = set(stems_) | context
        in_anatomy = {i for s, e, n in found if self.types.get(n) is NodeType.ANATOMY for i in range(s, e)}
        here = {sp.node for sp in cands}
        here |= {n for *_, n in found if anatomy.intersection(self.locations.get(n, ()))}
        best: dict[tuple[int, int], tuple[int, set[str]]] = {}
        for sp in cands:
            n = len(sp.rest)
            for i in range(len(keys) - n + 1):
                if tuple(stems_[i : i + n]) != sp.rest or in_anatomy.intersection(range(i, i + n)):
                    continue
                score = len(sp.words & present)
                cur = best.get((i, i + n))
                if cur is None or score > cur[0]:
                    best[(i, i + n)] = (score, {sp.node})
                elif score == cur[0]:
                    cur[1].add(sp.node)
        out = list(found)
        for (i, j), (_, nodes) in sorted(best.items()):
            if len(nodes) > _MAX_SPECIALISATIONS:
                continue  # the anatomy does not decide between them ("lung ... collapse")
            over = [f for f in out if f[0] < j and i < f[1] and self.types.get(f[2]) in RETRIEVABLE_TYPES]
            if any(f[2] in here for f in over):
                continue  # already a node of this anatomy (or a specialisation added just before)
            s, e = min([i] + [f[0] for f in over]), max([j] + [f[1] for f in over])
            out = [f for f in out if f not in over] + [(s, e, node) for node in sorted(nodes)]
        return sorted(out)

    def _heads(self, keys: list[str], found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Head-noun links: a mention that is another finding's preferred name qualified only by
        where it is.

        "interstitial pulmonary edema" is an alias of pulmonary venous congestion (an imported
        grouping), but it is "pulmonary edema" qualified by an anatomy word ("interstitial", a
        word of the lung interstitium's names): that node is linked on the same span with the same
        status. A qualifier that is not a place ("infected pleural effusion", "septic pulmonary
        embolism", "non-acute rib fracture") names a different thing, whose absence says nothing
        about the head, so it links nothing more. Not either when the graph relates the two by
        is_a or the mention's own node is named with that head.
        """
        if not self.preferred:
            return []
        linked = {n for *_, n in found}
        extra: list[tuple[int, int, str]] = []
        for s, e, x in found:
            if e - s < 3 or self.types.get(x) not in RETRIEVABLE_TYPES:
                continue
            own = alias_key(self.names[x])
            for i in range(s + 1, e - 1):
                tail = tuple(keys[i:e])
                y = self.preferred.get(tail)
                if y is None or y == x:
                    continue
                related = y in self.hypernyms.get(x, ()) or x in self.hypernyms.get(y, ())
                where = all(self._place_word(k) for k in keys[s:i])
                fits = where and not related and own[-len(tail) :] != tail
                if fits and y not in linked:
                    extra.append((s, e, y))
                    linked.add(y)
                break
        return extra

    def _place_word(self, token: str) -> bool:
        """Whether a folded token is a word of an anatomy name, or shares its first six letters
        with one ("interstitial" and "interstitium", "alveolar" and "alveoli")."""
        if token in self.anatomy_tokens:
            return True
        return len(token) >= 6 and any(t[:6] == token[:6] for t in self.anatomy_tokens)

    def _attribute_findings(
        self, keys: list[str], found: list[tuple[int, int, str]], flags: list[tuple[bool, bool]]
    ) -> list[tuple[tuple[int, int, str], tuple[bool, bool]]]:
        """A negated or uncertain visual attribute whose word is also a finding's.

        The status of "no cavitation" must land on the finding (cavity), not only on the
        attribute (cavitary texture), so the finding of the same stem is linked on the same span
        with the same status. Asserted attributes are left alone: "nodular liver surface" is not
        a lung nodule.
        """
        linked = {n for *_, n in found}
        extra: list[tuple[tuple[int, int, str], tuple[bool, bool]]] = []
        for (s, e, v), status in zip(found, flags, strict=True):
            if self.types.get(v) is not NodeType.VISUAL_ATTRIBUTE or not any(status):
                continue
            y = self.finding_stems.get(tuple(stem(k) for k in keys[s:e]))
            if y is not None and y not in linked:
                extra.append(((s, e, y), status))
                linked.add(y)
        return extra

    def _scope_spans(
        self,
        sentence: str,
        spans: list[tuple[str, int, int]],
        found: list[tuple[int, int, str]],
        ctx: list[tuple[int, int]] | None = None,
    ) -> list[tuple[str, int, int, bool, bool]]:
        """Unresolved spans inside negation/uncertainty scopes: ``(phrase, start, end, negated, uncertain)``.

        A span is a run of tokens in a trigger's scope, cut at commas, "and"/"or"/"nor", other
        triggers and terminators, and kept only when it holds a content word and no linked
        finding, disease, sign or pattern. After ``<subject> is not <adjective>`` the phrase is the
        adjective composed with the subject ("widened mediastinum").
        """
        raw = [t for t, _, _ in spans]
        resolved = {i for s, e, n in found if self.types.get(n) in RETRIEVABLE_TYPES for i in range(s, e)}
        covered = frozenset(i for s, e in (ctx or [(s, e) for s, e, _ in found]) for i in range(s, e))
        triggers = self.rules.find(raw, covered)
        stops = {i for ts, te, _ in triggers for i in range(ts, te)}
        comma_before = {i for i in range(1, len(spans)) if "," in sentence[spans[i - 1][2] : spans[i][1]]}

        def run(i: int, step: int) -> tuple[int, int]:
            """The token run from ``i`` in direction ``step`` up to a boundary: ``[start, end)``."""
            j = i
            while 0 <= j < len(raw) and j not in stops and raw[j] not in _SPAN_SEPARATORS:
                if step > 0 and j > i and j in comma_before:
                    break
                if step < 0 and j < i and (j + 1) in comma_before:
                    break
                j += step
            return (i, j) if step > 0 else (j + 1, i + 1)

        def usable(s: int, e: int) -> bool:
            content = [t for t in raw[s:e] if t not in STOPWORDS and t not in self.common]
            return e > s and bool(content) and not resolved.intersection(range(s, e))

        out: list[tuple[str, int, int, bool, bool]] = []
        question = raw[0] in QUESTION_WORDS
        for ts, te, trig in triggers:
            if trig.category not in ("negated", "uncertain"):
                continue
            neg, unc = trig.category == "negated", trig.category == "uncertain"
            if trig.direction == "forward":
                s, e = run(te, 1)
                subject = self._subject(raw, ts, stops, comma_before)
                if subject is None:
                    # the scope is a list: "no A or B", "no A, B or C"; a comma without a later
                    # "or"/"nor" ends it ("no effusion, small pneumothorax" asserts the latter)
                    while s < len(raw) and s not in stops:
                        if usable(s, min(e, s + _SPAN_MAX_TOKENS)):
                            e2 = min(e, s + _SPAN_MAX_TOKENS)
                            out.append((" ".join(raw[s:e2]), s, e2, neg, unc))
                        if e >= len(raw) or e in stops or not _list_goes_on(raw, e, stops):
                            break
                        s, e = run(e + (raw[e] in _SPAN_SEPARATORS), 1)
                    continue
                e = min(e, s + _SPAN_MAX_TOKENS)
                ss, se = subject
                adjective = e > s and not resolved.intersection(range(s, e))
                # "the effusion is not large": the subject is resolved already, nothing to link
                if adjective and not resolved.intersection(range(ss, se)):
                    out.append((" ".join(raw[s:e] + raw[ss:se]), ss, e, neg, unc))  # "big heart"
            elif ts > 0:
                twin = any(
                    t.tokens == trig.tokens and t.direction == "forward" and x == ts for x, _, t in triggers
                )
                if twin and usable(*run(te, 1)):
                    continue  # "negative for X": the forward reading was taken
                s, e = run(ts - 1, -1)
                s = max(s, e - _SPAN_MAX_TOKENS)
                if usable(s, e):
                    out.append((" ".join(raw[s:e]), s, e, neg, unc))
        if not question:  # "?subarachnoid blood": the adjacent run is uncertain
            for q in (i for i, t in enumerate(raw) if t == "?"):
                s, e = run(q + 1, 1) if q + 1 < len(raw) else (q, q)
                e = min(e, s + _SPAN_MAX_TOKENS)
                if usable(s, e) and not any(s <= x[1] < e for x in out):
                    out.append((" ".join(raw[s:e]), s, e, False, True))
        return out

    def _subject(
        self, raw: list[str], ts: int, stops: set[int], comma_before: set[int]
    ) -> tuple[int, int] | None:
        """The subject of ``<subject> <copula> <trigger>`` ("mediastinum is not"), or None."""
        if ts < 2 or raw[ts - 1] not in _COPULAS or (ts - 1) in stops:
            return None
        e = ts - 1
        s = e
        while s > 0 and (s - 1) not in stops and raw[s - 1] not in _SPAN_SEPARATORS and s not in comma_before:
            s -= 1
        s = max(s, e - _SPAN_MAX_TOKENS)
        if not [t for t in raw[s:e] if t not in STOPWORDS]:
            return None
        return s, e

    def _compose(
        self, found: list[tuple[int, int, str]], carried: frozenset[str] = frozenset()
    ) -> list[tuple[int, int, str]]:
        """Findings described by an anatomy (of the sentence or of its header) and a visual
        attribute in the same sentence ("Heart: not enlarged." → cardiomegaly, negated)."""
        if not self.compositions:
            return []
        extra: list[tuple[int, int, str]] = []
        for a in [n for *_, n in found] + sorted(carried):
            for s2, e2, v in found:
                for node in self.compositions.get((a, v), ()):
                    if all(n != node for _, _, n in found + extra):
                        # the span is the attribute's: its negation is what decides ("not enlarged")
                        extra.append((s2, e2, node))
        return extra


def _list_goes_on(raw: list[str], e: int, stops: set[int]) -> bool:
    """Whether a "no A ..." scope continues past position ``e`` (an "or"/"nor"/"and" there, or a
    comma followed later by "or"/"nor" before the next trigger or terminator)."""
    if raw[e] in ("or", "nor", "and"):
        return True
    for j in range(e, len(raw)):
        if j in stops:
            return False
        if raw[j] in ("or", "nor"):
            return True
    return False


def _load_common_words(path: Path = COMMON_WORDS_PATH) -> frozenset[str]:
    words: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            words.update(line.split())
    return frozenset(words)
