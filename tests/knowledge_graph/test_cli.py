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
    code = main(
        [
            "kg",
            "query",
            "No pneumothorax. Small right pleural effusion.",
            "--json",
            "--k",
            "3",
            "--cache",
            str(minilm_cache),
        ]
    )
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


@pytest.fixture
def no_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to load MiniLM fail the test."""
    import knowledge_graph.index

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the embedder was loaded")

    monkeypatch.setattr(knowledge_graph.index.MiniLMEmbedder, "__init__", refuse)


def test_query_bad_k_is_usage_error(no_embedder: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kg", "query", "x", "--k", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "--k must be at least 1" in captured.err


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_query_is_usage_error_without_loading_the_embedder(
    text: str, no_embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kg", "query", text]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "kg: the query text is empty"


@pytest.mark.parametrize(
    "command", [["query", "effusion", "--cache"], ["eval", "--cache"], ["build", "--out"]]
)
def test_index_path_that_is_a_file_is_usage_error(
    command: list[str], tmp_path: Path, no_embedder: None, capsys: pytest.CaptureFixture[str]
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    assert main(["kg", *command, str(afile)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "is a file, not a folder" in captured.err


def test_errors_go_to_stderr(tmp_path: Path, no_embedder: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kg", "eval", "--queries", str(tmp_path / "missing.yaml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "reading queries" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert main(["kg", "eval", "--k", "0"]) == 2
    assert capsys.readouterr().out == ""
    (tmp_path / "g.yaml").write_text("nodes: [", encoding="utf-8")
    assert main(["kg", "stats", "--data", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("kg: ")
    assert main(["kg"]) == 2
    assert capsys.readouterr().out == ""


def test_build_writes_index(tmp_path: Path, minilm_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("index.faiss", "index.json"):
        (tmp_path / name).write_bytes((minilm_cache / name).read_bytes())
    assert main(["kg", "build", "--out", str(tmp_path)]) == 0  # current index: loaded, not rebuilt
    assert "index of" in capsys.readouterr().out


def test_eval_check_passes_targets(minilm_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kg", "eval", "--check", "--json", "--cache", str(minilm_cache)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] >= 100 and report["recall"] >= 0.95 and report["negation_accuracy"] >= 0.95


def test_eval_check_fails_on_impossible_queries(
    tmp_path: Path, minilm_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = tmp_path / "q.yaml"
    queries.write_text("queries:\n  - {q: 'zzz qqq', gold: necrosis}\n", encoding="utf-8")
    args = ["kg", "eval", "--check", "--k", "1", "--queries", str(queries), "--cache", str(minilm_cache)]
    code = main(args)
    assert code == 1
    captured = capsys.readouterr()
    assert "recall@1 0.000" in captured.out
    assert "below the targets" in captured.err


def test_import_radlabels_to_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "radlabels.yaml"
    assert main(["kg", "import", "radlabels", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Imported from radlabels") and "node: pneumothorax" in text
