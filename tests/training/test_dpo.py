"""DPO recipe: 2 steps from a stage-2 checkpoint; the reference is the starting policy, frozen."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.training.conftest import common
from training.batching import answer_logprobs, on_device_of
from training.config import build
from training.data import QAExample, load_qa
from training.losses import dpo_loss
from training.recipes.dpo import DPOConfig, DPORecipe, reference_adapter


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


def test_dpo_reference_is_the_frozen_starting_policy(
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
    assert recipe.batcher is not None
    pair = recipe.pairs[0]
    peft_model = recipe.model
    # on the model's device: a GPU when one is there (the recipes move their batches the same way)
    batch = on_device_of(peft_model, recipe.batcher([QAExample(pair.image, pair.question, pair.chosen)]))
    labels = batch.pop("labels")

    def logps(reference: bool) -> torch.Tensor:
        with torch.no_grad():
            if reference:
                with reference_adapter(peft_model):
                    return answer_logprobs(peft_model(**batch).logits, labels)
            return answer_logprobs(peft_model(**batch).logits, labels)

    start_policy, start_ref = logps(False), logps(True)
    assert torch.allclose(start_policy, start_ref, atol=1e-6)  # same model at step 0: DPO loss is log 2
    assert abs(float(dpo_loss(start_policy, start_policy, start_ref, start_ref).loss) - 0.6931) < 1e-3
    with torch.no_grad():
        base_model = recipe.build_base().to(labels.device)
        base = answer_logprobs(base_model(**batch).logits, labels)
    assert not torch.allclose(start_ref, base)  # the reference keeps the stage-2 adapter
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and not any(".reference." in n for n in trainable)
    result = recipe.train()
    assert not torch.allclose(logps(False), start_policy)  # the policy moved
    assert torch.allclose(logps(True), start_ref, atol=1e-6)  # the reference did not
    recipe.cleanup()
    assert result.steps == 2
    before = load_file(str(stage2_ckpt / "adapter" / "adapter_model.safetensors"))
    after = load_file(str(result.checkpoint / "adapter" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()  # only the policy adapter is exported
    assert not (result.checkpoint / "adapter" / "reference").exists()
    assert any(not torch.equal(before[k], after[k]) for k in before)
