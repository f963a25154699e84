"""The export a hospital hands over: a folder per study and a file mapping folder → report text.

The reports file is CSV (a header row with a study column and a report column) or JSONL (one
object per line with the same keys). Study column names accepted: ``study``, ``study_folder``,
``folder``; report column names: ``report``, ``report_text``, ``text``. Folder names often hold
PHI (a patient name, an accession number): they are used to find the folder and to derive the
pseudonymous study id, and never leave this module in an output, a log line or an error message.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_prep.pseudonym import PseudonymKey, study_pseudonym

STUDY_KEYS: tuple[str, ...] = ("study", "study_folder", "folder")
REPORT_KEYS: tuple[str, ...] = ("report", "report_text", "text")
MAX_REPORT_CHARS = 6_000  # the Store keeps texts of up to 8,000 characters, question included
# An absolute path: a separator not inside a word, then at least one more separator
# ("/data/x/a.dcm", "C:\\x\\a.dcm"), never a window such as "C15000/W30000".
_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[\\/](?:[^\s'\"\\/]+[\\/])+[^\s'\"]*")


class ReportsFileError(Exception):
    """The reports file cannot be read at all (a usage error: nothing is checked)."""


@dataclass(frozen=True, repr=False)
class StudyEntry:
    """One row of the reports file.

    Attributes:
        row: 1-based data row (CSV: after the header; JSONL: the line number); safe to output.
        folder: the study folder's name as exported (may hold PHI: never output or logged).
        report: the report text (may be empty: the job turns that into a failed record).
        problem: why the row itself is unusable (no folder name, a malformed line), or None.
    """

    row: int
    folder: str
    report: str
    problem: str | None = None

    def __repr__(self) -> str:  # the folder name and report may hold PHI
        return f"StudyEntry(row={self.row})"


def _pick(record: dict[str, object], keys: Iterable[str]) -> str | None:
    lowered = {str(k).strip().lower(): v for k, v in record.items()}
    for key in keys:
        if key in lowered and lowered[key] is not None:
            return str(lowered[key])
    return None


def _entry(row: int, record: dict[str, object]) -> StudyEntry:
    folder = _pick(record, STUDY_KEYS)
    report = _pick(record, REPORT_KEYS)
    if folder is None or not folder.strip():
        return StudyEntry(row, "", report or "", f"row {row} names no study folder")
    return StudyEntry(row, folder.strip(), report or "")


def _read_csv(text: str) -> list[StudyEntry]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted fields keep their line breaks
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if not any(k in fields for k in STUDY_KEYS) or not any(k in fields for k in REPORT_KEYS):
        raise ReportsFileError(
            f"the CSV header needs a study column ({', '.join(STUDY_KEYS)}) "
            f"and a report column ({', '.join(REPORT_KEYS)})"
        )
    return [_entry(i, dict(r)) for i, r in enumerate(reader, start=1)]


def _read_jsonl(text: str) -> list[StudyEntry]:
    entries = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            entries.append(StudyEntry(i, "", "", f"line {i} of the reports file is not valid JSON"))
            continue
        if not isinstance(record, dict):
            entries.append(StudyEntry(i, "", "", f"line {i} of the reports file is not a JSON object"))
            continue
        entries.append(_entry(i, record))
    return entries


def read_reports(path: Path) -> list[StudyEntry]:
    """Read the reports file (``.csv``, else JSON lines).

    Args:
        path: the CSV or JSONL file.

    Returns:
        One entry per row, in file order; unusable rows carry ``problem``.

    Raises:
        ReportsFileError: when the file cannot be read, is not UTF-8, or a CSV lacks the columns.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise ReportsFileError("the reports file does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ReportsFileError(f"the reports file cannot be read ({type(e).__name__})") from e
    if path.suffix.lower() == ".csv":
        try:
            return _read_csv(text)
        except csv.Error as e:
            raise ReportsFileError("the reports file is not valid CSV") from e
    return _read_jsonl(text)


def study_id(key: PseudonymKey, entry: StudyEntry) -> str:
    """The pseudonymous study id of an entry: the keyed hash of its folder name.

    The same folder name gives the same id under the same site key, so a resumed job skips what
    it has done; a folder named after the StudyInstanceUID gets the id ``medvlm ingest`` gives.
    Rows without a folder name get an id from their row number.
    """
    return study_pseudonym(key, entry.folder or f"reportcheck-row:{entry.row}")


def study_path(studies_dir: Path, entry: StudyEntry) -> Path:
    """The study's folder (or single file) inside the export.

    Raises:
        ValueError: when the name is not a plain name inside ``studies_dir`` (``..``, a path), or
            nothing of that name exists. The message never quotes the name.
    """
    name = entry.folder
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError("the study folder name is not a plain folder name")
    path = studies_dir / name
    if not path.exists():
        raise ValueError("the study folder does not exist in the export")
    return path


def scrub_names(message: str, path: Path) -> str:
    """``message`` with the study's folder name, its files' names and any absolute path removed.

    data_prep names files inside a folder by position, but a message about the folder itself, or
    from a library, may still quote a name; this is the last line of defence before output.
    """
    names = {str(path), path.name}
    if path.is_dir():
        with contextlib.suppress(OSError):  # an unreadable folder fails later, with its own message
            names.update(p.name for p in path.rglob("*"))
    for name in sorted((n for n in names if len(n) >= 3), key=len, reverse=True):
        message = message.replace(name, "the study")
    return _ABS_PATH.sub("a path", message)
