"""`kg validate` finds each kind of problem, one sentence each, and the CLI exits 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main
from knowledge_graph.graph import KnowledgeGraph, load_graph, read_raw
from knowledge_graph.schema import KgError
from knowledge_graph.validate import validate_raw

GOOD = """
provenance: {source: test, version: "1"}
nodes:
  - {id: lung, type: anatomy, name: lung, definition: Organ of gas exchange.}
  - id: effusion
    type: finding
    name: pleural effusion
    definition: Fluid in the pleural space.
    synonyms: [hydrothorax, pleural fluid]
    locations: [lung]
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "g.yaml").write_text(text, encoding="utf-8")
    return tmp_path


def _problems(tmp_path: Path, text: str) -> list[str]:
    return validate_raw(read_raw(_write(tmp_path, text)))


def test_good_file_has_no_problem(tmp_path: Path) -> None:
    assert _problems(tmp_path, GOOD) == []
    g = load_graph(tmp_path)
    assert isinstance(g, KnowledgeGraph) and len(g) == 2


def test_dangling_edge(tmp_path: Path) -> None:
    problems = _problems(tmp_path, GOOD.replace("locations: [lung]", "locations: [pleura]"))
    assert len(problems) == 1 and "dangling" in problems[0] and "pleura" in problems[0]


def test_missing_definition(tmp_path: Path) -> None:
    text = GOOD.replace("definition: Organ of gas exchange.", "definition: ''")
    assert _problems(tmp_path, text) == ["Node 'lung' has no definition."]


def test_is_a_cycle(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
  - {id: a, type: group, name: a, definition: A., is_a: b}
  - {id: b, type: group, name: b, definition: B., is_a: a}
"""
    )
    problems = _problems(tmp_path, text)
    assert len(problems) == 1 and "cycle" in problems[0]


def test_synonym_claimed_twice_even_after_folding(tmp_path: Path) -> None:
    text = GOOD + "  - {id: other, type: finding, name: other, definition: X., synonyms: [Pleural-Fluids]}\n"
    problems = _problems(tmp_path, text)
    assert len(problems) == 1 and "pleural fluid" in problems[0] and "effusion, other" in problems[0]


def test_duplicate_id_and_bad_yaml(tmp_path: Path) -> None:
    text = GOOD + "  - {id: lung, type: anatomy, name: lungs, definition: Again.}\n"
    assert any("defined 2 times" in p for p in _problems(tmp_path, text))
    (tmp_path / "g.yaml").write_text("nodes: [", encoding="utf-8")
    assert any("cannot be read" in p for p in validate_raw(read_raw(tmp_path)))


def test_load_graph_refuses_invalid(tmp_path: Path) -> None:
    _write(tmp_path, GOOD.replace("locations: [lung]", "locations: [nowhere]"))
    with pytest.raises(KgError, match="dangling"):
        load_graph(tmp_path)


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, GOOD.replace("definition: Organ of gas exchange.", "definition: ''"))
    assert main(["kg", "validate", "--data", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "has no definition" in captured.err  # problems are errors: stderr (review item 7)
    assert captured.out == ""
    assert main(["kg", "validate"]) == 0
    assert capsys.readouterr().out.startswith("ok:")


def test_cli_kg_without_subcommand_is_usage_error() -> None:
    assert main(["kg"]) == 2
