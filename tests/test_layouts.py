"""Engine layouts (vLLM V1 flat, vLLM MRV2, SGLang) give exactly the padded core's results.

Each test builds one random batch in the padded [n, g] core layout, re-lays it out the way the
engine does *by plain Python loops* (independent of the converters under test), runs the layout
wrapper and the core `verify` / `schedule` with generators seeded alike, and requires identical
tokens / lengths. A deliberately wrong converter (cu treated as exclusive) must fail the same check.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import JAGGED
from host_sync_guard import HostSyncError, forbid_host_sync
from hypothesis import given, settings
from hypothesis import strategies as st

from sparksched import verify
from sparksched.layouts import (
    compact_vllm_flat,
    counts_from_cu,
    cu_from_counts,
    flat_to_padded,
    mrv2_cu_num_logits,
    mrv2_to_padded,
    padded_to_flat,
    schedule_mrv2,
    schedule_sglang,
    schedule_vllm_flat,
    verify_mrv2,
    verify_sglang,
    verify_vllm_flat,
    vllm_flat_to_padded,
    vllm_parse_output,
)
from sparksched.scheduler import schedule, schedule_reference, step_time_table


def _batch(seed: int, n: int, g: int, v: int, with_q: bool):
    rng = np.random.default_rng(seed)
    tp = torch.as_tensor(rng.dirichlet(np.ones(v), size=(n, g + 1)))              # [n, g+1, V]
    dp = torch.as_tensor(rng.dirichlet(np.ones(v), size=(n, g))) if with_q else None
    tokens = torch.as_tensor(rng.integers(0, v, size=(n, g)), dtype=torch.long)
    lengths = torch.as_tensor(rng.integers(0, g + 1, size=n), dtype=torch.long)
    conf = torch.as_tensor(rng.choice([0.0, 0.3, 0.5, 0.9, 1.0], size=(n, g)) if seed % 3 == 0
                           else rng.random((n, g)))
    anchors = torch.as_tensor(rng.integers(0, v, size=n), dtype=torch.long)
    return tp, dp, tokens, lengths, conf, anchors


def _gens(n: int, seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(1000 * seed + i) for i in range(n)]


def _core(tp, dp, tokens, lengths, seed, greedy):
    r = verify(tp, dp, tokens, lengths, generators=_gens(len(lengths), seed), greedy=greedy)
    return [r.tokens[i, : int(r.num_emitted[i])].tolist() for i in range(len(lengths))]


def _vllm_flat_inputs(tp, dp, tokens, lengths):
    """vLLM V1 SpecDecodeMetadata-style tensors, built by loops."""
    ids, tprobs, dprobs, bonus = [], [], [], []
    for i, li in enumerate(lengths.tolist()):
        for k in range(li):
            ids.append(int(tokens[i, k]))
            tprobs.append(tp[i, k])
            if dp is not None:
                dprobs.append(dp[i, k])
        bonus.append(tp[i, li])
    v = tp.shape[2]
    cu = torch.tensor(np.cumsum(lengths.tolist()), dtype=torch.int32)
    stack = lambda rows: torch.stack(rows) if rows else torch.zeros((0, v), dtype=tp.dtype)
    return (torch.tensor(ids, dtype=torch.int32), cu, stack(tprobs), torch.stack(bonus),
            None if dp is None else stack(dprobs))


def _mrv2_inputs(tp, dp, tokens, lengths, anchors, seed):
    """MRV2 flattened logits rows, draft_sampled and a permuted persistent draft-probs buffer."""
    n, g = tokens.shape
    rows, sampled = [], []
    for i, li in enumerate(lengths.tolist()):
        sampled.append(int(anchors[i]))
        for k in range(li):
            sampled.append(int(tokens[i, k]))
        for k in range(li + 1):
            rows.append(tp[i, k])
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(n + 2)[:n])   # request-state rows
    buf = None
    if dp is not None:
        buf = torch.rand(n + 2, g, tp.shape[2], dtype=dp.dtype)
        buf = buf / buf.sum(-1, keepdim=True)
        buf[perm] = dp
    return torch.stack(rows), mrv2_cu_num_logits(lengths.to(torch.int32)), torch.tensor(sampled), buf, perm


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), g=st.integers(0, 4), v=st.integers(1, 5),
       with_q=st.booleans(), greedy=st.booleans())
def test_all_layouts_verify_exactly_like_the_padded_core(seed, n, g, v, with_q, greedy):
    tp, dp, tokens, lengths, _, anchors = _batch(seed, n, g, v, with_q)
    want = _core(tp, dp, tokens, lengths, seed, greedy)

    ids, cu, tflat, bonus, dflat = _vllm_flat_inputs(tp, dp, tokens, lengths)
    out = verify_vllm_flat(ids, cu, tflat, bonus, dflat, g, generators=_gens(n, seed), greedy=greedy)
    assert out.dtype == torch.int32 and tuple(out.shape) == (n, g + 1)
    assert vllm_parse_output(out) == want

    rows, cu_logits, sampled, buf, perm = _mrv2_inputs(tp, dp, tokens, lengths, anchors, seed)
    s, num = verify_mrv2(rows, cu_logits, sampled, g, buf, perm, generators=_gens(n, seed), greedy=greedy)
    assert [s[i, : int(num[i])].tolist() for i in range(n)] == want
    assert bool((s[torch.arange(g + 1)[None, :] >= num[:, None]] == -1).all())

    cands = torch.cat([anchors[:, None], tokens], dim=1)
    pred, idx, acc = verify_sglang(cands, tp, dp, lengths, generators=_gens(n, seed), greedy=greedy)
    assert [pred[idx[i, : int(acc[i]) + 1].long()].tolist() for i in range(n)] == want
    assert [idx[i, : int(acc[i]) + 1].tolist() for i in range(n)] == [
        [i * (g + 1) + j for j in range(len(w))] for i, w in enumerate(want)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6), g=st.integers(1, 5))
def test_all_layouts_schedule_exactly_like_the_padded_core(seed, n, g):
    _, _, _, drafted, conf, _ = _batch(seed, n, g, 2, False)
    want = schedule_reference(conf.numpy(), JAGGED, drafted.numpy()).tolist()
    table = torch.as_tensor(step_time_table(JAGGED, n * (g + 1)))

    flat = torch.cat([conf[i, : int(drafted[i])] for i in range(n)])
    cu = torch.as_tensor(np.cumsum(drafted.numpy()))
    assert schedule_vllm_flat(flat, cu, JAGGED, g).tolist() == want
    assert schedule_vllm_flat(flat, cu, table, g, validate=False).tolist() == want

    perm = torch.as_tensor(np.random.default_rng(seed).permutation(n))
    buf = torch.zeros_like(conf)
    buf[perm] = conf
    assert schedule_mrv2(buf, drafted, JAGGED, perm).tolist() == want

    masked = torch.where(torch.arange(g)[None, :] < drafted[:, None], conf, torch.zeros_like(conf))
    assert schedule_sglang(masked, JAGGED).tolist() == want


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 5), g=st.integers(1, 4), v=st.integers(2, 5))
def test_vllm_flat_schedule_compact_verify_chain_equals_the_core(seed, n, g, v):
    """The V1 engine flow: schedule on the flat confidences, compact drafts / probs to the verified
    prefix (static buffer size), verify: same tokens as the core with those lengths."""
    tp, dp, tokens, drafted, conf, _ = _batch(seed, n, g, v, True)
    ids, cu, tflat, _, dflat = _vllm_flat_inputs(tp, dp, tokens, drafted)
    conf_flat = torch.cat([conf[i, : int(drafted[i])] for i in range(n)])
    lengths = schedule_vllm_flat(conf_flat, cu, JAGGED, g)
    ids_c, cu_c = compact_vllm_flat(ids, cu, lengths)
    t_c, _ = compact_vllm_flat(tflat, cu, lengths, fill=1.0 / v)
    d_c, _ = compact_vllm_flat(dflat, cu, lengths, fill=1.0 / v)
    bonus = tp[torch.arange(n), lengths]                        # target row after the last verified draft
    out = verify_vllm_flat(ids_c, cu_c, t_c, bonus, d_c, g, generators=_gens(n, seed))
    assert vllm_parse_output(out) == _core(tp, dp, tokens, lengths, seed, False)


def _wrong_flat_to_padded(x, cu, width, fill=0):
    """Deliberately wrong: reads cu as *exclusive* offsets (request i starts at cu[i])."""
    counts = counts_from_cu(cu)
    idx = cu[:, None].long() + torch.arange(width)[None, :]
    ok = (torch.arange(width)[None, :] < counts[:, None]) & (idx < x.shape[0])
    return torch.where(ok, x[idx.clamp(0, x.shape[0] - 1)], torch.full_like(x[idx.clamp(0, x.shape[0] - 1)], fill))


def test_negative_control_an_exclusive_cu_reading_is_caught():
    tp, dp, tokens, lengths, conf, _ = _batch(7, 4, 3, 4, True)
    lengths = torch.tensor([2, 3, 1, 2])
    ids, cu, *_ = _vllm_flat_inputs(tp, dp, tokens, lengths)
    right = flat_to_padded(ids.long(), cu, 3)
    wrong = _wrong_flat_to_padded(ids.long(), cu, 3)
    live = torch.arange(3)[None, :] < lengths[:, None]
    assert torch.equal(right[live], tokens[live])
    assert not torch.equal(wrong[live], tokens[live])


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(0, 4), min_size=1, max_size=6), spare=st.integers(0, 3))
def test_flat_padded_round_trip(counts, spare):
    c = torch.tensor(counts)
    cu = cu_from_counts(c)
    n_tok = int(c.sum())
    x = torch.arange(100, 100 + n_tok)
    padded = flat_to_padded(x, cu, 4, fill=-1)
    for i, k in enumerate(counts):
        start = sum(counts[:i])
        assert padded[i, :k].tolist() == list(range(100 + start, 100 + start + k))
        assert padded[i, k:].tolist() == [-1] * (4 - k)
    back = padded_to_flat(padded, cu, n_tok + spare, fill=-1)
    assert back.tolist() == x.tolist() + [-1] * spare


@settings(max_examples=30, deadline=None)
@given(counts=st.lists(st.integers(0, 4), min_size=1, max_size=6), data=st.data())
def test_compaction_keeps_a_prefix_of_each_request(counts, data):
    keep = [data.draw(st.integers(0, k + 1)) for k in counts]       # may exceed the count: clamped
    cu = cu_from_counts(torch.tensor(counts))
    x = torch.arange(sum(counts))
    got, cu_new = compact_vllm_flat(x, cu, torch.tensor(keep), fill=-1)
    want, start = [], 0
    for k, m in zip(counts, keep):
        want += list(range(start, start + min(k, m)))
        start += k
    assert got.tolist() == want + [-1] * (len(x) - len(want))
    assert cu_new.tolist() == np.cumsum([min(k, m) for k, m in zip(counts, keep)]).tolist()


def test_converters_and_wrappers_never_sync_with_the_host():
    tp, dp, tokens, lengths, conf, anchors = _batch(3, 4, 3, 5, True)
    ids, cu, tflat, bonus, dflat = _vllm_flat_inputs(tp, dp, tokens, lengths)
    rows, cu_logits, sampled, buf, perm = _mrv2_inputs(tp, dp, tokens, lengths, anchors, 3)
    table = torch.as_tensor(step_time_table(JAGGED, 4 * 4))
    with forbid_host_sync():
        vllm_flat_to_padded(ids, cu, tflat, bonus, dflat, 3)
        mrv2_to_padded(rows, cu_logits, sampled, 3, buf, perm)
        compact_vllm_flat(ids, cu, torch.tensor([1, 1, 1, 1]))
        verify_vllm_flat(ids, cu, tflat, bonus, dflat, 3, validate=False)
        verify_mrv2(rows, cu_logits, sampled, 3, buf, perm, validate=False)
        verify_sglang(torch.cat([anchors[:, None], tokens], 1), tp, dp, lengths, validate=False)
        schedule_vllm_flat(tflat[:, 0], cu, table, 3, validate=False)
        schedule_sglang(conf, table, validate=False)
    with pytest.raises(HostSyncError):                 # the guard is real: validation reads values
        with forbid_host_sync():
            verify_vllm_flat(ids, cu, tflat, bonus, dflat, 3, validate=True)


@pytest.mark.parametrize("call, match", [
    (lambda: flat_to_padded(torch.arange(3), torch.tensor([[3]]), 2), "cu_num_tokens"),
    (lambda: flat_to_padded(torch.arange(3), torch.tensor([3]), -1), "width"),
    (lambda: vllm_flat_to_padded(torch.arange(3), torch.tensor([3]), torch.ones(2, 2),
                                 torch.ones(1, 2), None, 3), "target_probs"),
    (lambda: mrv2_to_padded(torch.ones(3, 2), torch.tensor([0, 3]), torch.arange(2), 2), "draft_sampled"),
    (lambda: verify_sglang(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 2, 2)), "target_probs"),
])
def test_bad_shapes_are_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_schedule_dispatch_is_unchanged_for_padded_tensors():
    """The wrappers add nothing beyond layout: schedule on the padded tensor is the same call."""
    conf = torch.tensor([[0.9, 0.8, 0.1], [0.5, 0.2, 0.2]])
    assert schedule_sglang(conf, JAGGED).tolist() == schedule(conf, JAGGED).tolist()
