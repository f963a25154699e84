"""Does a trained Llava checkpoint use the image? A quick check through the training code path.

    python -m training.diagnose --checkpoint runs/builtin/stage2/final --data runs/builtin/data \
        --split train --n 48

Scores yes/no existence questions of one split by comparing the logits of ``yes`` and ``no`` at the
answer position, with the real image and with a blank one, and reports the norms of the projected
image features beside the LM's token-embedding norms. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


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
    parser.add_argument("--n", type=int, default=48, help="existence questions to score")
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
    tokenizer = recipe.processor.tokenizer
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    questions = [e for e in load_qa(args.data, args.split) if e.template == "existence"][: args.n]
    right = {"image": 0, "blank": 0}
    norms: list[float] = []
    for start in range(0, len(questions), 16):
        chunk = questions[start : start + 16]
        batch = recipe.batcher(chunk)
        first = [int((row != -100).nonzero()[0]) for row in batch["labels"]]
        for kind in ("image", "blank"):
            pixels = batch["pixel_values"] if kind == "image" else torch.zeros_like(batch["pixel_values"])
            with torch.no_grad():
                logits = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels
                ).logits
            for i, example in enumerate(chunk):
                at = logits[i, first[i] - 1]
                right[kind] += int(("yes" if at[yes] > at[no] else "no") == example.answer)
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
        "existence_accuracy_image": round(right["image"] / max(1, len(questions)), 3),
        "existence_accuracy_blank": round(right["blank"] / max(1, len(questions)), 3),
        "image_feature_norm_mean": round(sum(norms) / max(1, len(norms)), 2),
        "token_embedding_norm_mean": round(float(embed.mean()), 2),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
