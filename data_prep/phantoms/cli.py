"""Subcommands owned by ``data_prep.phantoms``: ``medvlm phantoms`` and ``medvlm reports iu-errors``.

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
    p.add_argument("--no-dicom", action="store_true", help="skip writing DICOM files and slides (faster)")
    p.add_argument(
        "--workers", type=_positive, default=1, help="rendering processes (default 1; same output)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a folder that already holds a dataset, overwriting files of the same names",
    )
    p.set_defaults(func=_run_generate)

    r = sub.add_parser(
        "reports",
        help="report error-checking sets from real report text",
        description="Report error-checking sets (error injection with labelled spans) from real reports.",
    )
    rsub = r.add_subparsers(dest="reports_command", metavar="SUBCOMMAND")
    r.set_defaults(func=lambda args: (r.print_help(), 2)[1])
    iu = rsub.add_parser(
        "iu-errors",
        help="inject errors into the IU chest X-ray reports shipped by torchxrayvision (read at run time)",
        description=(
            "Write a text-only report error-checking set from the 3,955 Indiana University reports in the "
            "installed torchxrayvision package (CC BY-NC-ND 4.0: local use only, never commit the output)."
        ),
    )
    iu.add_argument("--out", type=Path, required=True, help="output folder")
    iu.add_argument("--seed", type=int, default=0, help="seed for splits and errors (default 0)")
    iu.add_argument("--limit", type=_positive, default=None, help="use only the first N reports")
    iu.set_defaults(func=_run_iu_errors)


def _run_generate(args: argparse.Namespace) -> int:
    from data_prep.phantoms.generate import OutputPathError, PhantomError, generate

    if args.size < 16:
        logger.error("--size must be at least 16")
        return 2
    try:
        manifest = generate(
            args.out,
            args.n,
            args.seed,
            args.kinds,
            args.size,
            dicom=not args.no_dicom,
            workers=max(args.workers, 1),
            overwrite=args.force,
        )
    except OutputPathError as e:
        logger.error("phantoms: %s.", e)
        return 2
    except PhantomError as e:
        logger.error("phantoms: %s.", e)
        return 1
    counts = {s: len(ids) for s, ids in manifest.splits.items()}
    print(
        f"wrote {manifest.n} studies to {args.out} (splits {counts}); manifest: {args.out / 'manifest.json'}"
    )
    return 0


def _run_iu_errors(args: argparse.Namespace) -> int:
    from data_prep.phantoms.iu_reports import IuReportsError, write_iu_errors

    if args.out.exists() and not args.out.is_dir():
        logger.error("reports iu-errors: the output path %s is a file, not a folder.", args.out)
        return 2
    try:
        manifest = write_iu_errors(args.out, seed=args.seed, limit=args.limit)
    except IuReportsError as e:
        logger.error("reports iu-errors: %s", e)
        return 1
    print(
        f"wrote {manifest['n']} IU report-error records to {args.out};"
        f" manifest: {args.out / 'iu_manifest.json'}"
    )
    return 0
