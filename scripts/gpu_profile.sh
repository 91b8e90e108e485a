#!/usr/bin/env bash
# Measure the target's step-time profile on the real GPU and compare it with the roofline estimate.
#
#   scripts/gpu_profile.sh            # on the GPU box: qwen3-8b, bfloat16, eager + CUDA graph (~3-5 min)
#   scripts/gpu_profile.sh cpu        # dry run of the same steps on CPU with the tiny preset (~1 min)
#
# Needs only python3 with torch, numpy and click (nvidia-ml-py for device facts; matplotlib for the
# PNGs, skipped when absent). Runs from the repository root without installing it. Everything it
# writes goes to $OUT (default ./gpu-profile-out):
#   <dev>-qwen3-8b-eager-<date>.json      measured profile, eager verify pass (+ drafter, prefill)
#   <dev>-qwen3-8b-cudagraph-<date>.json  measured profile, verify pass replayed from CUDA graphs
#   <dev>-qwen3-8b-<date>.json            the one to ship: CUDA-graph verify + eager drafter/prefill
#   check*.txt                            held-out interpolation error (sparksched profile check)
#   roofline-vs-measured*.txt / .json     roofline estimate vs measurement, per point, median / max
#   *.png, env.txt, *.log
set -uo pipefail
MODE=${1:-gpu}
OUT=${OUT:-$PWD/gpu-profile-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
SP="$PY -m sparksched.cli profile"
DATE=$(date -u +%Y%m%d)
status=0

STEP_TAIL=3
. "$(dirname "$0")/steps.sh"  # step NAME TIMEOUT_S CMD...

# preflight: imports and device facts, so a missing module fails in seconds, not after a model build
$PY "$(dirname "$0")/gpu_env.py" --require numpy,click --optional pynvml,scipy,matplotlib,tqdm,polars \
    >"$OUT/env.txt" 2>&1
rc=$?
cat "$OUT/env.txt"
if [ $rc -ne 0 ]; then echo "preflight failed (see $OUT/env.txt)"; exit 1; fi

if [ "$MODE" = cpu ]; then
    DEV=(--device cpu --threads 1)
    MODEL=tiny; DTYPE=float32; SLUG=cpu; GRAPH_FLAG=()  # the "graph" step runs eager: exercises the merge
    GRID=(--requests 1,2,4,8 --tokens 1,2,4,8 --contexts 64,256 --prompts 32,128
          --draft-requests 1,4 --blocks 5,7 --draft-context 128 --repeats 4 --rounds 3 --warmup 2)
    ROOF=h100   # nothing to compare a CPU with: exercises the code path only
else
    if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "no CUDA device visible; for a dry run use: scripts/gpu_profile.sh cpu"; exit 1
    fi
    DEV=(--gpu 0)
    MODEL=qwen3-8b; DTYPE=bfloat16; GRAPH_FLAG=(--cuda-graph)
    SLUG=$($PY -c "
import torch, re
n = torch.cuda.get_device_name(0).lower()
k = next((k for k in ('h200', 'h100', 'a100', 'l40s') if k in n), None)
print(k or re.sub('[^a-z0-9]+', '-', n).strip('-'))")
    # n L <= 128 x 2056 KV tokens (~39 GB bf16) + 16 GB weights: fits 80 GB
    GRID=(--grid gpu --repeats 10 --warmup 3)
    case "$SLUG" in h100|h200|a100|l40s) ROOF=$SLUG ;; *) ROOF=h100 ;; esac
fi
NAME="$SLUG-$MODEL-eager-$DATE"
GNAME="$SLUG-$MODEL-cudagraph-$DATE"

step eager 300 $SP "${DEV[@]}" --model $MODEL --dtype $DTYPE "${GRID[@]}" --no-progress \
    -o "$OUT/$NAME.json"
step cudagraph 180 $SP "${DEV[@]}" --model $MODEL --dtype $DTYPE "${GRID[@]}" "${GRAPH_FLAG[@]}" \
    --parts verify --no-progress -o "$OUT/$GNAME.json"
# the profile to ship: verify pass from CUDA-graph replay (what a serving engine pays), drafter and
# prefill from the eager run
if [ -f "$OUT/$NAME.json" ] && [ -f "$OUT/$GNAME.json" ]; then
    step merge 60 $PY - "$OUT/$GNAME.json" "$OUT/$NAME.json" "$OUT/$SLUG-$MODEL-$DATE.json" <<'PYEOF'
import json, sys
from profiler.run import write_profile
graph, eager, out = sys.argv[1:4]
g, e = json.load(open(graph)), json.load(open(eager))
g["draft"], g["prefill"] = e["draft"], e["prefill"]
g["drafter"] = e.get("drafter", {})
g["settings"]["parts"] = ["verify (cuda graph)", "draft (eager)", "prefill (eager)"]
g["sources"] = {"verify": graph.rsplit("/", 1)[-1], "draft, prefill": eager.rsplit("/", 1)[-1]}
g["skipped"] = g.get("skipped", []) + [dict(r, run="eager") for r in e.get("skipped", []) if r["part"] != "verify"]
write_profile(g, out)
print("wrote", out)
PYEOF
fi

for f in "$OUT/$NAME.json" "$OUT/$GNAME.json"; do
    [ -f "$f" ] || continue
    tag=$(basename "$f" .json)
    step "check-$tag" 60 $SP check "$f" --worst 8 && cp "$OUT/check-$tag.log" "$OUT/check-$tag.txt"
    step "compare-$tag" 60 $SP compare "$f" --roofline $ROOF -o "$OUT/roofline-vs-measured-$tag.json" \
        && cp "$OUT/compare-$tag.log" "$OUT/roofline-vs-measured-$tag.txt"
    # table + PNG (needs matplotlib; the table is in the log either way)
    (cd "$OUT" && step "show-$tag" 60 $SP show "$f" --max-rows 400) || true
done
# the roofline of the same grid and device, for reference
step roofline 60 $SP --roofline $ROOF --model $MODEL --dtype $DTYPE "${GRID[@]}" \
    -o "$OUT/$ROOF-$MODEL-roofline-same-grid.json" || true
echo "== summary"
for f in "$OUT"/check-*.txt; do [ -f "$f" ] && { echo "$(basename "$f"):"; head -n 4 "$f"; }; done
for f in "$OUT"/roofline-vs-measured-*.txt; do [ -f "$f" ] && { echo "$(basename "$f"):"; tail -n 1 "$f"; }; done
echo "done (status $status); files in $OUT:"; ls -la "$OUT"
exit $status
