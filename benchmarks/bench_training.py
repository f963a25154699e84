"""Training throughput (samples/s) of each stage recipe on this machine's CPU. Run by hand:

    medvlm phantoms --out runs/bench_data --n 400 --seed 1 --size 128 --no-dicom
    python benchmarks/bench_training.py --data runs/bench_data --stage 0 --steps 50 --threads 1
    python benchmarks/bench_training.py --data runs/bench_data --stage 1 --steps 6 --threads 1 \
        --init runs/builtin/stage0/final
    python benchmarks/bench_training.py --data runs/bench_data --stage 2 --steps 6 --threads 1 \
        --init runs/builtin/stage1/final [--mixed-precision bf16]

Stages 1 and 2 use the real SmolLM2-135M-Instruct (converted once under $MEDVLM_HOME) and the
built-in model's shapes from training/configs/builtin.yaml. The first step is excluded from the
rate (it fills the image cache and warms the allocator). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """Run one stage for a few steps and print its throughput."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="a medvlm phantoms folder")
    parser.add_argument("--stage", type=int, choices=(0, 1, 2), required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the builtin.yaml value")
    parser.add_argument("--init", type=Path, default=None, help="previous stage's checkpoint (stages 1-2)")
    parser.add_argument(
        "--mixed-precision", choices=("no", "bf16"), default=None, help="default: the builtin.yaml value"
    )
    args = parser.parse_args(argv)

    import torch

    from training.config import build, load_config

    torch.set_num_threads(args.threads)
    config = load_config(Path(__file__).resolve().parents[1] / "training" / "configs" / "builtin.yaml")
    values: dict[str, Any] = dict(config[f"stage{args.stage}"])
    out = Path(tempfile.mkdtemp(prefix="bench-train-"))
    values.update(
        out_dir=str(out),
        data_dir=str(args.data),
        max_steps=args.steps,
        log_every=1,
        save_every=0,
        num_threads=args.threads,
    )
    if args.batch_size:
        values["batch_size"] = args.batch_size
    if args.mixed_precision:
        values["mixed_precision"] = args.mixed_precision
    recipe: Any
    if args.stage == 0:
        from training.recipes.vision_pretrain import VisionPretrainConfig, VisionPretrainRecipe

        recipe = VisionPretrainRecipe(build(VisionPretrainConfig, values))
    else:
        if args.init is None:
            sys.stderr.write("bench_training: --init is required for stages 1 and 2\n")
            return 2
        values["init_from"] = str(args.init)
        if args.stage == 1:
            from training.recipes.projector_align import ProjectorAlignConfig, ProjectorAlignRecipe

            recipe = ProjectorAlignRecipe(build(ProjectorAlignConfig, values))
        else:
            from training.recipes.instruct_lora import InstructLoraConfig, InstructLoraRecipe

            recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    recipe.setup()
    recipe.train()  # metrics.jsonl has the elapsed time after every step
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    recipe.cleanup()
    first, last = rows[0], rows[-1]
    timed_steps = last["step"] - first["step"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    batch = values["batch_size"]
    result = {
        "stage": args.stage,
        "threads": args.threads,
        "batch_size": batch,
        "mixed_precision": values.get("mixed_precision", "no"),
        "timed_steps": timed_steps,
        "seconds_per_step": round(seconds / timed_steps, 3) if timed_steps else None,
        "samples_per_s": round(timed_steps * batch / seconds, 3) if seconds > 0 else None,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
