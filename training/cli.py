"""Subcommands ``train`` and ``eval`` (owned by ``training``).

``medvlm train RECIPE [--config YAML] [key=value ...]`` runs one recipe (stage0, stage1, stage2, dpo)
or the whole built-in rebuild (``builtin``); ``medvlm eval {vqa,probe,reportcheck} --model M --data D``
scores a model. Heavy imports happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RECIPES = {
    "stage0": (
        "training.recipes.vision_pretrain",
        "VisionPretrainConfig",
        "VisionPretrainRecipe",
        "stage0_vision.yaml",
    ),
    "stage1": (
        "training.recipes.projector_align",
        "ProjectorAlignConfig",
        "ProjectorAlignRecipe",
        "stage1_projector.yaml",
    ),
    "stage2": (
        "training.recipes.instruct_lora",
        "InstructLoraConfig",
        "InstructLoraRecipe",
        "stage2_lora.yaml",
    ),
    "dpo": ("training.recipes.dpo", "DPOConfig", "DPORecipe", "dpo.yaml"),
}
RECIPE_HELP = {
    "stage0": "vision-encoder pre-training on finding labels",
    "stage1": "projector alignment (vision tower and LM frozen)",
    "stage2": "instruction tuning: LoRA on the LM plus the projector",
    "dpo": "DPO from preference pairs (reference = adapter disabled)",
    "builtin": "rebuild the built-in model from scratch (data, stages 0-2, export)",
}


def register(sub: Any) -> None:
    """Add ``train`` and ``eval`` to the top-level subparsers.

    Args:
        sub: the top-level ``argparse`` subparsers object.
    """
    train = sub.add_parser("train", help="train a recipe or rebuild the built-in model", description=__doc__)
    train.set_defaults(func=lambda _a: _usage(train))
    recipes = train.add_subparsers(dest="recipe", metavar="RECIPE")
    for name, text in RECIPE_HELP.items():
        default = RECIPES[name][3] if name in RECIPES else "builtin.yaml"
        p = recipes.add_parser(
            name, help=text, description=f"{text}. Default config: training/configs/{default}"
        )
        p.add_argument("--config", type=Path, default=CONFIG_DIR / default, help="YAML config")
        if name == "builtin":
            p.add_argument("--out", type=Path, help="working folder (sets out_dir)")
            p.add_argument("--weights-out", type=Path, help="also copy the exported parts here")
        p.add_argument(
            "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. max_steps=10"
        )
        p.set_defaults(func=_train, recipe=name)

    ev = sub.add_parser(
        "eval", help="evaluate a model (vqa, probe, reportcheck)", description="Evaluation harness."
    )
    ev.set_defaults(func=lambda _a: _usage(ev))
    tasks = ev.add_subparsers(dest="task", metavar="TASK")
    for name, text in (
        ("vqa", "closed-question accuracy, open recall and token F1"),
        ("probe", "ProbMed-style paired accuracy beside the blind (blank-image) baseline"),
        ("reportcheck", "report error checking: SIMPLE accuracy and COMPLEX macro-F1"),
    ):
        p = tasks.add_parser(name, help=text, description=text)
        p.add_argument("--model", required=True, help="'builtin' or a model folder")
        p.add_argument("--adapter", default=None, help="LoRA adapter folder")
        p.add_argument(
            "--data",
            type=Path,
            required=True,
            help="a medvlm phantoms folder (its test split) or a dataset file (VQA-RAD, SLAKE, PathVQA, "
            "JSONL)",
        )
        p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
        p.add_argument("--threads", type=int, default=1, help="CPU threads")
        p.add_argument("--batch-size", type=int, default=16, help="questions per generate call")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(func=_eval, task=name)
    vision = tasks.add_parser(
        "vision",
        help="stage-0 ViT label accuracy on a held-out split",
        description="Label accuracy of a stage-0 checkpoint (threshold 0.5) on the val or test split.",
    )
    vision.add_argument("--checkpoint", type=Path, required=True, help="stage-0 checkpoint folder")
    vision.add_argument("--data", type=Path, required=True, help="a medvlm phantoms folder")
    vision.add_argument("--split", choices=("val", "test"), default="test")
    vision.add_argument("--json", action="store_true", help="print one JSON object")
    vision.set_defaults(func=_eval_vision)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _train(args: argparse.Namespace) -> int:
    import importlib

    from training.config import ConfigError, build, load_config

    overrides = list(args.overrides)
    if args.recipe == "builtin":
        if args.out:
            overrides.append(f"out_dir={args.out}")
        if args.weights_out:
            overrides.append(f"weights_out={args.weights_out}")
    try:
        values = load_config(args.config, overrides)
        if args.recipe == "builtin":
            from training.builtin import BuiltinPipelineConfig, run_pipeline

            weights = run_pipeline(build(BuiltinPipelineConfig, values))
            sys.stdout.write(f"built-in parts written to {weights}\n")
            return 0
        module_name, config_name, recipe_name, _ = RECIPES[args.recipe]
        module = importlib.import_module(module_name)
        cfg = build(getattr(module, config_name), values)
        result = getattr(module, recipe_name)(cfg).run()
    except (ConfigError, ValueError, OSError) as e:
        sys.stderr.write(f"medvlm train {args.recipe}: {e}\n")
        return 1
    sys.stdout.write(
        json.dumps(
            {
                "steps": result.steps,
                "final_loss": result.final_loss,
                "samples_per_second": round(result.samples_per_second, 3),
                "checkpoint": str(result.checkpoint),
            }
        )
        + "\n"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from medvlm import MedVLMError
    from medvlm.builtin import BuiltinError
    from training.data import DataError
    from training.eval import runner

    if not args.data.exists():
        sys.stderr.write(f"medvlm eval {args.task}: {args.data} does not exist\n")
        return 1
    try:
        answerer = runner.load_answerer(
            args.model, args.adapter, num_threads=args.threads, batch_size=args.batch_size
        )
        evaluate = {
            "vqa": runner.evaluate_vqa,
            "probe": runner.evaluate_probe,
            "reportcheck": runner.evaluate_reportcheck,
        }[args.task]
        metrics = evaluate(answerer, args.data, limit=args.limit)
    except (DataError, BuiltinError, MedVLMError) as e:
        sys.stderr.write(f"medvlm eval {args.task}: {e}\n")
        return 1
    metrics = {"task": args.task, "model": answerer.model_version, "data": str(args.data), **metrics}
    if args.json:
        sys.stdout.write(json.dumps(_finite(metrics), sort_keys=True) + "\n")
    else:
        sys.stdout.write(runner.markdown_table(args.task, answerer.model_version, metrics) + "\n")
    return 0


def _eval_vision(args: argparse.Namespace) -> int:
    from training.data import DataError
    from training.recipes.vision_pretrain import evaluate_classifier

    try:
        metrics: dict[str, Any] = dict(evaluate_classifier(args.checkpoint, args.data, args.split))
    except (DataError, OSError, ValueError) as e:
        sys.stderr.write(f"medvlm eval vision: {e}\n")
        return 1
    metrics = {"task": "vision", "split": args.split, **metrics}
    if args.json:
        sys.stdout.write(json.dumps(metrics, sort_keys=True) + "\n")
    else:
        from training.eval.runner import markdown_table

        sys.stdout.write(markdown_table("vision", str(args.checkpoint), metrics) + "\n")
    return 0


def _finite(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
