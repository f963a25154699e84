"""Does a trained Llava checkpoint use the image? A quick check through the training code path.

    python -m training.diagnose --checkpoint runs/builtin/stage2/final --data runs/builtin/data \
        --split train --n 48

Scores closed questions of one template (default: yes/no existence questions) by comparing, at the
answer position, the logits of the first token of each answer option (``yes``/``no``, ``left``/``right``,
``upper``/``middle``/``lower``, ...), with the real image and with a blank one, and reports the norms
of the projected image features beside the LM's token-embedding norms. ``--files probes`` scores the
ProbMed-style yes/no probe questions (their ``template`` is the probe category). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.data import QAExample


LETTERS = ("A", "B", "C", "D", "E", "F")


def answer_choices(example: QAExample) -> tuple[str, ...]:
    """The answers a closed question allows: its options, their letters (multiple choice) or yes/no."""
    if not example.options:
        return ("yes", "no")
    if example.answer in example.options:
        return example.options
    return LETTERS[: len(example.options)]


def answer_log_likelihood(model: Any, batch: dict[str, Any], pixel_values: Any) -> Any:
    """Sum of the log-probabilities of each row's answer tokens (its non-masked labels)."""
    import torch

    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixel_values
        ).logits
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = labels != -100
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=1)


def main(argv: list[str] | None = None) -> int:
    """Run the check and print one JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", type=Path, required=True, help="stage-1/2 checkpoint (adapter/ optional)"
    )
    parser.add_argument("--data", type=Path, required=True, help="a medvlm phantoms folder")
    parser.add_argument("--split", choices=("train", "val", "test"), default="train")
    parser.add_argument("--n", type=int, default=48, help="questions to score")
    parser.add_argument("--template", default="existence", help="closed-question template to score")
    parser.add_argument(
        "--files", default="vqa", choices=("vqa", "probes"), help="which question file of the split"
    )
    parser.add_argument(
        "--lm-dir", type=Path, default=None, help="LM folder (default: SmolLM2 under $MEDVLM_HOME)"
    )
    args = parser.parse_args(argv)

    import torch
    from peft import PeftModel

    from training.config import build
    from training.data import load_qa
    from training.recipes.projector_align import ProjectorAlignConfig, ProjectorAlignRecipe

    torch.set_num_threads(1)
    cfg = build(
        ProjectorAlignConfig,
        {
            "out_dir": "unused",
            "data_dir": str(args.data),
            "init_from": str(args.checkpoint),
            "lm_dir": str(args.lm_dir) if args.lm_dir else None,
        },
    )
    recipe = ProjectorAlignRecipe(cfg)
    model: Any = recipe.build_base()
    if (args.checkpoint / "adapter" / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(model, str(args.checkpoint / "adapter"))
    model.eval()
    assert recipe.batcher is not None
    questions = [
        e
        for e in load_qa(args.data, args.split, (args.files,))
        if e.template == args.template and e.question_type == "closed"
    ][: args.n]
    right = {"image": 0, "blank": 0}
    norms: list[float] = []
    for start in range(0, len(questions), 16):
        chunk = questions[start : start + 16]
        batch = recipe.batcher(chunk)
        choices = [answer_choices(example) for example in chunk]
        for kind in ("image", "blank"):
            pixels = batch["pixel_values"] if kind == "image" else torch.zeros_like(batch["pixel_values"])
            scores = torch.full((len(chunk), max(len(c) for c in choices)), float("-inf"))
            for k in range(scores.shape[1]):
                rows = [replace(e, answer=c[min(k, len(c) - 1)]) for e, c in zip(chunk, choices, strict=True)]
                scores[:, k] = answer_log_likelihood(model, recipe.batcher(rows), pixels)
            for i, example in enumerate(chunk):
                best = int(scores[i, : len(choices[i])].argmax())
                right[kind] += int(choices[i][best] == example.answer)
        with torch.no_grad():
            base: Any = model.get_base_model() if hasattr(model, "get_base_model") else model
            hidden = base.model.vision_tower(batch["pixel_values"], output_hidden_states=True).hidden_states[
                -1
            ]
            projected = base.model.multi_modal_projector(hidden[:, 1:])
            norms += projected.norm(dim=-1).flatten().tolist()
    embed = base.model.language_model.embed_tokens.weight.norm(dim=-1)
    result = {
        "checkpoint": str(args.checkpoint),
        "split": args.split,
        "n": len(questions),
        "template": args.template,
        "accuracy_image": round(right["image"] / max(1, len(questions)), 3),
        "accuracy_blank": round(right["blank"] / max(1, len(questions)), 3),
        "image_feature_norm_mean": round(sum(norms) / max(1, len(norms)), 2),
        "token_embedding_norm_mean": round(float(embed.mean()), 2),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
