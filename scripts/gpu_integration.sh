#!/usr/bin/env bash
# GPU checks for the engine-integration API (issue 8, item 4): CUDA-graph capture of the torch
# scheduler + assign_budget + verify (replay == eager), no host sync under
# torch.cuda.set_sync_debug_mode("error"), identical lengths on CPU and CUDA; then the engine-loop
# example on the GPU. Run from the repository root on a machine with CUDA.
set -euo pipefail
python -m pytest tests/test_cuda_graph.py tests/test_layouts.py tests/test_budget.py -q -rs
python examples/engine_loop.py --device cuda
