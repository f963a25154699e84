"""The batch loop of ``medvlm check-reports``: one JSON line per study, resumable, never stopped by one study.

Each result is appended as one whole line with a single ``write`` and ``fsync``: a crash leaves at
most an incomplete last line, which ``--resume`` drops before it continues. Study ids already in
the results file are skipped; with ``--retry-failed`` those whose latest record failed are checked
again, and their new record supersedes the old one (the file keeps both; summaries read the
latest). A bad study (no folder, an empty report, a corrupt DICOM file, a model failure) gets a
record with ``status: "failed"`` and a one-sentence ``error``, and the job goes on. Nothing written
or logged names a folder, a file or a patient: studies are known by their pseudonymous id and their
row in the reports file.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.reportcheck.audit import Recorder
from app.reportcheck.consistency import RULES_VERSION, check_report_text
from app.reportcheck.inputs import MAX_REPORT_CHARS, StudyEntry, scrub_names, study_id, study_path
from app.reportcheck.verdict import ImageCheck, ImageChecker, combine
from app.store import StoreError
from data_prep.errors import IngestError, one_sentence
from data_prep.pseudonym import PseudonymKey
from medvlm import MedVLMError

logger = logging.getLogger(__name__)


class JobError(Exception):
    """The job cannot start (the results file exists without ``--resume``, or cannot be read)."""


class StudyFailure(Exception):
    """One study cannot be checked; the message is one sentence without names."""


@dataclass(frozen=True)
class ModelMeta:
    """Which model checks the images, written into every record.

    Attributes:
        model_version: ``ModelInfo.model_version``, None when no image check runs.
        adapter_version: the adapter's version, None without one.
        synthetic_only: the built-in model, trained on synthetic studies only.
        notice: the research (or synthetic-data) notice.
    """

    model_version: str | None = None
    adapter_version: str | None = None
    synthetic_only: bool = False
    notice: str = "Research software, not for clinical use."


@dataclass
class JobRun:
    """What one run of the job did (the whole file's counts are in :func:`summarize`)."""

    checked: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    not_recorded: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


class ResultsFile:
    """The JSONL results file, appended one whole line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive advisory lock on the file (created when absent) for one run.

        Raises:
            JobError: when another run holds it, or the file cannot be created.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise JobError(f"the results file cannot be created ({type(e).__name__})") from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise JobError("another check-reports run is writing this results file") from e
            yield
        finally:
            os.close(fd)  # releases the lock

    def prepare(self, *, resume: bool, retry_failed: bool = False) -> set[str]:
        """Check the file may be written, repair an incomplete last line, and return the done ids.

        Args:
            resume: continue a file that holds results.
            retry_failed: leave out of the done ids the studies whose latest record failed.

        Raises:
            JobError: when the file holds results and ``resume`` is False, or cannot be read.
        """
        try:
            data = self.path.read_bytes() if self.path.exists() else b""
        except OSError as e:
            raise JobError(f"the results file cannot be read ({type(e).__name__})") from e
        if data.strip() and not resume:
            raise JobError("the results file already holds results; pass --resume to continue it")
        if data and not data.endswith(b"\n"):
            logger.warning("dropping an incomplete last line of the results file (an interrupted run)")
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
        latest = {str(r["study_id"]): r for r in self.records() if "study_id" in r}
        return {sid for sid, r in latest.items() if not (retry_failed and r.get("status") == "failed")}

    def records(self) -> list[dict[str, Any]]:
        """Every complete record in the file, in order (unreadable lines are skipped and counted)."""
        if not self.path.exists():
            return []
        out, bad = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict):
                out.append(record)
        if bad:
            logger.warning("%d line(s) of the results file are not JSON and were skipped", bad)
        return out

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line: a single write, then fsync."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _model_fields(meta: ModelMeta) -> dict[str, Any]:
    return {
        "model": meta.model_version,
        "adapter": meta.adapter_version,
        "synthetic_only_model": meta.synthetic_only,
        "rules": RULES_VERSION,
        "notice": meta.notice,
    }


def _load_views(path: Path, key: PseudonymKey) -> list[Any]:
    from data_prep.views import load_views

    try:
        views: list[Any] = load_views(path, key=key)
    except (IngestError, ValueError, OSError) as e:
        raise StudyFailure(f"reading the images failed: {scrub_names(one_sentence(e), path)}") from e
    return views


def _image_json(image: ImageCheck | None) -> dict[str, Any]:
    if image is None:
        return {"mode": "none", "refused": False, "answers": []}  # rules only
    used = [a for a in image.answers if not a.refused and not a.abstained]
    return {
        "mode": image.mode,
        "refused": image.refused,
        "grounded_answers": sum(a.grounded is True for a in used),
        "ungrounded_answers": sum(a.grounded is False for a in used),
        "abstained_answers": sum(a.abstained for a in image.answers),
        "answers": [a.as_json() for a in image.answers],
    }


def check_study(
    entry: StudyEntry,
    sid: str,
    *,
    studies_dir: Path,
    key: PseudonymKey,
    checker: ImageChecker | None,
    recorder: Recorder | None,
) -> dict[str, Any]:
    """Check one study: rules on the report, then its images; record it in the Store.

    Returns:
        The ``checked`` record (without the model fields).

    Raises:
        StudyFailure: when the study cannot be checked (the message is safe to output).
    """
    if entry.problem:
        raise StudyFailure(entry.problem)
    if not entry.report.strip():
        raise StudyFailure("the report is empty")
    if len(entry.report) > MAX_REPORT_CHARS:
        raise StudyFailure(f"the report is longer than {MAX_REPORT_CHARS} characters")
    try:
        path = study_path(studies_dir, entry)
    except ValueError as e:
        raise StudyFailure(str(e)) from e
    consistency = check_report_text(entry.report)
    image: ImageCheck | None = None
    views: list[Any] = []
    if checker is not None:
        views = _load_views(path, key)
        try:
            image = checker.check(views, consistency.report)
        except MedVLMError as e:
            raise StudyFailure(f"the model failed: {scrub_names(one_sentence(e), path)}") from e
    verdict = combine(consistency, image)
    # The DICOM study's own pseudonym (from its StudyInstanceUID, as ingest and the web app give
    # it): the database files the checks under it, beside the study's other interactions.
    dicom_id = next((str(v.study_id) for v in views if getattr(v, "study_id", None)), None)
    record: dict[str, Any] = {
        "study_id": sid,
        "dicom_study_id": dicom_id,
        "row": entry.row,
        "status": "checked",
        "verdict": verdict.verdict,
        "has_error": verdict.has_error,
        "error_type": verdict.error_type,
        "error_types": verdict.error_types,
        "possible_error_types": verdict.possible_error_types,
        "evidence": verdict.evidence,
        "grounded": verdict.grounded,
        "image_checked": image is not None and not image.refused,
        "image_check": _image_json(image),
        "views": [scrub_names(str(getattr(v, "description", "")), path) for v in views],
        "warnings": list(
            dict.fromkeys(scrub_names(str(w), path) for v in views for w in getattr(v, "warnings", ()))
        ),
        "audit": None,
    }
    if recorder is not None:
        try:
            record["audit"] = {"recorded": recorder.record(dicom_id or sid, consistency, image)}
        except StoreError as e:
            logger.warning("row %d (%s): recording in the database failed", entry.row, sid)
            record["audit"] = {"recorded": 0, "error": str(e)}
    return record


def run_job(
    entries: Iterable[StudyEntry],
    *,
    studies_dir: Path,
    results: ResultsFile,
    key: PseudonymKey,
    checker: ImageChecker | None,
    recorder: Recorder | None,
    meta: ModelMeta,
    done: set[str],
    limit: int | None = None,
) -> JobRun:
    """Check every entry not in ``done``, appending one record per study to ``results``.

    Args:
        entries: the reports file's rows.
        studies_dir: the export's study folders.
        results: the results file (``prepare`` already called; it gave ``done``).
        key: the site's pseudonym key.
        checker: the image checks, None for rules only.
        recorder: the Store writer, None without a database.
        meta: the model's versions for every record.
        done: study ids already in the results file; updated as studies are written.
        limit: check at most this many studies in this run.

    Returns:
        This run's counts.
    """
    run = JobRun()
    seen: set[str] = set()
    for entry in entries:
        sid = study_id(key, entry)
        if sid in seen:
            run.duplicates += 1
            logger.warning("row %d repeats the study of an earlier row; skipped", entry.row)
            continue
        seen.add(sid)
        if sid in done:
            run.skipped += 1
            continue
        if limit is not None and run.checked + run.failed >= limit:
            break
        try:
            record = check_study(
                entry, sid, studies_dir=studies_dir, key=key, checker=checker, recorder=recorder
            )
            record.update(_model_fields(meta), checked_at=_now())
            run.checked += 1
            if record["audit"] is not None and not record["audit"]["recorded"]:
                run.not_recorded += 1
            logger.info("row %d (%s): %s", entry.row, sid, record["verdict"])
        except Exception as e:  # one study must never stop the job; the message names no file
            message = str(e) if isinstance(e, StudyFailure) else f"unexpected {type(e).__name__}"
            message = message if message.endswith(".") else message + "."
            record = {"study_id": sid, "row": entry.row, "status": "failed", "error": message}
            record.update(_model_fields(meta), checked_at=_now())
            run.failed += 1
            run.failures.append({"study_id": sid, "row": entry.row, "error": message})
            logger.warning("row %d (%s): failed: %s", entry.row, sid, message)
        results.append(record)
        done.add(sid)
    return run


def summarize(records: list[dict[str, Any]], run: JobRun) -> dict[str, Any]:
    """Counts over the whole results file (earlier runs included) and this run.

    Returns:
        ``studies``, ``checked``, ``failed``, ``verdicts``, ``error_types`` (stated as fact),
        ``possible_error_types`` (from ungrounded answers only), ``failures`` (study id,
        row, error), ``not_recorded`` and ``this_run``.
    """
    latest = {str(r.get("study_id")): r for r in records}
    checked = [r for r in latest.values() if r.get("status") == "checked"]
    failed = [r for r in latest.values() if r.get("status") == "failed"]
    verdicts = Counter(str(r.get("verdict")) for r in checked)
    types = Counter(t for r in checked for t in r.get("error_types", []))
    possible = Counter(t for r in checked for t in r.get("possible_error_types", []))
    return {
        "studies": len(latest),
        "checked": len(checked),
        "failed": len(failed),
        "verdicts": {v: verdicts.get(v, 0) for v in ("error", "possible_error", "no_error")},
        "error_types": dict(sorted(types.items())),
        "possible_error_types": dict(sorted(possible.items())),
        "not_recorded": sum(1 for r in checked if r.get("audit") and not r["audit"].get("recorded")),
        "failures": [
            {"study_id": r.get("study_id"), "row": r.get("row"), "error": r.get("error")} for r in failed
        ],
        "this_run": {
            "checked": run.checked,
            "failed": run.failed,
            "skipped": run.skipped,
            "duplicates": run.duplicates,
        },
    }
