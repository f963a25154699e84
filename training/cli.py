"""Subcommands ``train`` and ``eval`` (owned by ``training``).

``medvlm train RECIPE [--config YAML] [key=value ...]`` runs one recipe (stage0, stage1, stage2, dpo)
or the whole built-in rebuild (``builtin``); ``medvlm train promote`` is the promotion gate of a new
adapter (``training.promote``); ``medvlm eval {vqa,probe,reportcheck} --model M --data D``
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
    "dpo": "DPO from preference pairs (reference = the starting adapter, frozen)",
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
    _register_promote(recipes)
    _register_mine(recipes)

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
        p.add_argument(
            "--model",
            required=True,
            help="'builtin', a folder of built-in parts (exported weights or a stage-1/2 checkpoint) or a "
            "model folder",
        )
        p.add_argument("--adapter", default=None, help="LoRA adapter folder")
        p.add_argument(
            "--data",
            type=Path,
            required=True,
            help="a medvlm phantoms folder (its test split) or a dataset file (VQA-RAD, SLAKE, PathVQA, "
            "JSONL)",
        )
        p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
        p.add_argument(
            "--split",
            choices=("test", "val"),
            default="test",
            help="split of a phantoms folder: test (reported figures) or val (choosing between candidates)",
        )
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


def _register_mine(recipes: Any) -> None:
    text = "write DPO preference pairs from a model's wrong answers to closed questions (train or val split)"
    p = recipes.add_parser(
        "mine-preferences",
        help=text,
        description=f"{text}: chosen = the reference answer, rejected = the model's answer. For synthetic "
        "data, whose answers are known; clinicians' corrections come from `medvlm db export-preferences`.",
    )
    p.add_argument("--model", required=True, help="'builtin', a folder of built-in parts or a model folder")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder")
    p.add_argument("--data", type=Path, required=True, help="a medvlm phantoms folder")
    p.add_argument("--split", choices=("train", "val"), default="train")
    p.add_argument("--files", nargs="+", default=["vqa", "probes"], help="question files of the split")
    p.add_argument("--limit", type=int, default=2000, help="questions asked (a seeded random sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="preference JSONL to write")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--batch-size", type=int, default=16, help="questions per generate call")
    p.set_defaults(func=_mine)


def _mine(args: argparse.Namespace) -> int:
    from medvlm import MedVLMError
    from medvlm.builtin import BuiltinError
    from training.data import DataError
    from training.eval.runner import load_answerer
    from training.preferences import closed_questions, mine_preferences, write_preferences

    if args.limit < 1:
        sys.stderr.write("medvlm train mine-preferences: --limit must be at least 1\n")
        return 1
    try:
        examples = closed_questions(
            args.data, split=args.split, files=args.files, limit=args.limit, seed=args.seed
        )
        answerer = load_answerer(
            args.model, args.adapter, num_threads=args.threads, batch_size=args.batch_size
        )
        mined = mine_preferences(answerer, args.data, examples)
        write_preferences(mined.pairs, args.out)
    except (DataError, ValueError, OSError, MedVLMError, BuiltinError) as e:
        sys.stderr.write(f"medvlm train mine-preferences: {e}\n")
        return 1
    summary = {"asked": mined.asked, "pairs": len(mined.pairs), "per_template": mined.per_template}
    sys.stdout.write(json.dumps({**summary, "out": str(args.out), "model": answerer.model_version}) + "\n")
    return 0


def _register_promote(recipes: Any) -> None:
    text = "promote a candidate adapter only if no held-out metric falls by more than the tolerance"
    p = recipes.add_parser(
        "promote",
        help=text,
        description=f"{text}; exit 0 promoted (or rolled back), 1 refused or failed. See docs/RETRAINING.md.",
    )
    p.add_argument("--baseline", type=Path, help="the current adapter folder, or a checkpoint with adapter/")
    p.add_argument("--candidate", type=Path, help="the new adapter folder, or a checkpoint with adapter/")
    p.add_argument(
        "--data", type=Path, help="held-out data: a phantoms folder (its test split) or a dataset file"
    )
    p.add_argument(
        "--model", default="builtin", help="base model both adapters apply to: 'builtin' or a folder"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N questions and N probe pairs")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest allowed fall of any metric")
    p.add_argument("--registry", type=Path, default=None, help="adapter registry JSON, updated on promotion")
    p.add_argument("--rollback", action="store_true", help="make the registry's previous adapter current")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    p.add_argument("--batch-size", type=int, default=16, help="questions per generate call")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_promote)


def _promote(args: argparse.Namespace) -> int:
    from training.promote import PromoteError, harness_evaluator, rollback, run_gate

    def fail(message: str) -> int:
        sys.stderr.write(f"medvlm train promote: {message}\n")
        return 1

    try:
        if args.rollback:
            if args.registry is None:
                return fail("--rollback needs --registry FILE")
            entry = rollback(args.registry)
            fields = {"rolled_back": True, "adapter": entry["adapter"], "version": entry["version"]}
            sys.stdout.write(
                json.dumps(fields, sort_keys=True) + "\n"
                if args.json
                else f"rolled back: {entry['version']} ({entry['adapter']}) is current again\n"
            )
            return 0
        missing = [f"--{n}" for n in ("baseline", "candidate", "data") if getattr(args, n) is None]
        if missing:
            return fail(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
        if not args.data.exists():
            return fail(f"{args.data} does not exist")
        if args.limit is not None and args.limit < 1:
            return fail("--limit must be at least 1")
        evaluate = harness_evaluator(
            args.model, args.data, limit=args.limit, num_threads=args.threads, batch_size=args.batch_size
        )
        result = run_gate(
            args.baseline, args.candidate, evaluate, tolerance=args.tolerance, registry=args.registry
        )
    except PromoteError as e:
        return fail(str(e))
    decision = result.decision
    if args.json:
        fields = {
            **decision.to_json(),
            "baseline": result.baseline_version,
            "candidate": result.candidate_version,
            "registry": str(args.registry) if args.registry and result.registry_entry else None,
        }
        sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    else:
        rows = [
            f"| metric | baseline {result.baseline_version} | candidate {result.candidate_version} | delta |"
        ]
        rows.append("|---|---|---|---|")
        for d in decision.deltas:
            cells = [_cell(d.baseline), _cell(d.candidate), _cell(d.delta, signed=True)]
            rows.append(f"| {d.name} | {' | '.join(cells)}{' (regressed)' if d.regressed else ''} |")
        sys.stdout.write("\n".join(rows) + "\n")
    (sys.stdout if decision.promoted else sys.stderr).write(f"medvlm train promote: {decision.reason}\n")
    return 0 if decision.promoted else 1


def _cell(value: float, *, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


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
        metrics = evaluate(answerer, args.data, limit=args.limit, split=args.split)
    except (DataError, BuiltinError, MedVLMError) as e:
        sys.stderr.write(f"medvlm eval {args.task}: {e}\n")
        return 1
    metrics = {
        "task": args.task,
        "model": answerer.model_version,
        "data": str(args.data),
        **({"split": args.split} if args.data.is_dir() else {}),
        **metrics,
    }
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
