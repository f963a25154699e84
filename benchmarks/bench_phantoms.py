"""Benchmark: synthetic studies generated per second, per kind (run by hand, not a test).

Usage::

    .venv/bin/python benchmarks/bench_phantoms.py --kinds cxr,ct,slide --n 200 --size 512 --workers 2
    .venv/bin/python benchmarks/bench_phantoms.py --kinds cxr --n 500 --size 512 --workers 2 --no-dicom

With ``--blind DIR`` it instead prints the blind baseline of an existing dataset: the accuracy of
answering every closed question of the test split with the majority answer of its template (and
of its template and finding), which a model that ignores the image cannot beat::

    .venv/bin/python benchmarks/bench_phantoms.py --blind /tmp/phantoms

Each kind is timed on its own with :func:`data_prep.phantoms.generate.generate` writing a full
dataset (PNG views, JSONL, manifest and, unless ``--no-dicom``, DICOM files or slides) into a
temporary folder. Prints wall-clock and CPU seconds, studies per second and the extrapolated time
for 10,000 studies (linear extrapolation: say so when you quote it). The load average is printed
too, because these machines are shared.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def bench(kind: str, n: int, size: int, workers: int, dicom: bool, seed: int) -> dict[str, float]:
    """Time one generation run.

    Args:
        kind: study kind.
        n: number of studies.
        size: image side length.
        workers: rendering processes.
        dicom: also write DICOM files / slides.
        seed: master seed.

    Returns:
        ``wall_s``, ``cpu_s`` and ``per_s`` (studies per wall-clock second).
    """
    from data_prep.phantoms.generate import generate

    with tempfile.TemporaryDirectory(prefix="bench-phantoms-") as tmp:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        generate(Path(tmp), n, seed, (kind,), size, dicom=dicom, workers=workers)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    return {"wall_s": wall, "cpu_s": cpu, "per_s": n / wall}


def blind_baseline(data_dir: Path, split: str = "test") -> dict[str, float]:
    """Majority-answer accuracy on the closed questions of one split.

    Args:
        data_dir: a folder written by ``medvlm phantoms``.
        split: which split to read.

    Returns:
        ``{"n", "by_template", "by_template_and_finding"}`` plus ``"<template>"`` majority rates.
    """
    import json
    from collections import Counter, defaultdict

    by_t: dict[str, Counter[str]] = defaultdict(Counter)
    by_tf: dict[str, Counter[str]] = defaultdict(Counter)
    n = 0
    for line in (data_dir / split / "vqa.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["question_type"] != "closed":
            continue
        n += 1
        by_t[rec["template"]][rec["answer"]] += 1
        by_tf[f"{rec['template']}:{rec['finding']}"][rec["answer"]] += 1
    out: dict[str, float] = {"n": float(n)}
    for name, groups in (("by_template", by_t), ("by_template_and_finding", by_tf)):
        out[name] = sum(c.most_common(1)[0][1] for c in groups.values()) / max(n, 1)
    for t, c in sorted(by_t.items()):
        out[t] = c.most_common(1)[0][1] / sum(c.values())
    return out


def main() -> None:
    """Parse arguments, run the benchmark per kind and print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", default="cxr,ct,slide")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-dicom", action="store_true")
    parser.add_argument("--blind", type=Path, default=None, help="print the blind baseline of this dataset")
    args = parser.parse_args()
    if args.blind is not None:
        for key, value in blind_baseline(args.blind).items():
            print(f"{key}: {value:.3f}" if key != "n" else f"{key}: {int(value)}")
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        "| kind | n | size | workers | files | wall s | CPU s | studies/s | 10,000 studies (extrapolated) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        r = bench(kind, args.n, args.size, args.workers, not args.no_dicom, args.seed)
        files = "PNG+JSONL" if args.no_dicom else "PNG+JSONL+DICOM/SVS"
        print(
            f"| {kind} | {args.n} | {args.size} | {args.workers} | {files} | {r['wall_s']:.1f} "
            f"| {r['cpu_s']:.1f} | {r['per_s']:.1f} | {10_000 / r['per_s'] / 60:.1f} min |"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
