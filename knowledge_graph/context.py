"""ConText-style negation and uncertainty of linked mentions.

Implements the scope rules of ConText (Chapman et al., J Biomed Inform 2009) over token
sequences: a forward trigger modifies the mentions after it until the end of the sentence or a
terminator ("but", "however", ...); a backward trigger modifies the mentions before it back to the
sentence start or a terminator; pseudo-triggers ("no change") block shorter triggers they contain.
The trigger lists live in ``resources/context_rules.yaml`` (written for this project).

A question mark is handled specially: a sentence that starts with a question word ("is there
an effusion?") asks rather than doubts, so it marks nothing; elsewhere ("?sarcoid", "TB?") it
marks only the adjacent mention as uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from knowledge_graph.schema import KgError
from knowledge_graph.text import tokens

RULES_PATH = Path(__file__).resolve().parent / "resources" / "context_rules.yaml"
QUESTION_WORDS = frozenset(
    {"is", "are", "does", "do", "did", "can", "could", "where", "what", "how", "which", "should"}
    | {"was", "were", "will", "would", "has", "have", "why"}
)


@dataclass(frozen=True)
class Trigger:
    """One trigger phrase: its tokens, category (negated/uncertain/pseudo/terminator), direction."""

    tokens: tuple[str, ...]
    category: str
    direction: str
    final: bool = False
    """A backward trigger that counts only where it ends its clause ("pneumonia likely." but not
    "consolidation likely represents pneumonia")."""


@dataclass(frozen=True)
class ContextRules:
    """Trigger phrases indexed by their first token, longest first."""

    by_first: dict[str, tuple[Trigger, ...]]

    @classmethod
    def load(cls, path: Path = RULES_PATH) -> ContextRules:
        """Read the YAML rules file.

        Args:
            path: a file with ``negated``/``uncertain`` (``forward``/``backward`` lists),
                ``pseudo`` and ``terminators``.

        Returns:
            The indexed rules.

        Raises:
            KgError: if the file cannot be read or has the wrong shape.
        """
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            triggers: list[Trigger] = []
            for category in ("negated", "uncertain"):
                for direction in ("forward", "backward", "final"):
                    for phrase in doc[category].get(direction, ()):
                        toks = tuple(tokens(_phrase(phrase)))
                        if direction == "final":
                            triggers.append(Trigger(toks, category, "backward", final=True))
                        else:
                            triggers.append(Trigger(toks, category, direction))
            triggers += [Trigger(tuple(tokens(_phrase(p))), "pseudo", "none") for p in doc["pseudo"]]
            triggers += [Trigger(tuple(tokens(_phrase(p))), "terminator", "none") for p in doc["terminators"]]
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
            raise KgError(f"reading ConText rules {path.name}: {e}") from e
        index: dict[str, list[Trigger]] = {}
        for t in triggers:
            if t.tokens:
                index.setdefault(t.tokens[0], []).append(t)
        return cls({k: tuple(sorted(v, key=lambda t: -len(t.tokens))) for k, v in index.items()})

    def find(self, toks: list[str], covered: frozenset[int] = frozenset()) -> list[tuple[int, int, Trigger]]:
        """Find non-overlapping triggers in a token list, longest match first at each position.

        Args:
            toks: the tokens of one sentence.
            covered: token positions inside mentions; a trigger may not overlap them
                ("no focal consolidation": "no" is the trigger, "focal consolidation" the mention).

        Returns:
            ``(start, end, trigger)`` with token offsets, in order.
        """
        found: list[tuple[int, int, Trigger]] = []
        i = 0
        while i < len(toks):
            matched = 0
            for trig in self.by_first.get(toks[i], ()):
                n = len(trig.tokens)
                if matched and n < matched:
                    break
                if tuple(toks[i : i + n]) == trig.tokens and not covered.intersection(range(i, i + n)):
                    found.append((i, i + n, trig))  # same phrase may be forward and backward
                    matched = n
            i += matched or 1
        return found


def assign_context(
    rules: ContextRules,
    toks: list[str],
    spans: list[tuple[int, int]],
    commas: frozenset[int] = frozenset(),
) -> list[tuple[bool, bool]]:
    """Decide negation and uncertainty for mentions in one sentence.

    Args:
        rules: the trigger rules.
        toks: the sentence's tokens.
        spans: token ``[start, end)`` of each mention.
        commas: positions ``i`` with a comma between token ``i - 1`` and token ``i``. A backward
            trigger's scope stops at a comma ("small effusion, pneumothorax absent" negates only
            the pneumothorax) unless the clause it ends is the tail of a list ("A, B and C are not
            seen": an "and"/"or"/"nor" between the last comma and the trigger).

    Returns:
        ``(negated, uncertain)`` for each mention, in the order of ``spans``.
    """
    covered = frozenset(i for s, e in spans for i in range(s, e))
    triggers = rules.find(toks, covered)
    terminators = sorted(s for s, _, t in triggers if t.category == "terminator")
    question = bool(toks) and toks[0] in QUESTION_WORDS
    out: list[tuple[bool, bool]] = []
    for s, e in spans:
        flags = {"negated": False, "uncertain": False}
        for ts, te, trig in triggers:
            if trig.category not in flags:
                continue
            if trig.direction == "forward" and te <= s:
                if not any(ts < x <= s for x in terminators):
                    flags[trig.category] = True
            elif (
                trig.direction == "backward"
                and ts >= e
                and (not trig.final or te == len(toks) or te in commas or te in terminators)
                and not any(e <= x < ts for x in terminators)
                and not _comma_between(toks, commas, e, ts)
            ):
                flags[trig.category] = True
        if not question and _adjacent_query_mark(toks, s, e):
            flags["uncertain"] = True
        out.append((flags["negated"], flags["uncertain"]))
    return out


_LIST_WORDS = frozenset({"and", "or", "nor"})


def _comma_between(toks: list[str], commas: frozenset[int], end: int, trigger: int) -> bool:
    """Whether a comma cuts a mention ending at ``end`` from a backward trigger at ``trigger``
    (not when the trigger's clause continues a list: "A, B and C are not seen")."""
    cuts = [c for c in commas if end <= c <= trigger]
    if not cuts:
        return False
    return not _LIST_WORDS.intersection(toks[max(cuts) : trigger])


def _phrase(value: object) -> str:
    if not isinstance(value, str):  # YAML reads a bare `no` as False: quote such phrases
        raise ValueError(f"trigger {value!r} is not a string (quote it in the YAML file)")
    return value


def _adjacent_query_mark(toks: list[str], start: int, end: int) -> bool:
    before = start > 0 and toks[start - 1] == "?"
    after = end < len(toks) and toks[end] == "?"
    return before or after
