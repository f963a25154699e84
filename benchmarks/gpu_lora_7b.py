"""LoRA training-step throughput and peak memory of a 7B LLaVA-shaped model with random weights.

Run by hand on a GPU machine (nothing is downloaded; weights are random, so only speed and memory
mean anything):

    python benchmarks/gpu_lora_7b.py --batch-size 4 --seq-len 1024 --steps 10 [--grad-checkpointing]
    python benchmarks/gpu_lora_7b.py --tiny            # CPU check of the script itself (2 steps)

Shape: CLIP ViT-L/14 at 336 px (576 image tokens) + a Llama-2-7B-shaped LM (hidden 4096, 32 layers,
32 heads, MLP 11008, vocab 32064), LoRA r=16 on q/k/v/o of the LM, projector trainable, bf16 on GPU.
Prints one JSON line: steps/s, samples/s, tokens/s, peak GPU memory (GiB), trainable parameters.
Measured once on one H200 (2026-11-27): docs/BENCHMARKS.md, "GPU".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from llava_shapes import llava_15_7b_config


def main(argv: list[str] | None = None) -> int:
    """Build the model, run warm-up and timed LoRA steps, print one JSON line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (checks the script)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--seq-len", type=int, default=1024, help="total tokens per sample (image tokens included)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    if not args.tiny and not torch.cuda.is_available():
        sys.stderr.write("gpu_lora_7b: no CUDA device (use --tiny to check the script on CPU)\n")
        return 1
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if args.tiny:
        args.steps, args.warmup, args.seq_len, args.batch_size = 2, 0, 64, 2
    torch.manual_seed(0)
    config = llava_15_7b_config(args.tiny)
    with device:
        model: Any = LlavaForConditionalGeneration(config)
    model = model.to(dtype)
    if args.grad_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
    )
    model = get_peft_model(model, lora)
    base: Any = model.get_base_model()
    for p in base.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    vision = config.vision_config
    n_image = (vision.image_size // vision.patch_size) ** 2
    if args.seq_len <= n_image:
        sys.stderr.write(f"gpu_lora_7b: --seq-len must exceed the {n_image} image tokens\n")
        return 2
    ids = torch.randint(0, config.text_config.vocab_size - 2, (args.batch_size, args.seq_len), device=device)
    ids[:, 1 : 1 + n_image] = config.image_token_id
    pixels = torch.randn(args.batch_size, 3, vision.image_size, vision.image_size, device=device, dtype=dtype)
    labels = ids.clone()
    labels[:, : 1 + n_image] = -100

    def step() -> None:
        loss = model(input_ids=ids, pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (tiny check)",
        "tiny": args.tiny,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "grad_checkpointing": args.grad_checkpointing,
        "trainable_params": trainable,
        "steps_per_s": round(args.steps / seconds, 4),
        "samples_per_s": round(args.steps * args.batch_size / seconds, 3),
        "tokens_per_s": round(args.steps * args.batch_size * args.seq_len / seconds, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if device.type == "cuda"
        else None,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
