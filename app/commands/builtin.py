"""Subcommands ``builtin prepare`` and ``builtin info``: make the built-in model ready on this machine."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the builtin-model subcommands to the top-level subparsers.

    Args:
        sub: the top-level ``argparse`` subparsers object.
    """
    parser = sub.add_parser(
        "builtin",
        help="prepare or describe the built-in model (synthetic training data only; not for clinical use)",
        description="The built-in model: a small LLaVA (CLIP-style ViT + SmolLM2-135M-Instruct + LoRA).",
    )
    actions = parser.add_subparsers(dest="builtin_command", metavar="ACTION")
    parser.set_defaults(func=lambda _args: _usage(parser))
    for name, handler, text in (
        (
            "prepare",
            _prepare,
            "convert SmolLM2 and assemble the Llava folder under $MEDVLM_HOME (idempotent)",
        ),
        ("info", _info, "say where the built-in model is and which version, without building anything"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument(
            "--home", type=Path, default=None, help="cache root (default $MEDVLM_HOME or ~/.cache/medvlm)"
        )
        action.add_argument("--json", action="store_true", help="print one JSON object")
        if name == "prepare":
            action.add_argument("--force", action="store_true", help="convert and assemble again")
            action.add_argument(
                "--weights", type=Path, default=None, help="trained parts folder (default: committed)"
            )
        action.set_defaults(func=handler)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _prepare(args: argparse.Namespace) -> int:
    from medvlm.builtin import BuiltinError, prepare

    try:
        model = prepare(args.home, weights_dir=args.weights, force=args.force)
    except BuiltinError as e:
        sys.stderr.write(f"medvlm builtin prepare: {e}\n")
        return 1
    _emit(
        {
            "model_dir": str(model.model_dir),
            "adapter_dir": str(model.adapter_dir) if model.adapter_dir else None,
            "model_version": model.model_version,
            "adapter_version": model.adapter_version,
            "synthetic_only": model.synthetic_only,
        },
        as_json=args.json,
    )
    return 0


def _info(args: argparse.Namespace) -> int:
    from medvlm.builtin import BuiltinError, PartsSpec, default_home, default_weights_dir

    weights = default_weights_dir()
    home = args.home or default_home()
    try:
        spec = PartsSpec.from_file(weights / "parts.json")
    except BuiltinError as e:
        sys.stderr.write(f"medvlm builtin info: {e}\n")
        return 1
    prepared = sorted(str(p) for p in (home / "builtin").glob("model-*") if p.is_dir())
    _emit(
        {
            "version": spec.version,
            "synthetic_only": spec.synthetic_only,
            "image_size": spec.image_size,
            "image_tokens": spec.num_image_tokens,
            "vision_config": spec.vision_config,
            "weights_dir": str(weights),
            "adapter_shipped": (weights / "adapter" / "adapter_model.safetensors").is_file(),
            "prepared": prepared,
            "card": str(weights.parent / "MODEL_CARD.md"),
        },
        as_json=args.json,
    )
    return 0


def _emit(fields: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
        return
    for key, value in fields.items():
        sys.stdout.write(f"{key}: {value}\n")
