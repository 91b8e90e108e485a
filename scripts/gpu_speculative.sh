#!/usr/bin/env bash
# Speed of the real speculative loop vs plain autoregressive decoding on CUDA (bundled checkpoints).
#
#   bash scripts/gpu_speculative.sh            # from the repository root; results under $OUT (default ./out)
#
# Needs: python >= 3.10, torch with CUDA, numpy. Not needed: tokenizers, polars, simpy, scipy
# (the benchmark loads the bundled target + drafter without the tokenizer). CPU dry run:
#   DEVICE=cpu bash scripts/gpu_speculative.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out}"
DEVICE="${DEVICE:-cuda}"
NEW_TOKENS="${NEW_TOKENS:-128}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python}"

$PY - <<'PY' | tee "$OUT/env.txt"
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$OUT/env.txt" || true

# 1. greedy losslessness on this device: speculative == plain greedy, token for token
$PY - "$DEVICE" <<'PY' | tee "$OUT/greedy_identity_${DEVICE}.txt"
import sys, numpy as np, torch
from sparksched.speculative import autoregressive_generate, generate
from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout
dev = sys.argv[1]
_, target, drafter = load_bundle(device=dev, tokenizer=False)
held = load_heldout(BUNDLED / "heldout.npz")
rng = np.random.default_rng(0)
prompts = [held[d][s:s + 48].tolist() for d in sorted(held) for s in rng.integers(0, held[d].size - 48, 16)]
ar = [t for i in range(0, 48, 16) for t in autoregressive_generate(target, prompts[i:i + 16], 96, greedy=True).tokens]
for pol in ("static-3", "verify-all"):
    sp = [t for i in range(0, 48, 16) for t in generate(target, drafter, prompts[i:i + 16], 96, pol, greedy=True).tokens]
    print(f"{dev} greedy {pol}: identical {sum(a == b for a, b in zip(ar, sp))}/{len(ar)} sequences of 96 tokens")
PY

# 2. speed: batch 1 and 16, sampling (temperature 1) and greedy
$PY benchmarks/bench_speculative.py --device "$DEVICE" --threads 4 --new-tokens "$NEW_TOKENS" --batches 1,16 \
    --out "$OUT/speculative_${DEVICE}_sample.json" | tee "$OUT/speculative_${DEVICE}_sample.txt"
$PY benchmarks/bench_speculative.py --device "$DEVICE" --threads 4 --new-tokens "$NEW_TOKENS" --batches 1,16 --greedy \
    --out "$OUT/speculative_${DEVICE}_greedy.json" | tee "$OUT/speculative_${DEVICE}_greedy.txt"
echo "results in $OUT"
