"""Generate synthetic studies with ground truth: the in-memory iterator and the on-disk dataset.

Layout written by :func:`generate` (see docs/PHANTOMS.md)::

    DIR/manifest.json
    DIR/images/<study_id>.png            model-ready view (8-bit, size x size; greyscale, RGB for slides)
    DIR/dicom/<study_id>.dcm             radiograph, unless --no-dicom
    DIR/dicom/<study_id>/slice_NNN.dcm   CT series
    DIR/dicom/<study_id>.svs             pyramidal slide
    DIR/{train,val,test}/{captions,vqa,probes,reports,report_errors}.jsonl

Everything is a deterministic function of ``(n, seed, kinds, size)`` (see
:mod:`data_prep.phantoms.studies` for the random streams), whatever the number of workers, so
the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from data_prep.phantoms.catalogue import Catalogue, load_catalogue
from data_prep.phantoms.report_errors import error_json
from data_prep.phantoms.studies import (
    PATIENT_OFFSET,
    SPLITS,
    Render,
    RenderJob,
    Sample,
    StudyState,
    finish_study,
    plan_study,
    run_job,
)

__all__ = [
    "GENERATOR_VERSION",
    "Manifest",
    "OutputPathError",
    "PhantomError",
    "Sample",
    "generate",
    "iter_samples",
    "prepare_out_dir",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "phantoms-0.4.0"
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
_GOLDEN = (5**0.5 - 1) / 2
SUPPORTED_KINDS = ("cxr", "ct", "slide")
FILES = ("captions", "vqa", "probes", "reports", "report_errors")


class PhantomError(RuntimeError):
    """Generation failed."""


class OutputPathError(PhantomError):
    """The output folder cannot be used: it is a file, cannot be created, or holds a dataset."""


@dataclass(frozen=True)
class Manifest:
    """What :func:`generate` wrote (also ``DIR/manifest.json``)."""

    generator_version: str
    seed: int
    n: int
    kinds: tuple[str, ...]
    size: int
    dicom: bool
    splits: dict[str, list[str]]
    patients: dict[str, list[str]]
    finding_counts: dict[str, dict[str, int]]
    answer_counts: dict[str, dict[str, dict[str, int]]]
    files: dict[str, list[str]]

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys, no timestamps)."""
        return json.dumps(self.__dict__, indent=2, sort_keys=True, default=list) + "\n"


def _patient_plan(n: int, seed: int) -> list[tuple[int, str]]:
    """Assign each of ``n`` studies to a patient (1-3 studies each) and each patient to a split.

    Splits follow a golden-ratio (low-discrepancy) sequence from a seeded start, so even a small
    dataset gets close to the 80/10/10 patient fractions and non-empty val and test splits.
    """
    plan: list[tuple[int, str]] = []
    start = float(np.random.default_rng([seed, PATIENT_OFFSET - 1]).uniform())
    p = 0
    while len(plan) < n:
        prng = np.random.default_rng([seed, PATIENT_OFFSET + p])
        k = int(prng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        u = (start + p * _GOLDEN) % 1.0
        split = (
            SPLITS[0] if u < SPLIT_FRACTIONS[0] else SPLITS[1] if u < sum(SPLIT_FRACTIONS[:2]) else SPLITS[2]
        )
        plan += [(p, split)] * k
        p += 1
    return plan[:n]


def iter_samples(
    n: int,
    seed: int,
    kinds: tuple[str, ...] = ("cxr",),
    size: int = 128,
    catalogue: Catalogue | None = None,
    workers: int = 1,
    image_dir: Path | None = None,
    dicom_dir: Path | None = None,
) -> Iterator[Sample]:
    """Yield ``n`` synthetic studies in a deterministic order.

    Args:
        n: number of studies.
        seed: master seed.
        kinds: study kinds to cycle through (sample ``i`` has kind ``kinds[i % len(kinds)]``).
        size: image side length in pixels.
        catalogue: findings catalogue; the packaged one when None.
        workers: processes that render pixels (1: render in this process). Results are
            identical for any number of workers.
        image_dir: when set, each study's model-ready view is also written there as
            ``<study_id>.png`` (by the rendering process).
        dicom_dir: when set, each study is also written there as DICOM (``<id>.dcm`` or a
            ``<id>/`` series) or a pyramidal slide (``<id>.svs``), by the rendering process.

    Yields:
        One :class:`Sample` per study.

    Raises:
        PhantomError: on an unsupported kind or bad arguments.
    """
    if n < 0 or size < 16:
        raise PhantomError(f"need n >= 0 and size >= 16, got n={n}, size={size}")
    bad = [k for k in kinds if k not in SUPPORTED_KINDS]
    if bad or not kinds:
        raise PhantomError(f"unsupported kinds {bad or kinds}; supported: {SUPPORTED_KINDS}")
    state = StudyState(cat=catalogue or load_catalogue(), seed=seed, size=size)
    plan = _patient_plan(n, seed)
    jobs = (
        _with_outputs(plan_study(state, i, patient, split, kinds[i % len(kinds)]), image_dir, dicom_dir)
        for i, (patient, split) in enumerate(plan)
    )
    if workers <= 1:
        for job in jobs:
            yield finish_study(state, job, _run(job))
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[RenderJob, Future[Render]]] = deque()
        for job in jobs:
            pending.append((job, pool.submit(_run, job)))
            if len(pending) >= 4 * workers:
                done_job, fut = pending.popleft()
                yield finish_study(state, done_job, fut.result())
        while pending:
            done_job, fut = pending.popleft()
            yield finish_study(state, done_job, fut.result())


def _with_outputs(job: RenderJob, image_dir: Path | None, dicom_dir: Path | None) -> RenderJob:
    sid = job.spec.study_id
    return replace(
        job,
        image_path=str(image_dir / f"{sid}.png") if image_dir is not None else "",
        dicom_dir=str(dicom_dir) if dicom_dir is not None else "",
    )


def _run(job: RenderJob) -> Render:
    try:
        return run_job(job)
    except (ValueError, ArithmeticError, OSError) as e:
        raise PhantomError(f"rendering study {job.spec.study_id}: {e}") from e


def _records(sample: Sample, image: str) -> dict[str, list[dict[str, Any]]]:
    sid = sample.spec.study_id
    common = {"study_id": sid, "patient_id": sample.spec.patient_id, "modality": sample.spec.kind}
    captions = [
        {
            "id": sid,
            "image": image,
            "caption": sample.caption,
            **common,
            "findings": [f.to_json() for f in sample.spec.findings],
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe the image briefly."},
                {"from": "gpt", "value": sample.caption},
            ],
        }
    ]
    vqa = [
        {
            "id": f"{sid}-q{j}",
            "image": image,
            **common,
            "conversations": [
                {"from": "human", "value": f"<image>\n{qa.question}"},
                {"from": "gpt", "value": qa.answer},
            ],
            "question": qa.question,
            "answer": qa.answer,
            "question_type": qa.question_type,
            "template": qa.template,
            "finding": qa.finding,
            "options": list(qa.options),
        }
        for j, qa in enumerate(sample.qas)
    ]
    probes = [{**p, "image": image, **common} for p in sample.probes]
    out = {"captions": captions, "vqa": vqa, "probes": probes}
    if sample.report is not None:
        r = sample.report
        out["reports"] = [
            {
                "id": sid,
                "image": image,
                **common,
                "report": r.text,
                "findings_text": r.findings_text,
                "impression_text": r.impression_text,
                "conversations": [
                    {"from": "human", "value": "<image>\nWrite the radiology report for this image."},
                    {"from": "gpt", "value": r.text},
                ],
            }
        ]
    if sample.report is not None and sample.report_error is not None:
        rec = error_json(sample.report_error, sample.report.text)
        question = (
            "<image>\nCompare this report with the image. Does the report contain an error? "
            "Answer yes or no.\n\nReport:\n" + rec["report"]
        )
        answer = "yes" if rec["has_error"] else "no"
        out["report_errors"] = [
            {
                "id": f"{sid}-e",
                "image": image,
                **common,
                **rec,
                "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
            }
        ]
    return out


@dataclass
class _Tally:
    """Per-split study ids, patients, finding counts and closed-answer counts, in study order."""

    splits: dict[str, list[str]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    patients: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    findings: dict[str, Counter[str]] = field(default_factory=lambda: {s: Counter() for s in SPLITS})
    answers: dict[str, dict[str, Counter[str]]] = field(default_factory=lambda: {s: {} for s in SPLITS})

    def add(self, sample: Sample) -> None:
        """Count one study."""
        s = sample.split
        self.splits[s].append(sample.spec.study_id)
        self.patients[s].add(sample.spec.patient_id)
        self.findings[s].update(sample.spec.ids())
        for qa in sample.qas:
            if qa.question_type == "closed":
                self.answers[s].setdefault(qa.template, Counter())[qa.answer] += 1

    def manifest(self, *, seed: int, n: int, kinds: tuple[str, ...], size: int, dicom: bool) -> Manifest:
        """The manifest of the counted studies (sorted, so its JSON is deterministic)."""
        return Manifest(
            generator_version=GENERATOR_VERSION,
            seed=seed,
            n=n,
            kinds=kinds,
            size=size,
            dicom=dicom,
            splits=self.splits,
            patients={s: sorted(p) for s, p in self.patients.items()},
            finding_counts={s: dict(sorted(c.items())) for s, c in self.findings.items()},
            answer_counts={
                s: {t: dict(sorted(c.items())) for t, c in sorted(a.items())} for s, a in self.answers.items()
            },
            files={s: [f"{s}/{name}.jsonl" for name in FILES] for s in SPLITS},
        )


def _open_split_files(out_dir: Path, stack: ExitStack) -> dict[tuple[str, str], TextIO]:
    """Create the split folders and open their JSONL files (closed by ``stack``).

    Raises:
        OSError: if a folder or file cannot be created.
    """
    handles: dict[tuple[str, str], TextIO] = {}
    for s in SPLITS:
        (out_dir / s).mkdir(exist_ok=True)
        for name in FILES:
            path = out_dir / s / f"{name}.jsonl"
            handles[(s, name)] = stack.enter_context(path.open("w", encoding="utf-8"))
    return handles


def _dataset_entries(out_dir: Path) -> list[str]:
    """Names under ``out_dir`` that :func:`generate` would overwrite and that already hold data."""
    found = []
    for name in ("manifest.json", "images", "dicom", *SPLITS):
        path = out_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def prepare_out_dir(out_dir: Path, dicom: bool, overwrite: bool) -> None:
    """Check the output folder and create it with its ``images/`` (and ``dicom/``) folders.

    Args:
        out_dir: output folder; created with its parents when missing.
        dicom: also create ``dicom/``.
        overwrite: allow a folder that already holds a dataset (its files of the same names are
            overwritten; other files are left alone).

    Raises:
        OutputPathError: if ``out_dir`` is a file, cannot be created, or already holds a
            ``manifest.json``, images, DICOM files or split folders and ``overwrite`` is False.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputPathError(f"the output path {out_dir} is a file, not a folder")
    if out_dir.is_dir() and not overwrite:
        found = _dataset_entries(out_dir)
        if found:
            raise OutputPathError(
                f"the output folder {out_dir} already holds a dataset ({', '.join(found)});"
                " choose an empty folder or pass --force to overwrite it"
            )
    try:
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        if dicom:
            (out_dir / "dicom").mkdir(exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create the output folder {out_dir}: {e.strerror or e}") from e


def generate(
    out_dir: Path,
    n: int,
    seed: int,
    kinds: tuple[str, ...] = ("cxr",),
    size: int = 128,
    dicom: bool = True,
    workers: int = 1,
    overwrite: bool = True,
) -> Manifest:
    """Write a synthetic dataset to ``out_dir``.

    Args:
        out_dir: output folder (created with its parents when missing).
        n: number of studies.
        seed: master seed.
        kinds: study kinds.
        size: image side length in pixels for ``images/``.
        dicom: also write a DICOM file (radiograph), series folder (CT) or ``.svs`` (slide) per study.
        workers: rendering processes (the output does not depend on it).
        overwrite: when False, refuse a folder that already holds a dataset (the command line
            passes ``--force``); when True, files with the same names are overwritten.

    Returns:
        The manifest, also written to ``out_dir/manifest.json``.

    Raises:
        OutputPathError: if ``out_dir`` is a file, cannot be created, or holds a dataset and
            ``overwrite`` is False.
        PhantomError: on bad arguments or a failed render or write.
    """
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, dicom, overwrite)
    tally = _Tally()
    samples = iter_samples(
        n,
        seed,
        kinds,
        size,
        workers=workers,
        image_dir=out_dir / "images",
        dicom_dir=out_dir / "dicom" if dicom else None,
    )
    try:
        with ExitStack() as stack:
            handles = _open_split_files(out_dir, stack)
            for sample in samples:
                image = f"images/{sample.spec.study_id}.png"
                for name, recs in _records(sample, image).items():
                    for rec in recs:
                        handles[(sample.split, name)].write(json.dumps(rec, sort_keys=True) + "\n")
                tally.add(sample)
    except OSError as e:
        raise PhantomError(f"writing the dataset to {out_dir}: {e.strerror or e}") from e
    manifest = tally.manifest(seed=seed, n=n, kinds=tuple(kinds), size=size, dicom=dicom)
    try:
        (out_dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    except OSError as e:
        raise PhantomError(f"writing the manifest to {out_dir}: {e.strerror or e}") from e
    logger.info("wrote %d studies to %s", n, out_dir)
    return manifest
