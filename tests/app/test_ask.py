"""``medvlm ask`` end to end on the real chest radiograph RG1_UNCR.dcm with a tiny LLaVA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

import medvlm
from app.cli import main
from app.commands import model as model_cmd
from medvlm.assistant import UNGROUNDED_WARNING
from medvlm.grounding import answer_polarity
from tests.medvlm import tiny_models
from tests.medvlm.test_grounding import FakeBackend

CHEST = Path(str(get_testdata_file("RG1_UNCR.dcm")))


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    root = tmp_path_factory.mktemp("ask_models")
    yield tiny_models.build("llava", root, tiny_models.smollm2_tokenizer_dir(root))
    torch.set_num_threads(before)


def _ask(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["ask", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ask_json_on_real_radiograph(llava_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _ask(
        capsys,
        str(CHEST),
        "Is there a pleural effusion?",
        "--model",
        str(llava_dir),
        "--json",
        "--no-kg",
        "--max-new-tokens",
        "4",
    )
    assert code == 0
    reply = json.loads(out)
    for key in (
        "answer",
        "model",
        "adapter",
        "grounded",
        "confidence",
        "safety",
        "latency_ms",
        "evidence",
        "views",
        "notice",
    ):
        assert key in reply
    assert reply["model"].startswith("llava@") and reply["adapter"] is None and reply["safety"] == []
    assert isinstance(reply["grounded"], bool) and isinstance(reply["warnings"], list)
    # A confidence only with a yes/no word opening the answer (the old code gave one at any token).
    polarity = answer_polarity(reply["raw_answer"])
    if polarity is None:
        assert reply["confidence"] is None and not reply["abstained"]
    else:
        assert reply["confidence"] is None or 0 <= reply["confidence"] <= 1
    assert "CR CHEST" in reply["views"][0] and "MONOCHROME1" in reply["views"][0]
    assert "not for clinical use" in reply["notice"] and "synthetic" not in reply["notice"]


def test_mismatched_question_is_refused_with_exit_1(
    llava_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _ask(
        capsys,
        str(CHEST),
        "Is there a glioma on this brain MRI?",
        "--model",
        str(llava_dir),
        "--json",
        "--no-kg",
    )
    reply = json.loads(out)
    assert code == 1 and reply["refused"] is True
    assert {d["kind"] for d in reply["safety"]} == {"modality_mismatch", "body_part_mismatch"}


def test_builtin_model_prints_synthetic_notice(
    llava_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_builtin(model: Path | None, adapter: Path | None) -> model_cmd.ModelChoice:
        assert model is None
        return model_cmd.ModelChoice(llava_dir, None, model_version="builtin-test@1", builtin=True)

    monkeypatch.setattr(model_cmd, "choose_model", fake_builtin)
    code, out, _ = _ask(
        capsys, "--bundled-chest-xray", "What is shown?", "--no-kg", "--no-ablation", "--max-new-tokens", "3"
    )
    assert code == 0
    assert model_cmd.SYNTHETIC_NOTICE in out and "builtin-test@1" in out


def _fake_model(
    monkeypatch: pytest.MonkeyPatch, generations: list[medvlm.Generation], *, builtin: bool = False
) -> FakeBackend:
    """Answer with scripted generations instead of a model (the CLI's own logic under test)."""
    backend = FakeBackend(generations)
    scope = model_cmd.builtin_scope(None) if builtin else None
    choice = model_cmd.ModelChoice(Path("fake"), None, model_version="fake@1", builtin=builtin, scope=scope)
    monkeypatch.setattr(model_cmd, "choose_model", lambda model, adapter: choice)
    monkeypatch.setattr(model_cmd, "load_backend", lambda choice, device, threads: backend)
    return backend


def test_ungrounded_answer_is_never_stated_as_fact(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    same = medvlm.Generation("The heart is enlarged.", 0.6, 0.4)  # "yes" mass at a word that is not yes/no
    _fake_model(monkeypatch, [same, same])
    code, out, _ = _ask(capsys, str(CHEST), "Is the heart enlarged?", "--json", "--no-kg")
    reply = json.loads(out)
    assert code == 0 and reply["grounded"] is False and reply["confidence"] is None
    assert reply["answer"] == f"{UNGROUNDED_WARNING} Model answer: The heart is enlarged."
    assert UNGROUNDED_WARNING in reply["warnings"] and reply["raw_answer"] == "The heart is enlarged."
    code, out, _ = _ask(capsys, str(CHEST), "Is the heart enlarged?", "--no-kg")
    lines = out.splitlines()
    assert code == 0 and lines[0] == reply["answer"] and f"[warning] {UNGROUNDED_WARNING}" in lines
    assert not any(line.startswith("[confidence]") for line in lines)


def test_answer_contradicting_its_token_probabilities_abstains(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_model(monkeypatch, [medvlm.Generation("No.", 0.9, 0.1), medvlm.Generation("I cannot tell.")])
    code, out, _ = _ask(capsys, str(CHEST), "Is there an effusion?", "--json", "--no-kg")
    reply = json.loads(out)
    assert code == 0 and reply["abstained"] is True and reply["confidence"] == pytest.approx(0.1)
    assert "favour the opposite" in reply["answer"] and reply["grounded"] is True


def test_builtin_scope_refuses_a_ct_and_view_warnings_are_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from data_prep.types import ImageView

    backend = _fake_model(monkeypatch, [medvlm.Generation("Yes, there is a mass.")], builtin=True)
    ct = Path(str(get_testdata_file("CT_small.dcm")))
    loads: list[object] = []
    fake_load = model_cmd.load_backend
    monkeypatch.setattr(model_cmd, "load_backend", lambda *a: loads.append(a) or fake_load(*a))
    code, out, _ = _ask(capsys, str(ct), "Is there a mass?", "--json", "--no-kg")
    reply = json.loads(out)
    assert code == 1 and reply["refused"] is True and backend.calls == []
    assert loads == [] and reply["model"] == "fake@1"  # refused before the model is loaded
    assert reply["safety"] and {(d["kind"], d["action"]) for d in reply["safety"]} == {
        ("out_of_scope", "refuse")
    }
    assert "modality CT" in reply["answer"] and "synthetic" in reply["notice"]
    view = ImageView(
        pixels=np.zeros((8, 8), np.uint8),
        modality=None,
        body_part=None,
        kind="image",
        description="PNG",
        warnings=("skipped notes.txt: not an image",),
    )
    monkeypatch.setattr(model_cmd, "load_input", lambda path: [view, view])
    backend.generations = [medvlm.Generation("Clear lungs."), medvlm.Generation("Blank.")]
    code, out, _ = _ask(capsys, "folder", "What is seen?", "--no-kg")
    assert code == 0 and out.splitlines()[0] == "Clear lungs."
    assert out.count("[warning] skipped notes.txt: not an image") == 1  # once, not once per view
    assert "[warn] out_of_scope (image 1)" in out  # a PNG has no modality: warned, not refused


def test_views_to_request_keeps_warnings_and_marks_series_3d() -> None:
    from data_prep.types import ImageView

    pixels = np.zeros((4, 4), np.uint8)
    series = ImageView(pixels, "CT", "HEAD", "dicom-series", "MIP", warnings=("irregular slice spacing",))
    single = ImageView(pixels, "CR", "CHEST", "dicom", "PA")
    request = model_cmd.views_to_request([series, single], "What is seen?", [])
    assert [c.dimensions for c in request.contexts] == [3, 2]
    assert request.warnings == ["irregular slice spacing"]


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], llava_dir: Path) -> None:
    code, _, err = _ask(capsys, "--bundled-chest-xray", str(CHEST), "Is there a mass?", "--no-kg")
    assert code == 2 and "not both" in err
    for flag in ("--threads", "--max-new-tokens"):
        with pytest.raises(SystemExit) as info:
            main(["ask", str(CHEST), "Is there a mass?", "--model", str(llava_dir), flag, "0"])
        assert info.value.code == 2
    with pytest.raises(SystemExit) as info:  # keys never on the command line (visible in ps)
        main(["ask", str(CHEST), "Is there a mass?", "--api-key", "k"])
    assert info.value.code == 2
    capsys.readouterr()


def test_model_and_server_are_checked_before_the_knowledge_graph(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_kg(question: str, limit: int = 8) -> list[medvlm.KnowledgeFact]:
        raise AssertionError("the knowledge graph was loaded before the model was checked")

    monkeypatch.setattr(model_cmd, "retrieve_facts", no_kg)
    code, _, err = _ask(capsys, str(CHEST), "Is there a mass?", "--model", str(tmp_path / "none"))
    assert code == 1 and "does not exist" in err
    code, _, err = _ask(
        capsys, str(CHEST), "Is there a mass?", "--server", "http://127.0.0.1:9", "--timeout", "2"
    )
    assert code == 1 and "not reachable" in err


def test_failed_retrieval_is_a_warning_without_the_exception_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from knowledge_graph import retriever as kg

    def broken(cls: type, *a: object, **k: object) -> None:
        raise ValueError("index at /home/SMITH^JANE/kg is corrupt")

    monkeypatch.setattr(kg.Retriever, "from_default", classmethod(broken))
    _fake_model(monkeypatch, [medvlm.Generation("A."), medvlm.Generation("B.")])
    code, out, err = _ask(capsys, str(CHEST), "What is seen?", "--json")
    reply = json.loads(out)
    assert (
        code == 0 and "knowledge retrieval failed (ValueError); answered without facts" in reply["warnings"]
    )
    assert "SMITH" not in out + err


def test_api_key_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDVLM_API_KEY", "from-env")
    assert model_cmd.read_api_key(None) == "from-env"
    key = tmp_path / "key"
    key.write_text("from-file\n")
    assert model_cmd.read_api_key(key) == "from-file"
    key.write_text("  \n")
    with pytest.raises(model_cmd.UsageError, match="empty"):
        model_cmd.read_api_key(key)
    with pytest.raises(model_cmd.UsageError, match="cannot read"):
        model_cmd.read_api_key(tmp_path / "missing")


def test_serve_api_refuses_a_public_host_without_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MEDVLM_API_KEY", raising=False)
    code = main(["serve-api", "--host", "0.0.0.0", "--model", str(tmp_path), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "needs an API key" in err and len(err.strip().splitlines()) == 1
    from medvlm.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("10.0.0.5") and not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_ask_over_http_matches_in_process(llava_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import medvlm
    from medvlm.backends import InProcessBackend
    from medvlm.server import ModelServer

    server = ModelServer(InProcessBackend(medvlm.load(llava_dir, device="cpu")), port=0)
    server.start()
    try:
        common = [str(CHEST), "Is the heart enlarged?", "--json", "--no-kg", "--max-new-tokens", "5"]
        _, local, _ = _ask(capsys, *common, "--model", str(llava_dir))
        _, remote, _ = _ask(capsys, *common, "--server", server.url)
    finally:
        server.shutdown()
    assert json.loads(remote)["raw_answer"] == json.loads(local)["raw_answer"]


def test_unreachable_server_and_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _ask(
        capsys,
        str(CHEST),
        "Is there an effusion?",
        "--server",
        "http://127.0.0.1:9",
        "--timeout",
        "2",
        "--no-kg",
    )
    assert code == 1 and "not reachable" in err
    missing = tmp_path / "nothing.dcm"
    code, _, err = _ask(
        capsys, str(missing), "Is there an effusion?", "--no-kg", "--server", "http://127.0.0.1:9"
    )
    assert code == 1 and err.startswith("medvlm ask:")
    assert main(["ask"]) == 2


def test_facts_from_the_retriever_get_unique_citable_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import dataclass, field

    from knowledge_graph import retriever as kg

    @dataclass
    class FakeFact:
        node: str
        name: str
        text: str
        source: str
        relation: str

    @dataclass
    class FakeRetrieval:
        facts: list[FakeFact] = field(default_factory=list)

    class FakeRetriever:
        def retrieve(self, text: str, k: int = 5) -> FakeRetrieval:
            assert text == "Is the heart enlarged?"
            return FakeRetrieval(
                [
                    FakeFact(
                        "cardiomegaly",
                        "cardiomegaly",
                        "Enlarged cardiac silhouette.",
                        "curated@1",
                        "definition",
                    ),
                    FakeFact(
                        "cardiomegaly",
                        "cardiomegaly",
                        "Heart shadow over half the width.",
                        "curated@1",
                        "visual",
                    ),
                ]
            )

    monkeypatch.setattr(kg.Retriever, "from_default", classmethod(lambda cls, *a, **k: FakeRetriever()))
    facts = model_cmd.retrieve_facts("Is the heart enlarged?")
    assert [f.fact_id for f in facts] == ["cardiomegaly", "cardiomegaly:visual"]
    assert facts[1].text == "Heart shadow over half the width." and facts[1].source == "curated@1"


def test_serve_api_with_a_bad_model_folder_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve-api", "--model", str(tmp_path), "--port", "0"]) == 1
    assert "has no config.json" in capsys.readouterr().err


def test_registrar_and_package_import_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, app.commands.model, medvlm; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_text_output_lists_the_facts_given_cited_first() -> None:
    facts = [medvlm.KnowledgeFact(f"node_{i}", f"Fact number {i}.", "medvlm-curated@1.0") for i in range(6)]
    answer = medvlm.Answer(
        text="Yes.",
        model=medvlm.ModelInfo("m@1", None, "llava", False),
        grounded=True,
        confidence=0.9,
        abstained=False,
        refused=False,
        safety=[],
        latency_ms=1.0,
        views=["Image 1"],
        cited_facts=["node_5"],
    )
    text = model_cmd.format_answer(answer, facts, "notice")
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Knowledge-graph facts"))
    assert f"({model_cmd.MAX_FACTS_SHOWN} of 6)" in lines[header]
    assert lines[header + 1].startswith("  [node_5] cited Fact number 5.")
    assert sum(line.startswith("  [node_") for line in lines) == model_cmd.MAX_FACTS_SHOWN
    assert model_cmd.format_answer(answer, [], "notice").count("Knowledge-graph facts") == 0
