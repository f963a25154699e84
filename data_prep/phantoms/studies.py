"""One synthetic study in three steps: plan (ground truth), render (pixels), finish (text).

Planning and finishing update per-split balancing counters and so run in order in one process;
rendering depends only on its :class:`RenderJob` (ground truth plus its own seed) and can run in
worker processes. Each study draws from three independent streams:
``default_rng([seed, i, 0])`` for ground truth, ``[seed, i, 1]`` for rendering and
``[seed, i, 2]`` for text, so parallel and serial runs give identical results.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.phantoms.catalogue import Catalogue
from data_prep.phantoms.ct import REGION_FINDINGS, CtRender, render_ct, sample_ct_findings
from data_prep.phantoms.cxr import CxrAnatomy, CxrRender, render_cxr, sample_anatomy, with_ctr
from data_prep.phantoms.pathology import PatchRender, render_patch
from data_prep.phantoms.qa import QA, Balancer, caption, probe_pairs, questions
from data_prep.phantoms.report_errors import InjectedError, error_record
from data_prep.phantoms.reports import Report, write_report
from data_prep.phantoms.spec import StudySpec, balance_attributes, sample_findings

SPLITS = ("train", "val", "test")
PATIENT_OFFSET = 10**9

Render = CxrRender | CtRender | PatchRender


@dataclass
class Sample:
    """One generated study, in memory.

    Attributes:
        spec: ground truth.
        split: ``train``, ``val`` or ``test`` (by patient).
        pixels: float32 in [0, 1]: ``(size, size)`` greyscale (MONOCHROME2 meaning) for cxr and
            ct, ``(size, size, 3)`` RGB for slide.
        caption: one-sentence caption.
        qas: question-answer pairs.
        probes: ProbMed-style probe records (without ``image``).
        render: renderer geometry (masks, boxes) for checks and grounding.
        anatomy: the patient's chest anatomy (radiographs).
    """

    spec: StudySpec
    split: str
    pixels: np.ndarray
    caption: str
    qas: list[QA]
    probes: list[dict[str, Any]]
    render: CxrRender | None = None
    anatomy: CxrAnatomy | None = None
    report: Report | None = None
    report_error: InjectedError | None = None
    ct: CtRender | None = None
    patch: PatchRender | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyState:
    """Per-run balancing counters (one set per split) and settings."""

    cat: Catalogue
    seed: int
    size: int
    balancers: dict[str, Balancer] = field(default_factory=lambda: {s: Balancer() for s in SPLITS})
    attr_counts: dict[str, Counter[tuple[str, str, str]]] = field(
        default_factory=lambda: {s: Counter() for s in SPLITS}
    )
    error_counts: dict[str, Counter[str]] = field(default_factory=lambda: {s: Counter() for s in SPLITS})


@dataclass(frozen=True)
class RenderJob:
    """Everything a renderer needs: picklable, independent of the balancing state.

    Attributes:
        spec: ground truth.
        split: the study's split.
        size: image side length.
        seed: seed sequence of the rendering stream.
        anatomy: chest anatomy (radiographs only).
        image_path: when set, the renderer also writes the model-ready PNG there.
        dicom_dir: when set, the renderer also writes the study's DICOM file, series or slide there.
    """

    spec: StudySpec
    split: str
    size: int
    seed: tuple[int, ...]
    anatomy: CxrAnatomy | None = None
    image_path: str = ""
    dicom_dir: str = ""


def plan_study(st: StudyState, index: int, patient: int, split: str, kind: str) -> RenderJob:
    """Draw a study's ground truth (balancing its attributes within the split).

    Args:
        st: run state (updated).
        index: study index.
        patient: patient index.
        split: the patient's split.
        kind: ``cxr``, ``ct`` or ``slide``.

    Returns:
        The render job.

    Raises:
        ValueError: on an unknown kind.
    """
    rng = np.random.default_rng([st.seed, index, 0])
    base = StudySpec(study_id=f"{kind}-{index:06d}", patient_id=f"P{patient:06d}", kind=kind, findings=())
    anatomy = None
    if kind == "cxr":
        findings = sample_findings(st.cat, kind, rng)
        region = "chest"
        anatomy = sample_anatomy(np.random.default_rng([st.seed, PATIENT_OFFSET + patient, 1]))
        if any(f.id == "cardiomegaly" for f in findings):
            anatomy = with_ctr(anatomy, float(rng.uniform(0.56, 0.66)))
    elif kind == "ct":
        region, findings = sample_ct_findings(st.cat, rng)
    elif kind == "slide":
        findings, region = sample_findings(st.cat, kind, rng), "tissue"
    else:
        raise ValueError(f"unknown study kind {kind!r}")
    findings = balance_attributes(findings, st.cat, st.attr_counts[split], rng)
    spec = replace(base, findings=findings, region=region)
    return RenderJob(spec=spec, split=split, size=st.size, seed=(st.seed, index, 1), anatomy=anatomy)


def write_png(path: str, pixels: np.ndarray) -> None:
    """Write float pixels in [0, 1] as an 8-bit PNG (greyscale, or RGB for ``(H, W, 3)``)."""
    from PIL import Image

    Image.fromarray(np.round(pixels * 255.0).astype(np.uint8)).save(path, compress_level=1)


def run_job(job: RenderJob) -> Render:
    """Render one study's pixels, and its PNG when ``job.image_path`` is set (worker-safe).

    Args:
        job: the render job.

    Returns:
        The kind's render object.

    Raises:
        ValueError: if the job cannot be rendered.
        OSError: if the PNG or DICOM cannot be written.
    """
    render = _render(job)
    if job.image_path:
        write_png(job.image_path, render.pixels)
    if job.dicom_dir:
        _write_dicom(Path(job.dicom_dir), job, render)
    return render


def _write_dicom(folder: Path, job: RenderJob, render: Render) -> None:
    from data_prep.phantoms.dicom_io import write_ct_series, write_cxr_dicom
    from data_prep.phantoms.pathology import write_slide

    spec = job.spec
    seed = job.seed[0]
    if isinstance(render, CtRender):
        write_ct_series(folder / spec.study_id, spec, render, seed=seed)
    elif isinstance(render, PatchRender):
        write_slide(folder / f"{spec.study_id}.svs", render, np.random.default_rng([*job.seed[:2], 9]))
    else:
        write_cxr_dicom(folder / f"{spec.study_id}.dcm", spec, render.pixels, seed=seed)


def _render(job: RenderJob) -> Render:
    rng = np.random.default_rng(list(job.seed))
    spec = job.spec
    if spec.kind == "cxr":
        if job.anatomy is None:
            raise ValueError("a radiograph job needs an anatomy")
        return render_cxr(job.anatomy, spec.findings, job.size, rng)
    if spec.kind == "ct":
        return render_ct(spec.region, spec.findings, job.size, rng)
    return render_patch(spec.findings, job.size, rng)


def finish_study(st: StudyState, job: RenderJob, render: Render) -> Sample:
    """Write the text of a rendered study (balancing answers within the split).

    Args:
        st: run state (updated).
        job: the study's render job.
        render: its rendered pixels.

    Returns:
        The complete sample.
    """
    spec, split = job.spec, job.split
    index = int(spec.study_id.rsplit("-", 1)[1])
    rng = np.random.default_rng([st.seed, index, 2])
    pool = list(REGION_FINDINGS[spec.region]) if spec.kind == "ct" else None
    sample = Sample(
        spec=spec,
        split=split,
        pixels=render.pixels,
        caption=caption(spec, rng),
        qas=questions(spec, st.cat, rng, st.balancers[split], pool),
        probes=probe_pairs(spec, st.cat, rng, pool),
        anatomy=job.anatomy,
    )
    if isinstance(render, CxrRender):
        sample.render = render
        sample.report = write_report(spec, rng)
        sample.report_error = error_record(sample.report, rng, st.cat, st.error_counts[split])
    elif isinstance(render, CtRender):
        sample.ct = render
        sample.report = write_report(spec, rng)
        sample.report_error = error_record(sample.report, rng, st.cat, st.error_counts[split])
    else:
        sample.patch = render
    return sample
