"""How long each stage of a ``medvlm train builtin`` run took, from its ``metrics.jsonl`` files.

    python -m training.run_times runs/builtin [--json]

Every stage logs ``elapsed_s`` (seconds since the stage's process started it) with its step. A stage
that was interrupted and resumed starts counting again from the resumed step, so the time of a stage
is the sum over its segments (a new segment begins where ``elapsed_s`` falls). Stages are listed in
pipeline order: ``stage0``, ``stage1``, ``stage2a``... ``stage2``, ``dpo``. Data generation, model
loading and export are not in these logs: the table is the training time, not the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageTime:
    """One stage's logged training time.

    Attributes:
        stage: folder name (``stage2b``).
        steps: the last logged step.
        seconds: training seconds, summed over resumed segments.
        segments: how many times the stage was started (1 = never resumed).
        samples_per_second: the rate logged last (of the last segment).
    """

    stage: str
    steps: int
    seconds: float
    segments: int
    samples_per_second: float | None


def _order(name: str) -> tuple[int, str]:
    if name == "stage0":
        return (0, "")
    if name == "stage1":
        return (1, "")
    if name == "stage2":
        return (3, "")
    if name.startswith("stage2"):
        return (2, name)
    return (4, name)


def stage_time(folder: Path) -> StageTime:
    """The logged time of one stage folder.

    Raises:
        ValueError: the folder has no readable ``metrics.jsonl`` records.
    """
    path = folder / "metrics.jsonl"
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the stage's metrics ({exc})") from exc
    if not records:
        raise ValueError(f"{path}: no metrics records")
    seconds, segments, previous = 0.0, 1, 0.0
    for record in records:
        elapsed = float(record["elapsed_s"])
        if elapsed < previous:
            seconds += previous
            segments += 1
        previous = elapsed
    seconds += previous
    rate = records[-1].get("samples_per_second")
    return StageTime(folder.name, int(records[-1]["step"]), seconds, segments, rate)


def run_times(run: Path) -> list[StageTime]:
    """Every logged stage of a run folder, in pipeline order (stages without logs are skipped:
    a stage of 0 steps logs nothing)."""
    folders = [p for p in run.iterdir() if p.is_dir() and (p / "metrics.jsonl").is_file()]
    return [stage_time(p) for p in sorted(folders, key=lambda p: _order(p.name))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a `medvlm train builtin` output folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not args.run.is_dir():
        print(f"error: {args.run} is not a folder", file=sys.stderr)
        return 1
    try:
        times = run_times(args.run)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = sum(t.seconds for t in times)
    if args.json:
        print(json.dumps({"stages": [asdict(t) for t in times], "training_seconds": round(total, 1)}))
        return 0
    print("| stage | steps | samples/s (last) | resumed | time |")
    print("|---|---|---|---|---|")
    for t in times:
        minutes = t.seconds / 60
        print(f"| {t.stage} | {t.steps} | {t.samples_per_second} | {t.segments - 1}x | {minutes:.1f} min |")
    print(f"| all stages | | | | {total / 60:.1f} min |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
