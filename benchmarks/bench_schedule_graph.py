"""Time per call of the scheduler inside a CUDA graph (what an engine that captures its step pays).

    python benchmarks/bench_schedule_graph.py [--device cuda|cpu] [--n 256] [--g 16] [--replays 2000] [--out f.json]

`schedule_torch` (static shapes, no host synchronisation) on conf [n, g] ~ Beta(8, 2) with a step
time table flat to 256 batch tokens and linear after, as in `benchmarks/bench_schedule.py`.
Three numbers, all from this run:

    eager      one call followed by a synchronisation (launch latency + kernels), median of calls
    graph      the same call captured once in a CUDA graph and replayed `--replays` times back to
               back; CUDA events around the whole loop, divided by the replays
    numpy      `schedule_numpy` on the host, median of calls (the CPU baseline)

Before timing, every replay's lengths are checked against the eager call and `schedule_reference`
on fresh inputs copied into the graph's static buffers (a graph that replayed stale inputs would
fail here). On CPU (`--device cpu`, the dry run) there is no graph: the eager and numpy rows run,
the graph row says why it is absent.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from sparksched import ThroughputCurve, schedule_numpy, schedule_reference, schedule_torch
from sparksched.io import write_json
from sparksched.scheduler import step_time_table


def _median_call(fn, calls: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run(device: str, n: int, g: int, replays: int, calls: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    curve = ThroughputCurve.from_points([1, 256, 65536], [0.020, 0.020, 0.020 * 65536 / 256])
    table = torch.as_tensor(step_time_table(curve, n * (g + 1)), device=device)
    conf_np = rng.beta(8, 2, (n, g))
    conf = torch.as_tensor(conf_np, device=device)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    want = schedule_reference(conf_np, curve)
    got = schedule_torch(conf, table).cpu().numpy()
    if not np.array_equal(got, want):
        raise AssertionError("schedule_torch differs from schedule_reference")

    def eager() -> None:
        schedule_torch(conf, table, validate=False)
        sync()

    res = {"device": device, "n": n, "g": g, "torch": torch.__version__, "python": platform.python_version(),
           "verified_tokens": int(want.sum()),
           "eager_us": _median_call(eager, calls) * 1e6,
           "numpy_us": _median_call(lambda: schedule_numpy(conf_np, curve), calls) * 1e6}
    if dev.type != "cuda":
        res["graph_us"] = None
        res["graph_note"] = "no CUDA device: CUDA-graph replay not timed (dry run)"
        return res
    res["gpu"] = torch.cuda.get_device_name(dev)
    static_conf = conf.clone()
    stream = torch.cuda.Stream(dev)
    stream.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(stream):  # warm up outside the graph (allocator, kernels)
        for _ in range(3):
            schedule_torch(static_conf, table, validate=False)
    torch.cuda.current_stream(dev).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = schedule_torch(static_conf, table, validate=False)
    for s in range(1, 6):  # replays read the static buffer: fresh inputs give fresh, correct lengths
        fresh = np.random.default_rng(seed + s).beta(8, 2, (n, g))
        static_conf.copy_(torch.as_tensor(fresh, device=dev))
        graph.replay()
        sync()
        if not np.array_equal(out.cpu().numpy(), schedule_reference(fresh, curve)):
            raise AssertionError(f"graph replay {s} differs from schedule_reference")
    for _ in range(10):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    sync()
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    sync()
    res["graph_us"] = start.elapsed_time(end) * 1e3 / replays
    res["replays"] = replays
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=256, help="requests")
    ap.add_argument("--g", type=int, default=16, help="block size")
    ap.add_argument("--replays", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=200, help="timed eager / numpy calls")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = run(a.device, a.n, a.g, a.replays, a.calls)
    graph = f"{res['graph_us']:.1f} us" if res["graph_us"] is not None else res["graph_note"]
    print(f"schedule_torch at {a.n} x {a.g} on {res.get('gpu', a.device)}: eager + sync {res['eager_us']:.1f} us, "
          f"CUDA-graph replay {graph}, numpy on the host {res['numpy_us']:.1f} us "
          f"({res['verified_tokens']} drafts verified)")
    if a.out:
        write_json(a.out, res, indent=1)


if __name__ == "__main__":
    main()
