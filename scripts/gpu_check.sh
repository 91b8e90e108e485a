#!/usr/bin/env bash
# The GPU check: everything sparksched wants measured on a real GPU, in one run of at most 8 minutes
# on one card, every result under one folder.
#
#   scripts/gpu_check.sh [--out DIR] [--tar FILE]     on the GPU machine (default DIR: gpu-check-out)
#   scripts/gpu_check.sh --dry-run [--out DIR]        the same steps on CPU at toy sizes (CI runs it:
#                                                     tests/test_gpu_check.py, well under a minute)
#   scripts/gpu_check.sh --fetch-wheels               on a machine with pip access: download the
#                                                     optional wheels into .whl/ (gitignored)
#
# Steps (each logged to DIR/<step>.log; a failing step does not stop the others; exit 1 if any failed):
#   1. cuda-tests   the CUDA tests: `pytest -m gpu` on the scheduler, async scheduler, verifier,
#                   CUDA-graph, profiler and profile CLI tests (graph replay == eager, no host sync,
#                   CPU == CUDA lengths, the verifier's G-test on CUDA)
#   2. greedy       the real loop's greedy identity on the device: speculative == plain greedy,
#                   token for token, bundled target + drafter, float32 and float64
#   3. profile      a measured step-time profile of a Qwen3-0.6B-shaped decoder (random weights: step
#                   time does not depend on their values), bfloat16, verify pass replayed from CUDA
#                   graphs; then `sparksched profile check` and `sparksched profile compare` (the
#                   roofline-vs-measured error table, per point, median and worst)
#   4. speed        the real loop's tokens/s vs plain decoding at batch 1, 16 and 64 (bundled models,
#                   benchmarks/bench_speculative.py, plain and speculative interleaved)
#   5. schedule     the scheduler's time per call inside a CUDA graph at 256 requests x 16 drafts
#                   (benchmarks/bench_schedule_graph.py)
#   6. engine-loop  examples/engine_loop.py on the device (the integration example, --check)
# and DIR/summary.txt with the headline numbers, DIR/env.txt with the device, versions and modules.
#
# What it needs. Required: python3 with torch (CUDA build), numpy, scipy, click, pytest, hypothesis:
# the GPU image has all of them. Optional: tqdm, matplotlib (PNGs), nvidia-ml-py (device facts),
# simpy. Nothing is installed from the network: when the folder .whl/ (or $WHEELS) holds wheels,
# the ones whose module is missing are installed from it with `pip install --no-index --no-deps
# --target` into DIR/site and put on PYTHONPATH. Make that folder here, before the GPU session:
#   scripts/gpu_check.sh --fetch-wheels        # pip download tqdm, simpy, matplotlib (+ deps) for
#                                              # CPython 3.12 manylinux x86_64 into .whl/
# and carry .whl with the working tree. Runs from the repository root without installing sparksched.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
OUT=gpu-check-out
TAR=
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) MODE=cpu ;;
        --out) OUT=$2; shift ;;
        --tar) TAR=$2; shift ;;
        --fetch-wheels) MODE=fetch ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}

if [ "$MODE" = fetch ]; then
    # pinned to the versions this project is tested with; --no-deps: each dependency is listed
    mkdir -p "$WHEELS"
    $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$WHEELS" \
        tqdm==4.70.1 simpy==4.1.2 matplotlib==3.11.2 contourpy==1.3.3 cycler==0.12.1 fonttools==4.68.0 \
        kiwisolver==1.5.1 pyparsing==3.3.3 python-dateutil==4.0.0 pillow==13.0.0
    rc=$?
    ls -la "$WHEELS"
    exit $rc
fi

mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
: >"$OUT/steps.txt"
status=0
T_START=$SECONDS

. scripts/steps.sh  # step NAME TIMEOUT_S CMD...

# ---------------------------------------------------------------- 0. what is here, what is missing
missing=$($PY - <<'PYEOF'
import importlib.util
mods = {"tqdm": "tqdm", "simpy": "simpy", "matplotlib": "matplotlib", "contourpy": "contourpy",
        "cycler": "cycler", "fontTools": "fonttools", "kiwisolver": "kiwisolver", "pyparsing": "pyparsing",
        "dateutil": "python_dateutil", "PIL": "pillow"}
print(" ".join(w for m, w in mods.items() if importlib.util.find_spec(m) is None))
PYEOF
)
if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
    wheels=()
    for w in $missing; do
        for f in "$WHEELS"/${w}-*.whl "$WHEELS"/$(echo "$w" | tr '_' '-')-*.whl; do [ -f "$f" ] && wheels+=("$f"); done
    done
    if [ ${#wheels[@]} -gt 0 ]; then
        echo "installing from $WHEELS (no network): ${wheels[*]##*/}"
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$OUT/site" "${wheels[@]}" \
            >"$OUT/wheels.log" 2>&1 && export PYTHONPATH="$PYTHONPATH:$OUT/site" \
            || echo "wheel install failed (see $OUT/wheels.log); optional modules stay missing"
    fi
fi
NEED=(); [ "$MODE" = gpu ] && NEED=(--need-cuda)
$PY scripts/gpu_env.py "${NEED[@]}" --require numpy,scipy,click,pytest,hypothesis >"$OUT/env.txt" 2>&1
rc=$?
cat "$OUT/env.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version \
    --format=csv >>"$OUT/env.txt" 2>&1
if [ $rc -ne 0 ]; then echo "preflight failed (see $OUT/env.txt)"; exit 1; fi

# ---------------------------------------------------------------- sizes: the real run and the dry run
if [ "$MODE" = cpu ]; then
    DEV=cpu
    PROFILE=(--device cpu --threads 1 --model tiny --dtype float32 --requests 1,2 --tokens 1,2,3 --contexts 32
             --parts verify --repeats 2 --rounds 1 --warmup 1)
    ROOF=h100  # nothing to compare a CPU with: exercises the code path only
    SPEED=(--device cpu --threads 1 --new-tokens 8 --batches 1,2 --solo-prompts 1 --repeats 1 --continuous 2)
    SCHED=(--device cpu --n 16 --g 4 --calls 20)
    GREEDY=(--per-domain 1 --new-tokens 8)
    T_TESTS=120; T_PROFILE=60; T_SPEED=60
else
    DEV=cuda
    ROOF=$($PY -c "
import torch
n = torch.cuda.get_device_name(0).lower()
print(next((k for k in ('h200', 'h100', 'a100', 'l40s') if k in n), 'h100'))")
    # n x (L + t) <= 256 x 2056 KV tokens of 28 layers x 8 KV heads x 128 (bf16): 60 GB, fits 80 GB and up
    PROFILE=(--gpu 0 --model qwen3-0.6b --dtype bfloat16 --cuda-graph --parts verify
             --requests 1,4,16,64,256 --tokens 1,2,4,8 --contexts 512,2048 --repeats 10 --warmup 3)
    SPEED=(--device cuda --threads 4 --new-tokens 128 --batches 1,16,64 --repeats 2 --continuous 2 --policies dspark,dspark-ragged,verify-all)
    SCHED=(--device cuda --n 256 --g 16 --replays 2000)
    GREEDY=(--per-domain 16 --new-tokens 96)
    T_TESTS=180; T_PROFILE=180; T_SPEED=150
fi

# ---------------------------------------------------------------- 1-5
step cuda-tests $T_TESTS $PY -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_cuda_graph.py \
    tests/test_scheduler.py tests/test_async_scheduler.py tests/test_verify.py tests/test_profiler.py \
    tests/test_profile_cli.py
step greedy 120 $PY benchmarks/lossless.py --device $DEV --parts greedy "${GREEDY[@]}" --out "$OUT/greedy.json"
step profile $T_PROFILE $PY -m sparksched.cli profile "${PROFILE[@]}" --no-progress -o "$OUT/profile.json"
if [ -f "$OUT/profile.json" ]; then
    step profile-check 60 $PY -m sparksched.cli profile check "$OUT/profile.json" --worst 8
    step profile-compare 60 $PY -m sparksched.cli profile compare "$OUT/profile.json" --roofline $ROOF \
        -o "$OUT/roofline-vs-measured.json"
fi
step speed $T_SPEED $PY benchmarks/bench_speculative.py "${SPEED[@]}" --out "$OUT/speed.json"
step schedule 60 $PY benchmarks/bench_schedule_graph.py "${SCHED[@]}" --out "$OUT/schedule.json"
step engine-loop 60 $PY examples/engine_loop.py --device $DEV --requests 4 --tokens 24 --check

# ---------------------------------------------------------------- summary
{
    echo "gpu_check ($MODE) $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - T_START)) s, status $status"
    grep -m1 "^device" "$OUT/env.txt"
    cat "$OUT/steps.txt"
    echo "-- cuda tests"; tail -n 1 "$OUT/cuda-tests.log" 2>/dev/null
    echo "-- greedy identity"; tail -n 1 "$OUT/greedy.log" 2>/dev/null
    echo "-- roofline vs measured"; tail -n 3 "$OUT/profile-compare.log" 2>/dev/null
    echo "-- real loop speed"; grep -A4 "^batch" "$OUT/speed.log" 2>/dev/null
    echo "-- scheduler"; tail -n 1 "$OUT/schedule.log" 2>/dev/null
} >"$OUT/summary.txt"
cat "$OUT/summary.txt"
if [ -n "$TAR" ]; then
    tar -czf "$TAR" -C "$(dirname "$OUT")" --exclude=site "$(basename "$OUT")" && echo "packed $OUT into $TAR"
fi
exit $status
