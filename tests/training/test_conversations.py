"""Multi-turn conversations per image: rendering, labels and grouping."""

from __future__ import annotations

from pathlib import Path

from tests.training.conftest import common
from training.batching import IGNORE_INDEX, LlavaBatcher
from training.config import build
from training.data import QAExample
from training.recipes.instruct_lora import InstructLoraConfig, InstructLoraRecipe
from training.recipes.llava_common import group_by_image


def test_conversation_matches_the_chat_template_and_labels_only_answers(batcher: LlavaBatcher) -> None:
    turns = [("Is there a pneumothorax?", "no"), ("Which side is the effusion on?", "left")]
    ids, labels = batcher.encode_turns(turns)
    processor = batcher.processor
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0][0]}]},
        {"role": "assistant", "content": turns[0][1]},
        {"role": "user", "content": [{"type": "text", "text": turns[1][0]}]},
        {"role": "assistant", "content": turns[1][1]},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False).rstrip("\n")
    rendered = rendered.replace(processor.image_token, processor.image_token * batcher.image_seq_len)
    tokenizer = processor.tokenizer
    assert tokenizer.decode(ids) == rendered
    labelled = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])
    assert labelled == "no<|im_end|>left<|im_end|>"
    assert ids.count(tokenizer.convert_tokens_to_ids(processor.image_token)) == batcher.image_seq_len


def test_group_by_image_keeps_images_apart_and_caps_turns() -> None:
    examples = [QAExample(image=Path(f"img{i % 3}.png"), question=f"q{i}", answer="yes") for i in range(10)]
    groups = group_by_image(examples, 2, seed=0)
    assert all(len(g) <= 2 and len({e.image for e in g}) == 1 for g in groups)
    assert sorted(e.question for g in groups for e in g) == sorted(e.question for e in examples)
    assert groups == group_by_image(examples, 2, seed=0)
    assert groups != group_by_image(examples, 2, seed=1)


def test_stage2_trains_on_conversations(
    tmp_path: Path, tiny_data: Path, tiny_lm: Path, stage1_ckpt: Path
) -> None:
    values = common(
        tmp_path,
        tiny_data,
        init_from=str(stage1_ckpt),
        lm_dir=str(tiny_lm),
        data_files=["vqa", "probes"],
        turns_per_image=4,
        lora={"r": 2, "alpha": 4},
    )
    recipe = InstructLoraRecipe(build(InstructLoraConfig, values))
    result = recipe.run()
    assert recipe.conversations and all(1 <= len(c) <= 4 for c in recipe.conversations)
    assert result.steps == 2 and result.final_loss == result.final_loss
