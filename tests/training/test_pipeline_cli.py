"""The one-command rebuild on a tiny model, then ``medvlm train``/``medvlm eval`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from app.cli import main
from medvlm.builtin.assemble import assemble
from tests.training.tiny import TINY_VISION
from training.builtin import BuiltinPipelineConfig, run_pipeline
from training.config import build


@pytest.fixture(scope="module")
def tiny_builtin(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_lm: Path
) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("builtin")
    stage = {"max_steps": 2, "batch_size": 2, "log_every": 1}
    cfg = build(
        BuiltinPipelineConfig,
        {
            "out_dir": str(out),
            "data_dir": str(tiny_data),
            "stage0_data": {"n": 24, "seed": 4, "size": 32},
            "version": "9.9.9",
            "stage0": {**stage, "vision": TINY_VISION},
            "stage1": {**stage, "lm_dir": str(tiny_lm), "semantic_init": True},
            "stage2_curriculum": [
                {**stage, "lm_dir": str(tiny_lm), "templates": ["existence"], "lora": {"r": 2, "alpha": 4}},
                {**stage, "lm_dir": str(tiny_lm), "templates": ["laterality", "zone"]},
            ],
            "stage2": {**stage, "lm_dir": str(tiny_lm), "question_types": ["closed"]},
            "dpo": {**stage, "lm_dir": str(tiny_lm)},
            "dpo_mine": {"limit": 24, "batch_size": 8},
        },
    )
    weights = run_pipeline(cfg)
    model_dir = out / "assembled"
    assemble(tiny_lm, weights, model_dir)
    return weights, model_dir


def test_pipeline_exports_small_float16_parts(tiny_builtin: tuple[Path, Path]) -> None:
    weights, _ = tiny_builtin
    parts = load_file(str(weights / "parts.safetensors"))
    assert {str(v.dtype) for v in parts.values()} == {"torch.float16"}
    spec = json.loads((weights / "parts.json").read_text())
    assert spec["version"] == "9.9.9" and spec["synthetic_only"] is True
    assert (weights / "adapter" / "adapter_config.json").is_file()
    out = weights.parent
    for stage in ("stage0", "stage1", "stage2a", "stage2b", "stage2", "dpo"):
        assert (out / stage / "final" / "config.yaml").is_file()
    assert len(spec["extra"]["stages"]) == 6 and spec["extra"]["stages"][-1] == str(out / "dpo" / "final")
    # each curriculum stage continues the adapter of the one before
    resolved = yaml.safe_load((out / "stage2b" / "final" / "config.yaml").read_text())
    assert resolved["init_from"] == str(out / "stage2a" / "final")
    resolved = yaml.safe_load((out / "stage2" / "final" / "config.yaml").read_text())
    assert resolved["init_from"] == str(out / "stage2b" / "final")
    # stage 0 trained on its own phantoms (stage0_data), every later stage on data_dir
    resolved = yaml.safe_load((out / "stage0" / "final" / "config.yaml").read_text())
    assert resolved["data_dir"] == str(out / "stage0_data")
    assert json.loads((out / "stage0_data" / "manifest.json").read_text())
    stage1 = yaml.safe_load((out / "stage1" / "final" / "config.yaml").read_text())
    assert resolved["data_dir"] != stage1["data_dir"]
    assert spec["extra"]["stage0_data"] == {"n": 24, "seed": 4, "size": 32}


def test_pipeline_dpo_stage_learns_from_the_stage2_models_mistakes(tiny_builtin: tuple[Path, Path]) -> None:
    weights, _ = tiny_builtin
    out = weights.parent
    pairs = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(not Path(p["image"]).is_absolute() for p in pairs)
    resolved = yaml.safe_load((out / "dpo" / "final" / "config.yaml").read_text())
    assert resolved["init_from"] == str(out / "stage2" / "final")
    assert resolved["preferences"] == str(out / "preferences.jsonl")
    exported = load_file(str(weights / "adapter" / "adapter_model.safetensors"))
    dpo = load_file(str(out / "dpo" / "final" / "adapter" / "adapter_model.safetensors"))
    stage2 = load_file(str(out / "stage2" / "final" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(exported[k], dpo[k].half()) for k in dpo)  # the DPO adapter is what ships
    assert any(not torch.equal(dpo[k], stage2[k]) for k in dpo)


def test_pipeline_continues_trained_parts_instead_of_stages_0_and_1(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, tiny_lm: Path, tmp_path: Path
) -> None:
    weights, _ = tiny_builtin
    stage = {"max_steps": 1, "batch_size": 2, "lm_dir": str(tiny_lm)}
    values = {
        "out_dir": str(tmp_path / "more"),
        "data_dir": str(tiny_data),
        "start_from": str(weights),
        "stage2_curriculum": [{**stage, "templates": ["existence", "laterality"], "loss_per": "example"}],
        "stage2": stage,
    }
    exported = run_pipeline(build(BuiltinPipelineConfig, values))
    out = tmp_path / "more"
    assert not (out / "stage0").exists() and not (out / "stage1").exists()
    resolved = yaml.safe_load((out / "stage2a" / "final" / "config.yaml").read_text())
    assert resolved["init_from"] == str(weights)
    spec = json.loads((exported / "parts.json").read_text())
    assert spec["extra"]["stages"][0] == str(weights) and len(spec["extra"]["stages"]) == 3
    before = load_file(str(weights / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(out / "stage2a" / "final" / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()  # the shipped adapter was continued, not replaced
    with pytest.raises(ValueError, match="start_from"):
        build(BuiltinPipelineConfig, {**values, "start_from": str(tmp_path)})


def test_pipeline_skips_finished_stages(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, tiny_lm: Path
) -> None:
    weights, _ = tiny_builtin
    out = weights.parent
    before = (out / "stage1" / "final" / "trainable.safetensors").stat().st_mtime_ns
    cfg = build(
        BuiltinPipelineConfig,
        {
            "out_dir": str(out),
            "data_dir": str(tiny_data),
            "stage1": {"lm_dir": str(tiny_lm)},
            "stage2": {"lm_dir": str(tiny_lm)},
        },
    )
    run_pipeline(cfg)
    assert (out / "stage1" / "final" / "trainable.safetensors").stat().st_mtime_ns == before


def test_eval_probe_and_vqa_json(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, model_dir = tiny_builtin
    args = [
        "--model",
        str(model_dir),
        "--adapter",
        str(weights / "adapter"),
        "--data",
        str(tiny_data),
        "--json",
    ]
    assert main(["eval", "probe", *args, "--limit", "3"]) == 0
    probe = json.loads(capsys.readouterr().out)
    assert probe["n"] == 3 and {"paired_accuracy", "blind_paired_accuracy"} <= set(probe)
    assert sum(probe["n_per_category"].values()) == 3
    assert set(probe["blind_per_category"]) == set(probe["per_category"]) == set(probe["n_per_category"])
    weighted = sum(probe["blind_per_category"][c] * k for c, k in probe["n_per_category"].items()) / 3
    assert weighted == pytest.approx(probe["blind_paired_accuracy"])
    # the question-only prior of the folder's train split, per category like the others
    assert set(probe["prior_per_category"]) == set(probe["per_category"])
    prior = sum(probe["prior_per_category"][c] * k for c, k in probe["n_per_category"].items()) / 3
    assert prior == pytest.approx(probe["prior_paired_accuracy"]) and 0.0 <= prior <= 1.0
    assert main(["eval", "vqa", *args, "--limit", "6"]) == 0
    vqa = json.loads(capsys.readouterr().out)
    assert vqa["n"] == 6 and "closed_accuracy" in vqa and "open_recall" in vqa
    assert main(["eval", "vqa", "--model", str(model_dir), "--data", str(tiny_data), "--limit", "2"]) == 0
    assert "| closed_accuracy |" in capsys.readouterr().out


@pytest.fixture
def tiny_home(tmp_path: Path, tiny_lm: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``MEDVLM_HOME`` whose converted LM is the tiny one, so built-in parts assemble against it."""
    from tests.medvlm.test_builtin import _seed_lm

    _seed_lm(tmp_path / "home", tiny_lm)
    monkeypatch.setenv("MEDVLM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_eval_probe_without_a_train_split_reports_no_prior(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder holding only the evaluated split is still evaluated; the prior needs the train split."""
    import shutil

    held_out = tmp_path / "held-out"
    shutil.copytree(tiny_data / "test", held_out / "test")
    shutil.copytree(tiny_data / "images", held_out / "images")
    weights, model_dir = tiny_builtin
    args = ["--model", str(model_dir), "--adapter", str(weights / "adapter"), "--data", str(held_out)]
    assert main(["eval", "probe", *args, "--limit", "2", "--json"]) == 0
    probe = json.loads(capsys.readouterr().out)
    assert probe["n"] == 2 and "prior_paired_accuracy" not in probe and "prior_per_category" not in probe
    (held_out / "train").mkdir()
    (held_out / "train" / "probes.jsonl").write_text('{"answer": "yes"}\n')
    assert main(["eval", "probe", *args, "--limit", "2", "--json"]) == 1  # malformed: a clear error
    assert "a record lacks 'question'" in capsys.readouterr().err


def test_eval_on_the_val_split_for_choosing_candidates(
    tiny_builtin: tuple[Path, Path],
    tiny_data: Path,
    tiny_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training.data import read_jsonl
    from training.eval.datasets import load_probes, load_vqa

    weights, _ = tiny_builtin
    val_ids = {r["id"] for r in read_jsonl(tiny_data / "val" / "vqa.jsonl")}
    assert {e.id for e in load_vqa(tiny_data, "val")} == val_ids
    assert {e.id for e in load_vqa(tiny_data)}.isdisjoint(val_ids)  # test by default
    assert all(p[2].image is not None and p[2].image.is_file() for p in load_probes(tiny_data, "val"))
    # a folder of built-in parts (the exported weights) is a model too, assembled under MEDVLM_HOME
    args = ["--model", str(weights), "--data", str(tiny_data), "--split", "val", "--json", "--limit", "2"]
    assert main(["eval", "probe", *args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["n"] == 2
    assert out["model"].startswith("builtin-") and "+builtin-lora-" in out["model"]  # its version, not a hash
    with pytest.raises(SystemExit):
        main(["eval", "vqa", "--model", str(weights), "--data", str(tiny_data), "--split", "train"])


def test_eval_reportcheck(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_dir = tiny_builtin
    if not (tiny_data / "test" / "report_errors.jsonl").is_file():
        pytest.skip("this phantoms version writes no report_errors.jsonl")
    assert (
        main(
            [
                "eval",
                "reportcheck",
                "--model",
                str(model_dir),
                "--data",
                str(tiny_data),
                "--json",
                "--limit",
                "2",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 2 and "simple_accuracy" in result and "complex_macro_f1" in result


def test_eval_missing_data_exits_1(tmp_path: Path) -> None:
    assert main(["eval", "vqa", "--model", "builtin", "--data", str(tmp_path / "nope")]) == 1


def test_train_cli_overrides_and_errors(
    tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vision = [f"vision.{k}={v}" for k, v in TINY_VISION.items()]
    argv = [
        "train",
        "stage0",
        f"out_dir={tmp_path}",
        f"data_dir={tiny_data}",
        "max_steps=1",
        "batch_size=2",
        *vision,
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1
    assert main(["train", "stage0", f"out_dir={tmp_path}", f"data_dir={tiny_data}", "no_such_key=1"]) == 1
    assert "unknown keys" in capsys.readouterr().err
    assert main(["train", "stage1", "max_steps=1", "init_from="]) == 1


def test_eval_vision_on_stage0(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stage0 = tiny_builtin[0].parent / "stage0" / "final"
    assert main(["eval", "vision", "--checkpoint", str(stage0), "--data", str(tiny_data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["finding_accuracy"] <= 1.0 and result["split"] == "test"
    assert set(result["sensitivity"]) <= set(json.loads((stage0 / "labels.json").read_text()))


def test_diagnose_reports_image_use(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, tiny_lm: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.diagnose import main as diagnose

    stage2 = tiny_builtin[0].parent / "stage2" / "final"
    argv = ["--checkpoint", str(stage2), "--data", str(tiny_data), "--lm-dir", str(tiny_lm), "--n", "4"]
    assert diagnose(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] <= 4 and 0.0 <= result["accuracy_image"] <= 1.0
    assert result["token_embedding_norm_mean"] > 0


def test_template_check_on_val(
    tiny_builtin: tuple[Path, Path], tiny_data: Path, tiny_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.template_check import main as template_check

    weights, _ = tiny_builtin
    assert template_check(["--model", str(weights), "--data", str(tiny_data), "--n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["probe"] and out["vqa"]
    for scores in out["probe"].values():
        assert 0.0 <= scores["accuracy"] <= 1.0 and 0.0 <= scores["blank_yes_rate"] <= 1.0
    assert all(1 <= v["n"] <= 2 for v in out["vqa"].values())
    assert template_check(["--model", str(weights), "--data", str(tiny_data), "--n", "1"]) == 0
    assert "vqa " in capsys.readouterr().out
