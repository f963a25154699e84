"""``medvlm ask`` end to end on the real chest radiograph RG1_UNCR.dcm with a tiny LLaVA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from pydicom.data import get_testdata_file

from app.cli import main
from app.commands import model as model_cmd
from tests.medvlm import tiny_models

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
    assert isinstance(reply["grounded"], bool) and 0.5 <= reply["confidence"] <= 1
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
        "import sys, app.commands.model, medvlm; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]
