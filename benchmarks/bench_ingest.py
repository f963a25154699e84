"""Benchmark: the ingest pipeline vs bare ``pydicom.dcmread(...).pixel_array`` on the same files.

Run by hand (not a test):

    .venv/bin/python benchmarks/bench_ingest.py [--rounds 3] [--all-frames]

Files: every file with pixel data among pydicom's test files and pydicom-data (about 162).
Baseline: ``pydicom.dcmread(path).pixel_array`` (decodes every frame, no LUTs, no windowing).
Pipeline: ``read_dataset`` + ``dicom_view`` (limits, decode, modality LUT, VOI/preset windowing,
MONOCHROME1 inversion or colour conversion, uint8, pseudonymous study id). By default the
pipeline decodes one frame per file, as ``medvlm ingest`` does; ``--all-frames`` renders every
frame of multi-frame files so both sides decode the same pixels. Rounds alternate the two sides
and the best round of each is reported (the machine may be shared).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from pathlib import Path


def corpus() -> list[Path]:
    import pydicom
    from pydicom.data import get_testdata_files

    files = []
    for f in get_testdata_files():
        try:
            ds = pydicom.dcmread(f, force=True)
        except Exception:  # not DICOM at all: outside the corpus
            continue
        if "PixelData" in ds:
            files.append(Path(f))
    return sorted(files)


def baseline(files: list[Path]) -> tuple[float, int]:
    import pydicom

    ok = 0
    t0 = time.perf_counter()
    for f in files:
        try:
            _ = pydicom.dcmread(f).pixel_array
            ok += 1
        except Exception:  # the baseline's failures count as processed files
            pass
    return time.perf_counter() - t0, ok


def pipeline(files: list[Path], all_frames: bool) -> tuple[float, int]:
    from data_prep.dicom import dicom_view, frame_count, read_dataset
    from data_prep.errors import IngestError
    from data_prep.pseudonym import PseudonymKey
    from data_prep.types import IngestLimits

    key = PseudonymKey(b"benchmark-key-0123456789", "bench")
    limits = IngestLimits()
    ok = 0
    t0 = time.perf_counter()
    for f in files:
        try:
            ds = read_dataset(f, name=f.name, limits=limits)
            frames = range(frame_count(ds, f.name)) if all_frames else [None]
            for i in frames:
                dicom_view(ds, name=f.name, limits=limits, key=key, frame=i)
            ok += 1
        except (IngestError, ValueError):
            pass
    return time.perf_counter() - t0, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--all-frames", action="store_true", help="render every frame of multi-frame files")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import pydicom

    del pydicom
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    files = corpus()
    pipeline(files[:5], args.all_frames)  # warm imports and codec plugins for both sides
    baseline(files[:5])
    best_b = best_p = float("inf")
    ok_b = ok_p = 0
    for _ in range(args.rounds):
        tb, ok_b = baseline(files)
        tp, ok_p = pipeline(files, args.all_frames)
        best_b, best_p = min(best_b, tb), min(best_p, tp)
    n = len(files)
    print(
        f"files: {n} (baseline decoded {ok_b}, pipeline ok {ok_p}); rounds: {args.rounds}; "
        f"pipeline frames: {'all' if args.all_frames else 'one per file'}"
    )
    print(f"baseline dcmread+pixel_array: {n / best_b:.1f} files/s ({best_b:.2f} s)")
    print(f"pipeline read+decode+LUT+window+id: {n / best_p:.1f} files/s ({best_p:.2f} s)")
    print(f"ratio pipeline/baseline speed: {best_b / best_p:.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
