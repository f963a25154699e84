"""GPU decode benchmark for a LLaVA-1.5-7B-shaped model with random bf16 weights (run by hand).

Measures, with Hugging Face ``generate`` (eager attention, dynamic KV cache):

* single-stream decode tokens/s, against the memory-bandwidth bound: every decoded token reads
  all language-model weights once, so ``bound = HBM bandwidth / LM weight bytes``; the ratio
  ``measured / bound`` says how close decoding gets to the hardware limit;
* batched decode throughput (tokens/s over all streams) at 8 and 32 streams.

The bandwidth is measured here (a device-to-device copy of a 2 GiB tensor, counting the read and the
write) and, when the GPU is known, also compared with its datasheet figure.

    .venv/bin/python benchmarks/gpu_decode.py                # on a CUDA machine
    .venv/bin/python benchmarks/gpu_decode.py --tiny         # tiny shapes on CPU: checks it runs

Measured once on one H200 (2026-11-27): docs/BENCHMARKS.md, "GPU".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from llava_shapes import llava_15_7b_config

DATASHEET_GBS = {
    "H200": 4800.0,
    "H100 80GB HBM3": 3350.0,
    "H100 PCIe": 2000.0,
    "A100-SXM4-80GB": 2039.0,
    "A100-PCIE-40GB": 1555.0,
    "L40S": 864.0,
    "A10G": 600.0,
}


def build(tiny: bool, device: str, dtype: Any) -> Any:
    """LLaVA-1.5-7B shapes (CLIP ViT-L/336 + Llama-2-7B), or tiny ones, with random weights."""
    import torch
    from transformers import LlavaForConditionalGeneration

    config = llava_15_7b_config(tiny)
    torch.manual_seed(0)
    with torch.device(device):
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = LlavaForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    return model.eval()


def lm_weight_bytes(model: Any) -> int:
    """Bytes of weights read per decoded token: the language model and its head (not the ViT)."""
    params = list(model.model.language_model.parameters()) + list(model.lm_head.parameters())
    seen: set[int] = set()
    total = 0
    for p in params:
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def measured_bandwidth(device: str, gib: float) -> float:
    """Effective bandwidth in GB/s of a device-to-device copy (read + write)."""
    import torch

    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    start = time.perf_counter()
    reps = 10
    for _ in range(reps):
        dst.copy_(src)
    _sync(device)
    return 2 * src.numel() * src.element_size() * reps / (time.perf_counter() - start) / 1e9


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


class StepClock:
    """A logits processor that only records when each decoding step's logits are ready."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stamps: list[float] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        _sync(self.device)
        self.stamps.append(time.perf_counter())
        return scores


def decode_rate(
    model: Any,
    batch: int,
    new_tokens: int,
    image_tokens: int,
    image_size: int,
    device: str,
    dtype: Any,
    repeats: int = 2,
) -> float:
    """Decode tokens/s over all streams, timed between the first and the last decoding step.

    The first step's logits come after prefill (image + prompt), so the span from step 1 to step
    N covers N - 1 pure decode steps; the best of ``repeats`` runs is kept.
    """
    import torch
    from transformers import LogitsProcessorList

    vocab = model.config.text_config.vocab_size
    text = torch.randint(0, vocab - 2, (batch, 32), device=device)
    image = torch.full((batch, image_tokens), model.config.image_token_id, device=device)
    ids = torch.cat([text[:, :8], image, text[:, 8:]], dim=1)
    pixels = torch.randn(batch, 3, image_size, image_size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(repeats + 1):  # the first run warms up
        clock = StepClock(device)
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=pixels,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
                logits_processor=LogitsProcessorList([clock]),
            )
        steps = len(clock.stamps) - 1
        best = max(best, batch * steps / (clock.stamps[-1] - clock.stamps[0]))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (a check that it runs)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads for --tiny on CPU")
    args = parser.parse_args()
    import torch

    if args.tiny:
        torch.set_num_threads(args.cpu_threads)  # 2 threads on a busy 2-core machine stall badly

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if device == "cpu" and not args.tiny:
        print("no CUDA device: run with --tiny to check the script on CPU", file=sys.stderr)
        return 1
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = build(args.tiny, device, dtype)
    vision = model.config.vision_config
    image_tokens = (vision.image_size // vision.patch_size) ** 2
    weight_bytes = lm_weight_bytes(model)
    bandwidth = measured_bandwidth(device, 0.0625 if args.tiny else 2.0)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    datasheet = next((v for k, v in DATASHEET_GBS.items() if k in name), None)
    new_tokens = min(args.new_tokens, 16) if args.tiny else args.new_tokens
    single = decode_rate(model, 1, new_tokens, image_tokens, vision.image_size, device, dtype)
    bound = bandwidth * 1e9 / weight_bytes
    report: dict[str, Any] = {
        "device": name,
        "shapes": "tiny" if args.tiny else "llava-1.5-7b",
        "dtype": str(dtype),
        "lm_weight_gb": round(weight_bytes / 1e9, 3),
        "image_tokens": image_tokens,
        "new_tokens": new_tokens,
        "measured_copy_bandwidth_gbs": round(bandwidth, 1),
        "datasheet_bandwidth_gbs": datasheet,
        "single_stream_tokens_per_s": round(single, 2),
        "bandwidth_bound_tokens_per_s": round(bound, 2),
        "single_stream_vs_bound": round(single / bound, 3),
    }
    if datasheet:
        report["single_stream_vs_datasheet_bound"] = round(single / (datasheet * 1e9 / weight_bytes), 3)
    for batch in args.batches:
        rate = decode_rate(model, batch, new_tokens, image_tokens, vision.image_size, device, dtype)
        report[f"batch_{batch}_tokens_per_s"] = round(rate, 2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
