#!/usr/bin/env bash
# GPU checks for the scheduling core (issue 2; issue 8 item 3): CUDA == CPU == reference lengths,
# CUDA-graph capture and replay of schedule_torch and admit_top_k, no host synchronisation under
# torch.cuda.set_sync_debug_mode("error") for schedule_torch / plan_capacity / admit_top_k /
# verify (validate=False), the verifier's G-test on CUDA; then the scheduler benchmark with the
# torch-cuda column. Run from the repository root on a machine with CUDA.
set -euo pipefail
python -m pytest tests/test_scheduler.py tests/test_async_scheduler.py tests/test_verify.py -q -rs -m gpu
python benchmarks/bench_schedule.py --repeat 5
