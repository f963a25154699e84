"""The promotion gate on tiny models: identical candidate promoted, damaged refused, registry, rollback."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from app.cli import main
from medvlm.adapters import adapter_version
from tests.training.conftest import common
from training.config import build
from training.promote import (
    METRICS,
    Evaluator,
    PromoteError,
    compare,
    read_registry,
    resolve_adapter,
    rollback,
    run_gate,
)


@pytest.fixture(scope="module")
def gate_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> tuple[Path, Path]:
    """A stage-2 checkpoint trained long enough to score above zero (150 steps, ~5 s) and its model folder."""
    from medvlm.builtin.assemble import assemble
    from training.recipes.instruct_lora import InstructLoraConfig, InstructLoraRecipe

    out = tmp_path_factory.mktemp("gate")
    values = common(
        out / "stage2",
        tiny_data,
        init_from=str(stage1_ckpt),
        lm_dir=str(tiny_lm),
        lora={"r": 2, "alpha": 4},
        max_steps=150,
        batch_size=8,
        log_every=50,
        optim={"lr": 1e-2},
    )
    ckpt = InstructLoraRecipe(build(InstructLoraConfig, values)).run().checkpoint
    assemble(tiny_lm, ckpt, out / "model")
    return out / "model", ckpt


def _copy_adapter(ckpt: Path, dest: Path, scale: float | None = None) -> Path:
    """A copy of the checkpoint's adapter; ``scale`` multiplies the LoRA B matrices (0: adapter off)."""
    shutil.copytree(ckpt / "adapter", dest)
    if scale is not None:
        weights = dest / "adapter_model.safetensors"
        tensors = load_file(str(weights))
        save_file({k: v * scale if "lora_B" in k else v for k, v in tensors.items()}, str(weights))
    return dest


def _promote(
    capsys: pytest.CaptureFixture[str], model: Path, data: Path, baseline: Path, candidate: Path, *extra: str
) -> tuple[int, str, str]:
    argv = ["train", "promote", "--model", str(model), "--data", str(data)]
    argv += ["--baseline", str(baseline), "--candidate", str(candidate), *extra]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_identical_candidate_is_promoted_and_registered(
    gate_model: tuple[Path, Path], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, ckpt = gate_model
    candidate = _copy_adapter(ckpt, tmp_path / "candidate")
    registry = tmp_path / "registry.json"
    code, out, err = _promote(
        capsys, model, tiny_data, ckpt, candidate, "--registry", str(registry), "--json"
    )
    assert code == 0, err
    report = json.loads(out.splitlines()[0])
    assert report["promoted"] is True and report["registry"] == str(registry)
    assert set(report["metrics"]) == {name for _, name in METRICS}
    assert report["metrics"]["closed_accuracy"]["baseline"] > 0  # the tiny model scores above zero
    assert all(m["delta"] == 0 for m in report["metrics"].values())
    assert out.splitlines()[1].startswith("medvlm train promote: promoted: no metric fell by more than 0.01")
    current = read_registry(registry)["current"]  # type: ignore[index]
    assert current["adapter"] == str(candidate.resolve())
    assert current["version"] == adapter_version(candidate) == report["candidate"]
    assert current["metrics"] == {k: v["candidate"] for k, v in report["metrics"].items()}
    assert current["promoted_at"].endswith("Z")
    assert current["previous"]["version"] == adapter_version(ckpt / "adapter")
    assert not list(tmp_path.glob(".registry.json.*"))  # written through a temporary file, renamed


def test_damaged_candidate_is_refused(
    gate_model: tuple[Path, Path], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, ckpt = gate_model
    zeroed = _copy_adapter(ckpt, tmp_path / "zeroed", scale=0.0)
    registry = tmp_path / "registry.json"
    code, out, err = _promote(capsys, model, tiny_data, ckpt, zeroed, "--registry", str(registry))
    assert code == 1
    assert "| closed_accuracy |" in out and "(regressed)" in out
    last = err.splitlines()[-1]  # above it: the model loader's progress bars
    assert last.startswith("medvlm train promote: refused: closed_accuracy fell by ")
    assert "more than the tolerance 0.01" in last and ". " not in last
    assert not registry.exists()
    # a generous tolerance lets the same candidate through
    code, out, _ = _promote(capsys, model, tiny_data, ckpt, zeroed, "--tolerance", "1", "--json")
    assert code == 0 and json.loads(out.splitlines()[0])["metrics"]["closed_accuracy"]["delta"] < 0


def _fake(metrics: dict[str, dict[str, float]]) -> Evaluator:
    def evaluate(adapter: Path) -> dict[str, float]:
        return metrics[adapter.name]

    return evaluate


def test_registry_chain_and_rollback(
    stage2_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _copy_adapter(stage2_ckpt, tmp_path / "a")
    b = _copy_adapter(stage2_ckpt, tmp_path / "b", scale=2.0)
    c = _copy_adapter(stage2_ckpt, tmp_path / "c", scale=3.0)
    good = {"closed_accuracy": 0.5, "open_recall": 0.4, "paired_accuracy": 0.2}
    evaluate = _fake({"a": good, "b": good, "c": {**good, "open_recall": 0.395}})
    registry = tmp_path / "reg" / "registry.json"
    first = run_gate(a, b, evaluate, registry=registry)
    assert first.decision.promoted and first.registry_entry is not None
    with pytest.raises(
        PromoteError, match=r"the baseline \(a@.*\) is not the registry's current adapter \(b@"
    ):
        run_gate(a, c, evaluate, registry=registry)
    second = run_gate(b, c, evaluate, registry=registry)
    assert second.decision.promoted  # 0.005 below, within 0.01
    chain = read_registry(registry)["current"]  # type: ignore[index]
    assert [chain["version"], chain["previous"]["version"], chain["previous"]["previous"]["version"]] == [
        adapter_version(c),
        adapter_version(b),
        adapter_version(a),
    ]
    assert chain["previous"]["previous"]["promoted_at"] is None  # the first baseline, never promoted here

    assert main(["train", "promote", "--rollback", "--registry", str(registry), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "rolled_back": True,
        "adapter": str(b.resolve()),
        "version": adapter_version(b),
    }
    restored = read_registry(registry)["current"]  # type: ignore[index]
    assert restored["rolled_back_from"]["version"] == adapter_version(c)
    assert rollback(registry)["version"] == adapter_version(a)
    with pytest.raises(PromoteError, match="has no previous adapter to roll back to"):
        rollback(registry)


def test_rollback_refuses_a_changed_previous_adapter(stage2_ckpt: Path, tmp_path: Path) -> None:
    a = _copy_adapter(stage2_ckpt, tmp_path / "a")
    b = _copy_adapter(stage2_ckpt, tmp_path / "b")
    same = {"closed_accuracy": 0.5, "open_recall": 0.5, "paired_accuracy": 0.5}
    registry = tmp_path / "registry.json"
    run_gate(a, b, _fake({"a": same, "b": same}), registry=registry)
    _copy_adapter(stage2_ckpt, tmp_path / "a2", scale=2.0)
    shutil.copy(tmp_path / "a2" / "adapter_model.safetensors", a / "adapter_model.safetensors")
    before = registry.read_text()
    with pytest.raises(PromoteError, match=r"has changed since it was recorded .*nothing was rolled back"):
        rollback(registry)
    shutil.rmtree(a)
    with pytest.raises(PromoteError, match="no longer exists; nothing was rolled back"):
        rollback(registry)
    assert registry.read_text() == before


def test_compare_tolerance_and_unmeasured_metrics() -> None:
    base = {"closed_accuracy": 0.50, "open_recall": math.nan, "paired_accuracy": 0.30}
    assert compare(base, {**base, "closed_accuracy": 0.49}, 0.01).promoted  # exactly the tolerance
    refused = compare(base, {**base, "paired_accuracy": 0.28}, 0.01)
    assert not refused.promoted and refused.reason.startswith("refused: paired_accuracy fell by 0.020")
    lost = compare(base, {**base, "closed_accuracy": math.nan}, 0.01)
    assert not lost.promoted and "could not be measured on the candidate" in lost.reason
    ok = compare(base, base, 0.0)
    assert ok.promoted and "open_recall not measured" in ok.reason
    assert ok.to_json()["metrics"]["open_recall"] == {
        "baseline": None,
        "candidate": None,
        "delta": None,
        "regressed": False,
        "measured": False,
    }
    with pytest.raises(PromoteError, match="tolerance must be a non-negative number"):
        compare(base, base, -0.1)


def test_bad_paths_give_one_sentence(
    stage2_ckpt: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    bad_registry = tmp_path / "bad.json"
    bad_registry.write_text("{not json")
    nowhere = tmp_path / "nowhere"
    base = ["train", "promote", "--model", str(tmp_path / "no-model")]
    cases = [
        (
            [*base, "--baseline", str(nowhere), "--candidate", str(stage2_ckpt), "--data", str(tiny_data)],
            f"{nowhere} does not exist",
        ),
        (
            [*base, "--baseline", str(stage2_ckpt), "--candidate", str(empty), "--data", str(tiny_data)],
            f"{empty} is neither a LoRA adapter folder (adapter_config.json) nor a checkpoint with adapter/",
        ),
        (
            [*base, "--baseline", str(stage2_ckpt), "--candidate", str(stage2_ckpt), "--data", str(nowhere)],
            f"{nowhere} does not exist",
        ),
        ([*base, "--baseline", str(stage2_ckpt)], "--candidate and --data are required"),
        (["train", "promote", "--rollback"], "--rollback needs --registry FILE"),
        (
            ["train", "promote", "--rollback", "--registry", str(nowhere)],
            f"there is no registry at {nowhere}",
        ),
        (
            ["train", "promote", "--rollback", "--registry", str(bad_registry)],
            f"the registry {bad_registry} cannot be read (JSONDecodeError)",
        ),
        (
            [
                *base,
                "--baseline",
                str(stage2_ckpt),
                "--candidate",
                str(stage2_ckpt),
                "--data",
                str(tiny_data),
            ],
            "evaluating adapter: ",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert lines[-1].startswith(f"medvlm train promote: {message}"), err
        assert len([line for line in lines if line.startswith("medvlm")]) == 1


def test_resolve_adapter_accepts_both_layouts(stage2_ckpt: Path) -> None:
    assert resolve_adapter(stage2_ckpt) == (stage2_ckpt / "adapter").resolve()
    assert resolve_adapter(stage2_ckpt / "adapter") == (stage2_ckpt / "adapter").resolve()


def test_loop_export_dpo_promote(
    gate_model: tuple[Path, Path], tiny_data: Path, tiny_lm: Path, tmp_path: Path
) -> None:
    """Approved corrections exported by the store train a DPO candidate that the gate then judges."""
    from app.store import (
        AuditKey,
        InteractionCreate,
        Store,
        actor_pseudonym,
        case_image_path,
        image_content_id,
        init_db,
        make_engine,
    )
    from data_prep.pseudonym import PseudonymKey, study_pseudonym
    from training.data import load_qa
    from training.promote import harness_evaluator
    from training.recipes.dpo import DPOConfig, DPORecipe

    model, ckpt = gate_model
    site = PseudonymKey(b"loop-test-site-key-0123456789", "test")
    engine = make_engine(f"sqlite:///{tmp_path / 'medvlm.db'}")
    key = AuditKey.derive(site)
    init_db(engine, key)
    store = Store.open(engine, key)
    clinician, reviewer = actor_pseudonym(site, "c"), actor_pseudonym(site, "r")
    store.register_actor(pseudonym=clinician, role="clinician")
    store.register_actor(pseudonym=reviewer, role="reviewer")
    cases = tmp_path / "cases"
    cases.mkdir()
    closed = [e for e in load_qa(tiny_data, "train") if e.answer in ("yes", "no") and e.image][:4]
    for i, example in enumerate(closed):
        assert example.image is not None
        png = example.image.read_bytes()
        sha = image_content_id(png)
        case_image_path(cases, sha).write_bytes(png)
        wrong = "no" if example.answer == "yes" else "yes"
        interaction = store.record_interaction(
            actor=clinician,
            data=InteractionCreate(
                study_pseudonym=study_pseudonym(site, f"1.2.3.{i}"),
                question=example.question,
                answer=wrong,
                model_version="tiny@1",
                image_sha256=sha,
            ),
        )
        correction = store.propose_correction(
            interaction_id=interaction.id, author=clinician, corrected_answer=example.answer
        )
        store.review_correction(correction_id=correction.id, reviewer=reviewer, decision="approved")
    prefs = tmp_path / "prefs.jsonl"
    assert store.export_preferences(prefs, images=cases).count == len(closed)
    engine.dispose()

    values = common(
        tmp_path / "dpo",
        cases,  # images are absolute paths in the export; data_dir is only their root
        init_from=str(ckpt),
        lm_dir=str(tiny_lm),
        preferences=str(prefs),
    )
    dpo = DPORecipe(build(DPOConfig, values)).run().checkpoint
    result = run_gate(ckpt, dpo, harness_evaluator(str(model), tiny_data), tolerance=1.0)
    assert result.decision.promoted and result.candidate_version.startswith("adapter@")
    assert result.candidate_version != result.baseline_version  # DPO changed the weights
