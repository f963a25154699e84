"""DPO recipe: 2 steps from a stage-2 checkpoint; the reference is the adapter-disabled model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.training.conftest import common
from training.batching import answer_logprobs
from training.config import build
from training.data import QAExample, load_qa
from training.recipes.dpo import DPOConfig, DPORecipe


def _preferences(data: Path, out: Path) -> Path:
    closed = [e for e in load_qa(data, "train") if e.answer in ("yes", "no")][:6]
    lines = [
        json.dumps(
            {
                "image": str(e.image.relative_to(data)) if e.image else "",
                "question": e.question,
                "chosen": e.answer,
                "rejected": "no" if e.answer == "yes" else "yes",
            }
        )
        for e in closed
    ]
    path = out / "preferences.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dpo_two_steps_and_reference_is_base(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage2_ckpt: Path
) -> None:
    prefs = _preferences(tiny_data, tmp_path)
    values = common(
        tmp_path / "dpo",
        tiny_data,
        init_from=str(stage2_ckpt),
        lm_dir=str(tiny_lm),
        preferences=str(prefs),
        optim={"lr": 1e-2},
    )
    recipe = DPORecipe(build(DPOConfig, values))
    recipe.setup()
    # reference pass (adapter disabled) == a model without the adapter at all
    assert recipe.batcher is not None
    pair = recipe.pairs[0]
    batch = recipe.batcher([QAExample(pair.image, pair.question, pair.chosen)])
    labels = batch.pop("labels")
    peft_model = recipe.model
    with torch.no_grad():
        with peft_model.disable_adapter():  # type: ignore[operator]
            ref = answer_logprobs(peft_model(**batch).logits, labels)
        base = recipe.build_base()
        plain = answer_logprobs(base(**batch).logits, labels)
        policy = answer_logprobs(peft_model(**batch).logits, labels)
    assert torch.allclose(ref, plain, atol=1e-5)
    assert not torch.allclose(policy, ref)  # the stage-2 adapter is active in the policy
    result = recipe.train()
    recipe.cleanup()
    assert result.steps == 2
    before = load_file(str(stage2_ckpt / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
