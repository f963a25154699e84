"""training.run_times: stage times from metrics logs, resumed stages summed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.run_times import main, run_times, stage_time


def _log(folder: Path, records: list[tuple[int, float]]) -> None:
    folder.mkdir(parents=True)
    lines = [
        json.dumps({"step": s, "loss": 0.1, "samples_per_second": 2.0, "elapsed_s": e}) for s, e in records
    ]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_resumed_stage_sums_its_segments(tmp_path: Path) -> None:
    _log(tmp_path / "stage2a", [(10, 40.0), (20, 80.0), (110, 30.0), (120, 60.0)])
    t = stage_time(tmp_path / "stage2a")
    assert (t.steps, t.seconds, t.segments) == (120, 140.0, 2)


def test_stages_in_pipeline_order_and_unlogged_skipped(tmp_path: Path) -> None:
    for name in ("stage2", "stage2b", "stage0", "stage2a"):
        _log(tmp_path / name, [(10, 5.0)])
    (tmp_path / "stage1").mkdir()  # 0 steps: no log
    (tmp_path / "data").mkdir()
    assert [t.stage for t in run_times(tmp_path)] == ["stage0", "stage2a", "stage2b", "stage2"]


def test_cli_prints_total_and_refuses_bad_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _log(tmp_path / "stage0", [(50, 60.0)])
    _log(tmp_path / "stage2", [(10, 120.0)])
    assert main([str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["training_seconds"] == 180.0
    (tmp_path / "stage2b").mkdir()
    (tmp_path / "stage2b" / "metrics.jsonl").write_text("{not json\n")
    assert main([str(tmp_path)]) == 1
    assert "stage2b" in capsys.readouterr().err
