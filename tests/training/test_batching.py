"""Collating examples into model batches: padding and the move to the model's device."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from training.batching import IGNORE_INDEX, LlavaBatcher, on_device_of
from training.data import QAExample


def _examples(data: Path) -> list[QAExample]:
    image = sorted((data / "images").glob("*.png"))[0]
    return [
        QAExample(image, "Is there a pneumothorax?", "no"),
        QAExample(image, "Which side is the pleural effusion on, and how large is it?", "left, small"),
    ]


def test_padding_falls_back_to_eos_when_the_tokenizer_has_no_pad_token(
    batcher: LlavaBatcher, tiny_data: Path
) -> None:
    processor = copy.deepcopy(batcher.processor)  # the shared fixture keeps its pad token
    processor.tokenizer.pad_token = None
    assert processor.tokenizer.pad_token_id is None  # as some converted checkpoints ship
    eos = processor.tokenizer.eos_token_id
    assert eos is not None
    batch = dataclasses.replace(batcher, processor=processor)(_examples(tiny_data))
    short = int(batch["attention_mask"][0].sum())
    assert short < batch["input_ids"].shape[1]  # the first example is padded
    assert torch.all(batch["input_ids"][0, short:] == eos)
    assert torch.all(batch["labels"][0, short:] == IGNORE_INDEX)


def test_on_device_of_moves_tensors_to_the_models_device_and_keeps_the_rest() -> None:
    model = torch.nn.Linear(2, 2, device="meta")  # a device other than the CPU, as a GPU would be
    ids = torch.ones(1, 3, dtype=torch.long)
    moved = on_device_of(model, {"input_ids": ids, "note": "kept"})
    assert moved["input_ids"].device.type == "meta"
    assert moved["note"] == "kept"
    assert ids.device.type == "cpu"  # the caller's batch is left as it was
