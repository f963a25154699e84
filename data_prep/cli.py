"""Subcommands owned by ``data_prep``: ``medvlm ingest`` and ``medvlm deid``.

Cheap to import: pydicom, PIL, openslide and numpy are imported inside the handlers.
Exit codes: 0 every input ok, 1 any input failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRESET_NAMES = ("lung", "mediastinum", "bone", "brain", "abdomen", "stroke")


def register(sub: Any) -> None:
    """Add ``ingest`` and ``deid`` to the top-level subparsers.

    Args:
        sub: the ``argparse`` subparsers object of the ``medvlm`` parser.
    """
    p = sub.add_parser(
        "ingest",
        help="read DICOM files, series, slides and images; print one line per input",
        description=(
            "Read files, folders and .zip archives (DICOM, DICOM series, whole-slide images, PNG/JPEG) and "
            "print one line per file, series or slide. Study ids are keyed hashes (key from "
            "MEDVLM_PSEUDONYM_KEY, which every site should set, else a per-install key file). The 'source' "
            "field echoes your own path (see --no-source). Exit 0 when every input is ok, 1 when any failed, "
            "2 on a usage error."
        ),
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files, folders or .zip archives")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write one PNG per line into this folder (created), named <study id>-NNNN.png",
    )
    p.add_argument(
        "--no-source",
        action="store_true",
        help=(
            "print input-N#M (the N-th PATH, its M-th line) instead of each input's path in 'source', "
            "and remove input names from error sentences"
        ),
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    p.add_argument(
        "--preset", choices=PRESET_NAMES, default=None, help="CT window preset (default: file's window)"
    )
    p.add_argument(
        "--frame", type=int, default=None, help="zero-based frame of multi-frame images (default: middle)"
    )
    p.set_defaults(func=_ingest)

    d = sub.add_parser(
        "deid",
        help="de-identify DICOM files (PS3.15 Annex E basic profile), failing closed",
        description=(
            "De-identify DICOM files, folders or .zip archives into OUT with the DICOM PS3.15 Annex E Basic "
            "Application Level Confidentiality Profile: private tags removed, UIDs remapped by a keyed hash, "
            "dates removed (or shifted with --date-shift-days), preamble zeroed. Files that cannot be "
            "de-identified are rejected and not written. Exit 0 when every file was written, 1 otherwise."
        ),
    )
    d.add_argument("input", type=Path, metavar="IN", help="a DICOM file, a folder or a .zip archive")
    d.add_argument(
        "output",
        type=Path,
        metavar="OUT",
        help="output folder (created; not a file name such as x.dcm); skipped if it lies inside IN",
    )
    d.add_argument(
        "--date-shift-days",
        type=int,
        default=None,
        help="shift dates by this many days instead of removing them",
    )
    d.add_argument("--json", action="store_true", help="print one JSON object per line")
    d.set_defaults(func=_deid)


def _quiet_libraries() -> None:
    """Keep library chatter off stderr: pydicom logs can quote element values and carry tracebacks.

    Warnings that matter are captured per input and reported (sanitised) in each line's ``warnings``.
    """
    import pydicom  # its config module resets the "pydicom" logger's level on import

    del pydicom
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")


def _ingest(args: argparse.Namespace) -> int:
    from data_prep.errors import PseudonymKeyError
    from data_prep.ingest import IngestOptions, ingest_path
    from data_prep.pseudonym import resolve_key

    _quiet_libraries()
    if args.frame is not None and args.frame < 0:
        print("medvlm ingest: error: --frame must be >= 0", file=sys.stderr)
        return 2
    out_problem = _check_out_folder(args.out)
    if out_problem:
        print(f"medvlm ingest: error: --out {out_problem}", file=sys.stderr)
        return 2
    try:
        key = resolve_key()
    except PseudonymKeyError as e:
        print(f"medvlm ingest: error: {e}", file=sys.stderr)
        return 2
    options = IngestOptions(
        out=args.out, preset=args.preset, frame=args.frame, key=key, hide_source=args.no_source
    )
    failed = 0
    for report in ingest_path(args.paths, options=options):
        if report.status != "ok":
            failed += 1
        if args.json:
            print(json.dumps(report.as_dict(), ensure_ascii=False), flush=True)
        else:
            print(_summary(report), flush=True)
    return 1 if failed else 0


def _check_out_folder(out: Path | None) -> str | None:
    """Why ``out`` cannot be the output folder (it is a file, or cannot be created), or None when fine.

    The folder is created here, once, so that a bad ``--out`` is one usage error rather than one
    error per input.
    """
    if out is None:
        return None
    if out.exists() and not out.is_dir():
        return "must be a folder, but it names an existing file"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot be created ({e.strerror or type(e).__name__})"
    return None


FILE_LIKE_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima", ".zip")


def _check_deid_out(out: Path) -> str | None:
    """Why ``out`` cannot be deid's output folder, or None: it must not be a file or look like one.

    ``deid`` writes ``OUT/<study>/<uid>.dcm``, so ``OUT`` is always a folder; a name such as
    ``x.dcm`` is almost certainly meant as a file, and silently making a folder of that name
    would surprise the user.
    """
    if out.exists() and not out.is_dir():
        return "must be a folder, but it names an existing file"
    if not out.exists() and out.suffix.lower() in FILE_LIKE_SUFFIXES:
        return f"must be a folder (deid writes OUT/<study>/<uid>.dcm), but {out.name} looks like a file name"
    return None


def _summary(report: Any) -> str:
    if report.status != "ok":
        return f"ERROR {report.source}: {report.error}"
    shape = "x".join(str(s) for s in report.shape or ())
    parts = [f"ok {report.source}: {report.kind}", report.modality or "-", report.photometric or "-", shape]
    if report.frames and report.frames > 1:
        parts.append(f"{report.frames} frames")
    if report.window is not None and report.window.center is not None:
        parts.append(f"window C{report.window.center:g}/W{report.window.width:g} ({report.window.preset})")
    if report.study_id:
        parts.append(f"study {report.study_id}")
    if report.image:
        parts.append(f"-> {report.image}")
    if report.warnings:
        parts.append(f"[{len(report.warnings)} warning(s): {report.warnings[0]}]")
    return " ".join(parts)


def _deid(args: argparse.Namespace) -> int:
    from data_prep.deid import deidentify_path
    from data_prep.errors import PseudonymKeyError
    from data_prep.pseudonym import resolve_key

    _quiet_libraries()
    try:
        key = resolve_key()
    except PseudonymKeyError as e:
        print(f"medvlm deid: error: {e}", file=sys.stderr)
        return 2
    if args.date_shift_days == 0:
        print("medvlm deid: error: --date-shift-days must not be 0", file=sys.stderr)
        return 2
    if args.input.resolve() == args.output.resolve():
        print("medvlm deid: error: OUT must differ from IN", file=sys.stderr)
        return 2
    out_problem = _check_deid_out(args.output)
    if out_problem:
        print(f"medvlm deid: error: OUT {out_problem}", file=sys.stderr)
        return 2
    failed = 0
    for report in deidentify_path(args.input, args.output, key=key, date_shift_days=args.date_shift_days):
        if report.status != "ok":
            failed += 1
        if args.json:
            print(json.dumps(report.as_dict(), ensure_ascii=False), flush=True)
        elif report.status == "ok":
            warn = f" [{'; '.join(report.warnings)}]" if report.warnings else ""
            print(f"ok {report.source} -> {report.output}{warn}", flush=True)
        else:
            print(f"ERROR {report.source}: {report.error}", flush=True)
    return 1 if failed else 0
