"""Do two commits give byte-identical results? Every policy on every bundled trace, Parquet compared by hash.

    python benchmarks/same_outputs.py --ref 4ccae23          # this checkout against commit 4ccae23
    python benchmarks/same_outputs.py --digests out.json     # only write this checkout's digests

For a refactor that must not change behaviour: each bundled trace (chat, code, math, mixed; the first
--max-requests requests) under every simulator policy at 1x and 8x load, seed 0, written with
`SimResult.write` (requests, steps, rounds, acceptance and budget Parquet files); the SHA-256 of each
file's bytes. `--ref COMMIT` runs the same at COMMIT (a temporary git worktree, this interpreter,
numba caches of its own) and prints every run whose files differ; exit 1 when any does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACES = ("chat", "code", "math", "mixed")
POLICIES = ("dspark", "async-dspark", "vllm-adaptive", "sglang-adaptive", "mtp1", "static-3", "threshold-0.5",
            "verify-all", "none")
RATES = (1.0, 8.0)


def digests(max_requests: int) -> dict[str, dict[str, str]]:
    """{run name: {parquet file: sha256}} for every trace x policy x rate of this checkout."""
    from simulator.config import SimConfig
    from simulator.run import simulate

    out: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for trace in TRACES:
            for policy in POLICIES:
                for rate in RATES:
                    name = f"{trace}-{policy}-x{rate:g}"
                    res = simulate(trace, SimConfig(policy=policy, rate_scale=rate, max_requests=max_requests))
                    folder = Path(tmp) / name
                    res.write(folder)
                    out[name] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                 for p in sorted(folder.glob("*.parquet"))}
    return out


def at_commit(commit: str, max_requests: int) -> dict[str, dict[str, str]]:
    """The digests of `commit`, computed in a temporary worktree with this interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), commit], check=True)
        try:
            target = Path(tmp) / "digests.json"
            code = ("import json, sys; sys.path.insert(0, 'benchmarks'); import same_outputs as s; "
                    f"json.dump(s.digests({max_requests}), open({str(target)!r}, 'w'))")
            script = tree / "benchmarks" / "same_outputs.py"
            if not script.exists():  # a commit older than this script: run this copy against its code
                script.write_text(Path(__file__).read_text())
            env = dict(os.environ, PYTHONPATH=str(tree))
            subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True)
            return json.loads(target.read_text())
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", help="commit to compare with")
    ap.add_argument("--max-requests", type=int, default=300)
    ap.add_argument("--digests", type=Path, help="write this checkout's digests as JSON")
    args = ap.parse_args()
    t0 = time.perf_counter()
    here = digests(args.max_requests)
    if args.digests:
        from sparksched.io import write_json

        write_json(args.digests, here, indent=1)
    if not args.ref:
        print(f"{len(here)} runs, {sum(len(v) for v in here.values())} Parquet files hashed "
              f"({time.perf_counter() - t0:.0f} s)")
        return
    ref = at_commit(args.ref, args.max_requests)
    differ = [name for name in sorted(set(here) | set(ref)) if here.get(name) != ref.get(name)]
    for name in differ:
        files = sorted(set(here.get(name, {})) | set(ref.get(name, {})))
        bad = [f for f in files if here.get(name, {}).get(f) != ref.get(name, {}).get(f)]
        print(f"DIFFERENT {name}: {', '.join(bad)}")
    n = sum(len(v) for v in here.values())
    print(f"{len(here) - len(differ)} of {len(here)} runs byte-identical to {args.ref} ({n} Parquet files; "
          f"{len(here) // len(RATES)} trace x policy pairs at {len(RATES)} loads, first {args.max_requests} "
          f"requests each; {time.perf_counter() - t0:.0f} s)")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
