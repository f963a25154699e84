"""Per-template accuracy on the val split, by generation: the quick check used to choose candidates.

    python -m training.template_check --model runs/b12/stage2b/final --data runs/b12/data --n 60

For every closed VQA template and every probe category it asks the first ``--n`` val questions
through the evaluation harness's :class:`~training.eval.runner.Answerer` (greedy, as ``medvlm eval``
does). Probe categories are asked with the image and with a blank image and report question
accuracy, paired accuracy and the share of "yes" answers. One line per template, or one JSON object
with ``--json``. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from medvlm.grounding import answer_polarity
from training.eval.datasets import SELECTION_SPLIT, load_probes, load_vqa
from training.eval.metrics import closed_correct, paired_accuracy
from training.eval.runner import Answerer, load_answerer


def probe_scores(answerer: Answerer, data: Path, n: int) -> dict[str, dict[str, float]]:
    """``{category: {accuracy, paired, yes_rate, blank_accuracy, blank_paired, blank_yes_rate}}``."""
    by_category: dict[str, list[tuple[str, str, Any]]] = defaultdict(list)
    for item in load_probes(data, SELECTION_SPLIT):
        by_category[item[2].template].append(item)
    out: dict[str, dict[str, float]] = {}
    for category, items in by_category.items():
        items = items[:n]
        examples = [e for _, _, e in items]
        scores: dict[str, float] = {}
        for prefix, blank in (("", False), ("blank_", True)):
            answers = answerer.answer(examples, blank=blank)
            ok = [closed_correct(a, e.answer) for a, e in zip(answers, examples, strict=True)]
            scores[f"{prefix}accuracy"] = sum(ok) / len(ok)
            scores[f"{prefix}paired"] = paired_accuracy(
                (pid, o) for (pid, _, _), o in zip(items, ok, strict=True)
            )[0]
            scores[f"{prefix}yes_rate"] = sum(answer_polarity(a) == "yes" for a in answers) / len(answers)
        out[category] = {k: round(v, 3) for k, v in scores.items()}
    return out


def vqa_scores(answerer: Answerer, data: Path, n: int) -> dict[str, dict[str, Any]]:
    """``{template: {accuracy, n, most_common}}`` over the closed VQA templates."""
    by_template: dict[str, list[Any]] = defaultdict(list)
    for e in load_vqa(data, SELECTION_SPLIT):
        if e.question_type == "closed":
            by_template[e.template].append(e)
    out: dict[str, dict[str, Any]] = {}
    for template, examples in by_template.items():
        examples = examples[:n]
        answers = answerer.answer(examples)
        ok = [closed_correct(a, e.answer, e.options) for a, e in zip(answers, examples, strict=True)]
        out[template] = {
            "accuracy": round(sum(ok) / len(ok), 3),
            "n": len(ok),
            "most_common": Counter(answers).most_common(3),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the check and print it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", required=True, help="'builtin', a folder of built-in parts or a model folder"
    )
    parser.add_argument("--data", type=Path, required=True, help="a medvlm phantoms folder (its val split)")
    parser.add_argument("--n", type=int, default=60, help="questions per template or probe category")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    answerer = load_answerer(args.model)
    probes = probe_scores(answerer, args.data, args.n)
    vqa = vqa_scores(answerer, args.data, args.n)
    if args.json:
        result = {"model": answerer.model_version, "split": SELECTION_SPLIT, "probe": probes, "vqa": vqa}
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        return 0
    for category, s in probes.items():
        sys.stdout.write(
            f"probe {category:10s} acc={s['accuracy']:.3f} paired={s['paired']:.3f} "
            f"yes={s['yes_rate']:.2f} | blank acc={s['blank_accuracy']:.3f} "
            f"paired={s['blank_paired']:.3f} yes={s['blank_yes_rate']:.2f}\n"
        )
    for template, v in vqa.items():
        sys.stdout.write(f"vqa {template:12s} acc={v['accuracy']:.3f} n={v['n']} {v['most_common']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
