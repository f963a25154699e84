"""Stage-2 curriculum: a template filter, and a LoRA stage that continues the previous adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import common
from training.config import build
from training.recipes.instruct_lora import InstructLoraConfig, InstructLoraRecipe


def test_templates_filter_keeps_only_existence_questions(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = common(
        tmp_path,
        tiny_data,
        init_from=str(stage1_ckpt),
        lm_dir=str(tiny_lm),
        data_files=["vqa", "probes"],
        templates=["existence"],
        lora={"r": 2, "alpha": 4},
        max_steps=0,
    )
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    recipe.run()
    assert recipe.examples and {e.template for e in recipe.examples} == {"existence"}
    assert any(e.question.startswith("Is there a") for e in recipe.examples)  # probe pairs included


def test_stage2_continues_the_previous_adapter(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage2_ckpt: Path
) -> None:
    values = common(tmp_path, tiny_data, init_from=str(stage2_ckpt), lm_dir=str(tiny_lm), max_steps=0)
    ckpt = InstructLoraRecipe(build(InstructLoraConfig, values)).run().checkpoint
    before = load_file(str(stage2_ckpt / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    trained = InstructLoraRecipe(
        build(InstructLoraConfig, {**values, "max_steps": 2, "out_dir": str(tmp_path / "more")})
    ).run()
    moved = load_file(str(trained.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert any(not torch.equal(before[k], moved[k]) for k in before)  # the continued adapter trains


def test_per_example_loss_stage_trains_and_bad_value_is_refused(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = common(
        tmp_path,
        tiny_data,
        init_from=str(stage1_ckpt),
        lm_dir=str(tiny_lm),
        data_files=["vqa"],
        loss_per="example",
        lora={"r": 2, "alpha": 4},
        max_steps=2,
    )
    result = InstructLoraRecipe(build(InstructLoraConfig, values)).run()
    adapter = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and bool(v.abs().sum() > 0) for k, v in adapter.items())
    with pytest.raises(ValueError, match="loss_per"):
        build(InstructLoraConfig, {**values, "loss_per": "word"})


def test_reasoned_probe_answers_read_the_attribute_first(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    from training.eval.metrics import closed_correct

    values = common(
        tmp_path,
        tiny_data,
        init_from=str(stage1_ckpt),
        lm_dir=str(tiny_lm),
        data_files=["probes"],
        templates=["attribute", "position", "existence"],
        probe_answers="reasoned",
        lora={"r": 2, "alpha": 4},
        max_steps=0,
    )
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    recipe.run()
    reasoned = [e for e in recipe.examples if e.template in ("attribute", "position")]
    assert reasoned and all(e.answer.startswith("It is ") for e in reasoned)
    assert all(e.answer.endswith((", so yes.", ", so no.")) for e in reasoned)
    plain = [e for e in recipe.examples if e.template == "existence"]
    assert plain and {e.answer for e in plain} <= {"yes", "no"}
    # the harness scores the verdict word, so the reasoned form keeps the gold answer
    gold = {"yes", "no"}
    for e in reasoned:
        verdict = e.answer.rsplit(" ", 1)[1].rstrip(".")
        assert verdict in gold and closed_correct(e.answer, verdict)
        assert not closed_correct(e.answer, ({"yes", "no"} - {verdict}).pop())
    with pytest.raises(ValueError, match="probe_answers"):
        build(InstructLoraConfig, {**values, "probe_answers": "long"})


def test_absent_negatives_join_the_probe_examples(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = common(
        tmp_path,
        tiny_data,
        init_from=str(stage1_ckpt),
        lm_dir=str(tiny_lm),
        data_files=["probes"],
        templates=["attribute", "absent_attribute"],
        probe_answers="reasoned",
        absent_negatives=True,
        per_template=6,
        lora={"r": 2, "alpha": 4},
        max_steps=0,
    )
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    recipe.run()
    counts = {t: sum(e.template == t for e in recipe.examples) for t in ("attribute", "absent_attribute")}
    assert counts == {"attribute": 6, "absent_attribute": 6}
    assert all(
        e.answer.startswith("There is no ") for e in recipe.examples if e.template == "absent_attribute"
    )
