"""Preflight of the GPU scripts: device facts, versions and modules, printed; exit 1 when a required
module is missing or (with --need-cuda) no CUDA device is visible, so a broken setup fails in seconds,
not after a model build.

    python scripts/gpu_env.py [--need-cuda] [--require numpy,scipy] [--optional tqdm,matplotlib]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--need-cuda", action="store_true")
    ap.add_argument("--require", default="numpy,scipy,click")
    ap.add_argument("--optional", default="tqdm,matplotlib,pynvml,simpy,numba,polars,tokenizers")
    a = ap.parse_args(argv)
    import torch

    print("date", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
          "available", torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("device", torch.cuda.get_device_name(0), f"{p.total_memory / 2**30:.1f} GiB", "sm", f"{p.major}.{p.minor}")
    else:
        print("device cpu", platform.processor() or platform.machine(), "cores", os.cpu_count())
    missing = []
    for kind, names in (("required", a.require), ("optional", a.optional)):
        for m in filter(None, names.split(",")):
            try:
                importlib.import_module(m)
                print(kind, m, "ok")
            except Exception as e:  # any import failure counts as missing
                print(kind, m, "missing", type(e).__name__)
                if kind == "required":
                    missing.append(m)
    import profiler.compare  # noqa: F401
    import profiler.run  # noqa: F401
    import sparksched.commands.profile  # noqa: F401
    import sparksched.speculative  # noqa: F401

    print("imports ok")
    if missing:
        print(f"missing required module(s): {', '.join(missing)}")
        return 1
    if a.need_cuda and not torch.cuda.is_available():
        print("no CUDA device visible; for the CPU dry run use --dry-run")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
