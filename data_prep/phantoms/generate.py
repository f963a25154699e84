"""Generate synthetic studies with ground truth: the in-memory iterator and the on-disk dataset.

Layout written by :func:`generate` (see docs/PHANTOMS.md)::

    DIR/manifest.json
    DIR/images/<study_id>.png            model-ready view (8-bit greyscale, size x size)
    DIR/dicom/<study_id>.dcm             unless --no-dicom
    DIR/{train,val,test}/{captions,vqa,probes,reports,report_errors}.jsonl

Everything is a deterministic function of ``(n, seed, kinds, size)``: sample ``i`` draws from
``numpy.random.default_rng([seed, i])`` and patient ``p`` from ``default_rng([seed, 10**9 + p])``,
so the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.phantoms.catalogue import Catalogue, load_catalogue
from data_prep.phantoms.ct import REGION_FINDINGS, CtRender, render_ct, sample_ct_findings
from data_prep.phantoms.cxr import CxrAnatomy, CxrRender, render_cxr, sample_anatomy, with_ctr
from data_prep.phantoms.pathology import PatchRender, render_patch
from data_prep.phantoms.qa import QA, Balancer, caption, probe_pairs, questions
from data_prep.phantoms.report_errors import InjectedError, error_json, error_record
from data_prep.phantoms.reports import Report, write_report
from data_prep.phantoms.spec import StudySpec, balance_attributes, sample_findings

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "phantoms-0.1.0"
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SUPPORTED_KINDS = ("cxr", "ct", "slide")
FILES = ("captions", "vqa", "probes", "reports", "report_errors")
_PATIENT_OFFSET = 10**9


class PhantomError(RuntimeError):
    """Generation failed."""


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
    """Assign each of ``n`` studies to a patient (1-3 studies each) and each patient to a split."""
    plan: list[tuple[int, str]] = []
    p = 0
    while len(plan) < n:
        prng = np.random.default_rng([seed, _PATIENT_OFFSET + p])
        k = int(prng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        u = float(prng.uniform())
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
) -> Iterator[Sample]:
    """Yield ``n`` synthetic studies in a deterministic order.

    Args:
        n: number of studies.
        seed: master seed.
        kinds: study kinds to cycle through (sample ``i`` has kind ``kinds[i % len(kinds)]``).
        size: image side length in pixels.
        catalogue: findings catalogue; the packaged one when None.

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
    state = _State(cat=catalogue or load_catalogue(), seed=seed, size=size)
    for i, (patient, split) in enumerate(_patient_plan(n, seed)):
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng([seed, i])
        base = StudySpec(study_id=f"{kind}-{i:06d}", patient_id=f"P{patient:06d}", kind=kind, findings=())
        try:
            yield _RENDERERS[kind](state, base, split, rng)
        except (ValueError, ArithmeticError) as e:
            raise PhantomError(f"rendering study {base.study_id}: {e}") from e


@dataclass
class _State:
    """Per-run balancing counters (one set per split) and settings."""

    cat: Catalogue
    seed: int
    size: int
    balancers: dict[str, Balancer] = field(default_factory=lambda: {s: Balancer() for s in SPLITS})
    attr_counts: dict[str, Counter[tuple[str, str, str]]] = field(
        default_factory=lambda: {s: Counter() for s in SPLITS}
    )
    error_counts: dict[str, Counter[str]] = field(default_factory=lambda: {s: Counter() for s in SPLITS})


def _cxr_sample(st: _State, base: StudySpec, split: str, rng: np.random.Generator) -> Sample:
    findings = balance_attributes(sample_findings(st.cat, "cxr", rng), st.cat, st.attr_counts[split], rng)
    spec = replace(base, findings=findings, region="chest")
    patient = int(spec.patient_id[1:])
    anatomy = sample_anatomy(np.random.default_rng([st.seed, _PATIENT_OFFSET + patient, 1]))
    if spec.get("cardiomegaly") is not None:
        anatomy = with_ctr(anatomy, float(rng.uniform(0.56, 0.66)))
    render = render_cxr(anatomy, findings, st.size, rng)
    report = write_report(spec, rng)
    return Sample(
        spec=spec,
        split=split,
        pixels=render.pixels,
        caption=caption(spec, rng),
        qas=questions(spec, st.cat, rng, st.balancers[split]),
        probes=probe_pairs(spec, st.cat, rng),
        render=render,
        anatomy=anatomy,
        report=report,
        report_error=error_record(report, rng, st.cat, st.error_counts[split]),
    )


def _ct_sample(st: _State, base: StudySpec, split: str, rng: np.random.Generator) -> Sample:
    region, findings = sample_ct_findings(st.cat, rng)
    findings = balance_attributes(findings, st.cat, st.attr_counts[split], rng)
    spec = replace(base, findings=findings, region=region)
    ct = render_ct(region, findings, st.size, rng)
    pool = list(REGION_FINDINGS[region])
    return Sample(
        spec=spec,
        split=split,
        pixels=ct.pixels,
        caption=caption(spec, rng),
        qas=questions(spec, st.cat, rng, st.balancers[split], pool),
        probes=probe_pairs(spec, st.cat, rng, pool),
        ct=ct,
    )


def _slide_sample(st: _State, base: StudySpec, split: str, rng: np.random.Generator) -> Sample:
    findings = balance_attributes(sample_findings(st.cat, "slide", rng), st.cat, st.attr_counts[split], rng)
    spec = replace(base, findings=findings, region="tissue")
    patch = render_patch(findings, st.size, rng)
    return Sample(
        spec=spec,
        split=split,
        pixels=patch.pixels,
        caption=caption(spec, rng),
        qas=questions(spec, st.cat, rng, st.balancers[split]),
        probes=probe_pairs(spec, st.cat, rng),
        patch=patch,
    )


_RENDERERS: dict[str, Callable[[_State, StudySpec, str, np.random.Generator], Sample]] = {
    "cxr": _cxr_sample,
    "ct": _ct_sample,
    "slide": _slide_sample,
}


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


def _write_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.round(pixels * 255.0).astype(np.uint8)).save(path, optimize=False)


def _write_dicom(folder: Path, sample: Sample, seed: int) -> None:
    from data_prep.phantoms.dicom_io import write_ct_series, write_cxr_dicom

    sid = sample.spec.study_id
    if sample.ct is not None:
        write_ct_series(folder / sid, sample, seed=seed)
    elif sample.patch is not None:
        from data_prep.phantoms.pathology import write_slide

        write_slide(
            folder / f"{sid}.svs", sample.patch, np.random.default_rng([seed, 9, int(sid.rsplit("-", 1)[1])])
        )
    elif sample.render is not None:
        write_cxr_dicom(folder / f"{sid}.dcm", sample, seed=seed)


def generate(
    out_dir: Path,
    n: int,
    seed: int,
    kinds: tuple[str, ...] = ("cxr",),
    size: int = 128,
    dicom: bool = True,
) -> Manifest:
    """Write a synthetic dataset to ``out_dir``.

    Args:
        out_dir: output folder (created; existing files with the same names are overwritten).
        n: number of studies.
        seed: master seed.
        kinds: study kinds.
        size: image side length in pixels for ``images/``.
        dicom: also write a DICOM file per study.

    Returns:
        The manifest, also written to ``out_dir/manifest.json``.

    Raises:
        PhantomError: on bad arguments or a failed render or write.
    """
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    if dicom:
        (out_dir / "dicom").mkdir(exist_ok=True)
    handles = {}
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    patients: dict[str, set[str]] = {s: set() for s in SPLITS}
    findings: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    answers: dict[str, dict[str, Counter[str]]] = {s: {} for s in SPLITS}
    try:
        for s in SPLITS:
            (out_dir / s).mkdir(exist_ok=True)
            for name in FILES:
                handles[(s, name)] = (out_dir / s / f"{name}.jsonl").open("w", encoding="utf-8")
        for sample in iter_samples(n, seed, kinds, size):
            sid, s = sample.spec.study_id, sample.split
            image = f"images/{sid}.png"
            _write_png(out_dir / image, sample.pixels)
            if dicom:
                _write_dicom(out_dir / "dicom", sample, seed)
            for name, recs in _records(sample, image).items():
                for rec in recs:
                    handles[(s, name)].write(json.dumps(rec, sort_keys=True) + "\n")
            splits[s].append(sid)
            patients[s].add(sample.spec.patient_id)
            findings[s].update(sample.spec.ids())
            for qa in sample.qas:
                if qa.question_type == "closed":
                    answers[s].setdefault(qa.template, Counter())[qa.answer] += 1
    except OSError as e:
        raise PhantomError(f"writing dataset to {out_dir}: {e}") from e
    finally:
        for h in handles.values():
            h.close()
    manifest = Manifest(
        generator_version=GENERATOR_VERSION,
        seed=seed,
        n=n,
        kinds=tuple(kinds),
        size=size,
        dicom=dicom,
        splits=splits,
        patients={s: sorted(p) for s, p in patients.items()},
        finding_counts={s: dict(sorted(c.items())) for s, c in findings.items()},
        answer_counts={
            s: {t: dict(sorted(c.items())) for t, c in sorted(a.items())} for s, a in answers.items()
        },
        files={s: [f"{s}/{name}.jsonl" for name in FILES] for s in SPLITS},
    )
    (out_dir / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    logger.info("wrote %d studies to %s", n, out_dir)
    return manifest
