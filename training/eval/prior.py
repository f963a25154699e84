"""The question-only prior: what the wording alone answers, learned from the training split.

The blind baseline (the model with the image blanked) shows what *this model* gets without the image.
This prior shows what the simplest text-only rule gets, with no model: for every question text seen
in training it answers the answer given most often to that text there (ties, and questions never
seen, get the answer given most often overall). It answers the same question the same way every
time, so on a ProbMed pair ("Is the effusion on the left?" / "... on the right?") it gets the pair
right whenever the true value is the one more common in training: about half the pairs of a balanced
attribute, not the quarter that two independent coin flips get. It is a reference, not a bound: the
per-question majority maximises each question's accuracy, not that of both questions of a pair, so
another text-only rule (or a model shown a grey image) can score above it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from training.eval.metrics import normalize


@dataclass(frozen=True)
class QuestionPrior:
    """The most common training answer of each question text.

    Attributes:
        by_question: normalised question text -> its most common answer (only strict majorities).
        fallback: the most common answer overall, for ties and unseen questions.
    """

    by_question: Mapping[str, str]
    fallback: str

    @classmethod
    def fit(cls, examples: Iterable[tuple[str, str]]) -> QuestionPrior:
        """Count ``(question, answer)`` pairs of the training split.

        Raises:
            ValueError: no examples.
        """
        counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        overall: Counter[str] = Counter()
        for question, answer in examples:
            counts[normalize(question)][answer] += 1
            overall[answer] += 1
        if not overall:
            raise ValueError("question prior: no training examples to count")
        fallback = min(overall, key=lambda a: (-overall[a], a))
        majority = {}
        for question, answers in counts.items():
            top = answers.most_common(2)
            if len(top) == 1 or top[0][1] > top[1][1]:
                majority[question] = top[0][0]
        return cls(majority, fallback)

    def answer(self, question: str) -> str:
        """The prior's answer to ``question``."""
        return self.by_question.get(normalize(question), self.fallback)
