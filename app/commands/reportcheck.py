"""Subcommand ``check-reports``: batch report checking over a hospital export (docs/REPORTCHECK.md).

``medvlm check-reports --studies DIR --reports FILE --out RESULTS.jsonl`` checks every report
against itself (rules) and against its images (the model layer), writing one JSON line per study;
``--resume`` continues an interrupted run. The model, the server, the pseudonym key and the
database are built here, once, and passed down to :mod:`app.reportcheck.job`.

Exit codes: 0 every study checked (and recorded), 1 a study failed or was not recorded, or the
model, database or reports file could not be opened, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from app.commands.model import positive_int

logger = logging.getLogger(__name__)
IMAGE_MODES = ("findings", "report", "both", "none")


def register(sub: Any) -> None:
    """Add ``check-reports`` to the top-level subparsers."""
    p = sub.add_parser(
        "check-reports",
        allow_abbrev=False,
        help="check a batch of radiology reports against their images and themselves",
        description=(
            "Check every report of an export (a folder per study, a CSV/JSONL of reports) for "
            "errors: self-consistency rules and image checks with the model. One JSON line per "
            "study in --out, keyed by a pseudonymous study id; --resume continues a run."
        ),
    )
    p.add_argument(
        "--studies", type=Path, required=True, metavar="DIR", help="folder with a folder per study"
    )
    p.add_argument(
        "--reports",
        type=Path,
        required=True,
        metavar="FILE",
        help="CSV (columns study, report) or JSONL ({'study': ..., 'report': ...})",
    )
    p.add_argument("--out", type=Path, required=True, metavar="RESULTS", help="results file (JSON lines)")
    p.add_argument("--model", type=Path, help="local model folder (default: the built-in model)")
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=positive_int, default=1, help="CPU threads")
    p.add_argument("--server", help="OpenAI-compatible server URL (vLLM, SGLang, medvlm serve-api)")
    p.add_argument(
        "--api-key-file", type=Path, metavar="PATH", help="server API key file (default: $MEDVLM_API_KEY)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="server timeout in seconds")
    p.add_argument(
        "--image-check",
        choices=IMAGE_MODES,
        default="findings",
        help="per-finding yes/no questions (default), the eval harness's report question, both, or none",
    )
    p.add_argument("--abstain-threshold", type=float, default=0.6)
    p.add_argument(
        "--db-url", help="database URL (default: $MEDVLM_DATABASE_URL, else SQLite in $MEDVLM_HOME)"
    )
    p.add_argument("--no-db", action="store_true", help="do not record the checks in the database")
    p.add_argument("--limit", type=positive_int, help="check at most N studies in this run")
    p.add_argument("--resume", action="store_true", help="continue RESULTS, skipping the studies in it")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume, check again the studies whose latest record in RESULTS failed",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=check_reports_handler)


def _fail(message: str, code: int = 1) -> int:
    print(f"medvlm check-reports: {message}", file=sys.stderr)
    return code


def build_checker(args: argparse.Namespace) -> tuple[Any, Any]:
    """The image checker and the model's versions for the records.

    Returns:
        ``(ImageChecker, ModelMeta)``.

    Raises:
        StepError: when the server is unreachable or the model cannot be prepared or loaded.
        UsageError: for an unreadable API key file.
    """
    from app.commands import model as model_cmd
    from app.reportcheck.job import ModelMeta
    from app.reportcheck.verdict import ImageChecker
    from medvlm import GenerationSettings, MedVLMError
    from medvlm.assistant import Assistant

    settings = GenerationSettings(max_new_tokens=24, ablation=True, abstain_threshold=args.abstain_threshold)
    builtin = False
    if args.server:
        from medvlm.http_backend import HTTPBackend

        backend: Any = HTTPBackend(
            args.server, api_key=model_cmd.read_api_key(args.api_key_file), timeout=args.timeout
        )
        notice = model_cmd.RESEARCH_NOTICE
    else:
        choice = model_cmd.choose_model(args.model, args.adapter)
        try:
            backend = model_cmd.load_backend(choice, args.device, args.threads)
        except MedVLMError as e:
            raise model_cmd.StepError(str(e)) from e
        if choice.scope is not None:
            settings = replace(settings, scope=choice.scope)
        builtin = choice.builtin
        notice = model_cmd.SYNTHETIC_NOTICE if builtin else model_cmd.RESEARCH_NOTICE
    try:
        info = backend.info()
    except MedVLMError as e:
        raise model_cmd.StepError(str(e)) from e
    checker = ImageChecker(Assistant(backend), settings, args.image_check, model_cmd.views_to_request)
    return checker, ModelMeta(info.model_version, info.adapter_version, builtin, notice)


def check_reports_handler(args: argparse.Namespace) -> int:
    """Run ``medvlm check-reports``: inputs, key, results file, database, model; the batch; the summary."""
    from app.reportcheck.inputs import ReportsFileError, read_reports
    from app.reportcheck.job import JobError, ResultsFile
    from data_prep.errors import PseudonymKeyError
    from data_prep.pseudonym import resolve_key

    if not args.studies.is_dir():
        return _fail("--studies must be a folder (a folder per study)", 2)
    try:
        entries = read_reports(args.reports)
        key = resolve_key()
    except ReportsFileError as e:
        return _fail(str(e))
    except PseudonymKeyError as e:
        return _fail(f"the pseudonym key: {e}")
    results = ResultsFile(args.out)
    try:
        with results.lock():
            return _locked_run(args, entries, key, results)
    except JobError as e:
        return _fail(str(e), 2)


def _locked_run(args: argparse.Namespace, entries: list[Any], key: Any, results: Any) -> int:
    """The run, with the results file locked: done ids, database, model, the batch, the summary.

    Raises:
        JobError: when the results file already holds results and ``--resume`` was not given.
    """
    from app.commands import model as model_cmd
    from app.commands.db import database_url
    from app.commands.web import StartError
    from app.reportcheck.audit import open_recorder
    from app.reportcheck.inputs import study_id
    from app.reportcheck.job import ModelMeta, run_job, summarize
    from app.store import StoreError

    if args.retry_failed and not args.resume:
        return _fail("--retry-failed continues a results file: give --resume too", 2)
    done = results.prepare(resume=args.resume, retry_failed=args.retry_failed)
    pending = any(study_id(key, e) not in done for e in entries)
    try:
        recorder = None if args.no_db else open_recorder(database_url(args.db_url), key)
    except (StartError, StoreError) as e:
        return _fail(f"the database: {e}")
    checker, meta = None, ModelMeta()
    if args.image_check != "none" and pending:
        try:
            checker, meta = build_checker(args)
        except model_cmd.UsageError as e:
            return _fail(str(e), 2)
        except model_cmd.StepError as e:
            return _fail(str(e))
    run = run_job(
        entries,
        studies_dir=args.studies,
        results=results,
        key=key,
        checker=checker,
        recorder=recorder,
        meta=meta,
        done=done,
        limit=args.limit,
    )
    summary = summarize(results.records(), run)
    summary["notice"] = meta.notice
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 1 if summary["failed"] or summary["not_recorded"] else 0


def format_summary(summary: dict[str, Any]) -> str:
    """The text table of a summary (:func:`app.reportcheck.job.summarize`)."""
    run = summary["this_run"]
    lines = [
        f"{summary['studies']} studies: {summary['checked']} checked, {summary['failed']} failed "
        f"(this run: {run['checked']} checked, {run['failed']} failed, {run['skipped']} skipped, "
        f"{run['duplicates']} duplicate rows)",
        "",
        f"{'verdict':<20}{'studies':>8}",
    ]
    lines += [f"{v:<20}{n:>8}" for v, n in summary["verdicts"].items()]
    if summary["error_types"]:
        lines += ["", f"{'error type':<20}{'studies':>8}"]
        lines += [f"{t:<20}{n:>8}" for t, n in summary["error_types"].items()]
    if summary["possible_error_types"]:
        lines += ["", f"{'possible (ungrounded)':<22}{'studies':>6}"]
        lines += [f"{t:<22}{n:>6}" for t, n in summary["possible_error_types"].items()]
    if summary["not_recorded"]:
        lines += ["", f"{summary['not_recorded']} checked studies are not recorded in the database"]
    if summary["failures"]:
        lines += ["", "failed studies:"]
        lines += [f"  row {f['row']:<6} {f['study_id']}  {f['error']}" for f in summary["failures"]]
    lines += ["", str(summary["notice"])]
    return "\n".join(lines)
