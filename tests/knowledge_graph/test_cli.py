"""`medvlm kg` subcommands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main


def test_stats_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kg", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["nodes"] > 300 and stats["node_types"]["finding"] > 100


def test_query_json_shape_and_negation(minilm_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["kg", "query", "No pneumothorax. Small right pleural effusion.", "--json", "--k", "3",
                 "--cache", str(minilm_cache)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"entities", "results"}
    ptx = [e for e in out["entities"] if e["node"] == "pneumothorax"]
    assert ptx and ptx[0]["negated"] is True and ptx[0]["name"] == "pneumothorax"
    assert len(out["results"]) == 3
    assert out["results"][0]["node"] == "pleural_effusion"
    assert "pneumothorax" not in [r["node"] for r in out["results"]]


def test_query_text_output(minilm_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kg", "query", "no ICH", "--cache", str(minilm_cache)]) == 0
    out = capsys.readouterr().out
    assert "intracranial_hemorrhage (intracranial hemorrhage) [negated]" in out


def test_query_bad_k_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kg", "query", "x", "--k", "0"]) == 2


def test_build_writes_index(tmp_path: Path, minilm_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("index.faiss", "index.json"):
        (tmp_path / name).write_bytes((minilm_cache / name).read_bytes())
    assert main(["kg", "build", "--out", str(tmp_path)]) == 0  # current index: loaded, not rebuilt
    assert "index of" in capsys.readouterr().out
