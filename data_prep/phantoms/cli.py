"""Subcommands owned by ``data_prep.phantoms``: ``medvlm phantoms``.

``medvlm phantoms --out DIR --n N --seed S [--kinds cxr] [--size PX] [--no-dicom]`` writes a
synthetic dataset with ground truth (see docs/PHANTOMS.md). Heavy imports happen in handlers.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    allowed = {"cxr", "ct", "slide"}
    if not kinds or set(kinds) - allowed:
        raise argparse.ArgumentTypeError(f"kinds must be a comma list of {sorted(allowed)}, got {text!r}")
    return kinds


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def register(sub: Any) -> None:
    """Add ``phantoms`` to the top-level subparsers.

    Args:
        sub: argparse subparsers object.
    """
    p = sub.add_parser(
        "phantoms",
        help="generate synthetic studies with ground truth (images, DICOM, captions, VQA, probes)",
        description="Write a deterministic synthetic dataset with ground-truth findings, split by patient.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=_positive, default=100, help="number of studies (default 100)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--kinds", type=_kinds, default=("cxr",), help="comma list of study kinds (default cxr)")
    p.add_argument("--size", type=int, default=128, help="image side length in pixels (default 128)")
    p.add_argument("--no-dicom", action="store_true", help="skip writing DICOM files (faster)")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from data_prep.phantoms.generate import PhantomError, generate

    if args.size < 16:
        logger.error("--size must be at least 16")
        return 2
    try:
        manifest = generate(args.out, args.n, args.seed, args.kinds, args.size, dicom=not args.no_dicom)
    except PhantomError as e:
        logger.error("phantoms: %s", e)
        return 1
    counts = {s: len(ids) for s, ids in manifest.splits.items()}
    print(
        f"wrote {manifest.n} studies to {args.out} (splits {counts}); manifest: {args.out / 'manifest.json'}"
    )
    return 0
