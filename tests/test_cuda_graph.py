"""On-device behaviour (issue 8, item 4): no host synchronisation, static shapes, CUDA-graph capture.

CPU (always runs): the torch scheduler, `assign_budget`, the layout converters and `verify`
(validate=False) run under `forbid_host_sync` (a `__torch_function__` + `__torch_dispatch__`
guard) and compile with `torch.compile(fullgraph=True)` (dynamo refuses graph breaks such as
`.item()`); negative controls show both checks reject a step that reads a value on the host.

GPU (marked `gpu`, skipped without CUDA): the same step captured in a `torch.cuda.CUDAGraph`
replays equal to eager on new inputs; eager runs under `torch.cuda.set_sync_debug_mode("error")`;
CPU and CUDA give identical lengths on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import JAGGED
from host_sync_guard import HostSyncError, forbid_host_sync

from sparksched.budget import assign_budget
from sparksched.layouts import flat_to_padded
from sparksched.scheduler import schedule_torch, step_time_table
from sparksched.verify import verify

N, G, V = 8, 5, 11
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _inputs(seed: int, device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.rand(N, G, generator=g, dtype=torch.float64)
    conf[0, 2] = 0.0                                             # exact zero survival
    conf[1] = 0.5                                                # exact ties
    return {
        "conf": conf.to(device),
        "drafted": torch.randint(0, G + 1, (N,), generator=g).to(device),
        "table": torch.as_tensor(step_time_table(JAGGED, N * (G + 1))).to(device),
        "budget": torch.randint(0, N * G, (), generator=g).to(device),
        "target": torch.softmax(3 * torch.randn(N, G + 1, V, generator=g), -1).to(device),
        "draft_p": torch.softmax(3 * torch.randn(N, G, V, generator=g), -1).to(device),
        "tokens": torch.randint(0, V, (N, G), generator=g).to(device),
    }


def engine_step(conf, drafted, table, budget, target, draft_p, tokens, greedy: bool = True):
    """One device-side step: synchronous greedy lengths, asynchronous top-K lengths, verification."""
    sync_len = schedule_torch(conf, table, drafted, validate=False)
    async_len = assign_budget(conf, budget, drafted, validate=False)
    r = verify(target, draft_p, tokens, sync_len, greedy=greedy, validate=False)
    return sync_len, async_len, r.tokens, r.num_emitted


def _host_reading_step(conf, drafted, table, budget, target, draft_p, tokens, greedy=True):
    out = engine_step(conf, drafted, table, budget, target, draft_p, tokens, greedy)
    if out[0].sum().item() > 0:                                  # reads a value on the host
        return out
    return out


# ------------------------------------------------------------------------------------------ CPU
def test_engine_step_never_synchronises_with_the_host():
    x = _inputs(0)
    with forbid_host_sync():
        engine_step(**x, greedy=False)
        flat_to_padded(x["conf"].reshape(-1), torch.cumsum(x["drafted"], 0), G)


def test_host_sync_guard_rejects_a_step_that_reads_a_value():
    x = _inputs(0)
    with pytest.raises(HostSyncError, match="item"):
        with forbid_host_sync():
            _host_reading_step(**x)


def test_engine_step_compiles_as_one_graph():
    import torch._dynamo

    torch._dynamo.reset()
    x = _inputs(1)
    compiled = torch.compile(engine_step, backend="eager", fullgraph=True)
    for a, b in zip(compiled(**x), engine_step(**x)):
        assert torch.equal(a, b)


def test_dynamo_fullgraph_rejects_a_step_that_reads_a_value():
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(_host_reading_step, backend="eager", fullgraph=True)
    with pytest.raises(Exception, match="(?i)item|graph break|data-dependent|scalar"):
        compiled(**_inputs(1))


def test_shapes_are_static_for_fixed_requests_and_block():
    shapes = {tuple(tuple(t.shape) for t in engine_step(**_inputs(s), greedy=False)) for s in range(5)}
    assert len(shapes) == 1


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@cuda
def test_cuda_graph_replay_equals_eager():
    dev = "cuda"
    static = _inputs(0, dev)
    for greedy in (True, False):
        torch.cuda.synchronize()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):                               # warm up outside the graph
            for _ in range(2):
                engine_step(**static, greedy=greedy)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = engine_step(**static, greedy=greedy)
        for seed in range(1, 6):
            fresh = _inputs(seed, dev)
            for k, v in fresh.items():
                static[k].copy_(v)
            torch.cuda.manual_seed(seed)
            graph.replay()
            torch.cuda.manual_seed(seed)
            want = engine_step(**fresh, greedy=greedy)
            torch.cuda.synchronize()
            for a, b in zip(out, want):
                assert torch.equal(a, b), f"greedy={greedy} seed={seed}"


@pytest.mark.gpu
@cuda
def test_eager_step_does_not_synchronise_on_cuda():
    x = _inputs(3, "cuda")
    engine_step(**x)                                             # warm-up (allocator, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        engine_step(**x, greedy=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@cuda
def test_cpu_and_cuda_give_identical_lengths():
    for seed in range(20):
        cpu, gpu = _inputs(seed), _inputs(seed, "cuda")
        a = engine_step(**cpu)
        b = engine_step(**gpu)
        assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())
        assert torch.equal(a[2], b[2].cpu())                     # greedy verification: deterministic
        conf32 = cpu["conf"].float()
        assert torch.equal(assign_budget(conf32, cpu["budget"]),
                           assign_budget(conf32.cuda(), gpu["budget"]).cpu())


def test_inputs_are_reproducible():
    a, b = _inputs(4), _inputs(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite(a["table"].numpy()).all()
