"""Tiny offline builders shared by the tests: a BPE-tokenizer Llama LM (hidden 32, 2 layers)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_VISION = {
    "image_size": 32,
    "patch_size": 16,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_channels": 3,
}


def corpus_from(data: Path) -> list[str]:
    """Questions, answers and captions of every split of a phantoms folder."""
    texts: list[str] = []
    for split in ("train", "val", "test"):
        for name in ("vqa", "captions", "probes"):
            path = data / split / f"{name}.jsonl"
            if path.is_file():
                for line in path.read_text().splitlines():
                    record: dict[str, Any] = json.loads(line)
                    texts += [str(record.get(k, "")) for k in ("question", "answer", "caption")]
    return texts


def make_tiny_lm(out: Path, corpus: Iterable[str]) -> Path:
    """Write a tiny ``LlamaForCausalLM`` and a byte-level BPE tokenizer trained on ``corpus`` to ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([*corpus, "user assistant system yes no left right"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )
    tokenizer.save_pretrained(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out
