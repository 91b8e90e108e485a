"""SGLang's DSpark cost tables: read them as a StepCost, and write them from any StepCost.

SGLang (`--speculative-algorithm DSPARK --speculative-dspark-sps-table-path FILE`) prices a whole
engine step, drafter included, from one of two JSON files, told apart by the key `bias_seconds`:

* `SpsCostTable`: `{"sample_batch_tokens": [8, 16, 32], "sample_steps_per_sec": [1000.0, 950.0,
  500.0], "max_batch_tokens": 32}`. Steps per second by batch tokens B (requests + verify budget);
  lookup = the nearest probe at or below B, clamped at both ends. It has no request axis.
* `SpsAdditiveCostTable`: `{"bias_seconds": 0.1, "bs_probes": [...], "alpha_seconds": [...],
  "m_probes": [...], "theta_seconds": [...]}`: step seconds = bias + alpha(requests) +
  theta(requests + budget), each linearly interpolated on its probes and clamped at the ends.

Reading (`read_sglang_table`) gives a StepCost that prices exactly as SGLang looks the table up (at
integer batch sizes), so `sparksched simulate --profile table.json` simulates the table a server
loads. Writing (`sps_table`, `additive_table`) takes any StepCost (a measured or roofline profile)
at one context length: the SPS table is the slice at one concurrency (the table cannot hold more);
the additive table is a least-squares fit over the grid, with the error of the fit reported, since
a sum of a request term and a token term is only an approximation of a roofline's max(compute,
memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sparksched.cost import MODE_BATCH, PREFILL_BATCH, CostArrays, StepCost

SPS_KEYS = ("sample_batch_tokens", "sample_steps_per_sec", "max_batch_tokens")
ADDITIVE_KEYS = ("bias_seconds", "bs_probes", "alpha_seconds", "m_probes", "theta_seconds")


def is_sglang_table(data: Any) -> bool:
    """True for a parsed JSON object that is one of SGLang's two cost tables (by its keys)."""
    return isinstance(data, dict) and ("bias_seconds" in data or "sample_batch_tokens" in data)


def _numbers(d: dict[str, Any], key: str, where: str, *, positive: bool, increasing: bool) -> np.ndarray:
    if key not in d:
        raise ValueError(f"{where}: missing field {key!r}")
    v = d[key]
    if not isinstance(v, list) or not v:
        raise ValueError(f"{where}: field {key!r} must be a non-empty list of numbers, got {v!r}")
    for i, x in enumerate(v):
        ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        if not ok or x < 0 or (positive and x <= 0):
            need = "> 0" if positive else ">= 0"
            raise ValueError(f"{where}: field {key!r}[{i}] must be a finite number {need}, got {x!r}")
    arr = np.asarray(v, dtype=np.float64)
    if increasing and np.any(np.diff(arr) <= 0):
        i = int(np.argmax(np.diff(arr) <= 0))
        raise ValueError(f"{where}: field {key!r} must be strictly increasing, got {v[i]!r} then {v[i + 1]!r} "
                         f"at [{i}] and [{i + 1}]")
    return arr


def _same_length(d: dict[str, Any], a: str, b: str, where: str) -> None:
    if len(d[a]) != len(d[b]):
        raise ValueError(f"{where}: fields {a!r} and {b!r} must have the same length, got {len(d[a])} and {len(d[b])}")


def read_sglang_table(source: str | Path | dict[str, Any]) -> StepCost:
    """A StepCost from an SGLang SpsCostTable or SpsAdditiveCostTable (file path or parsed dict).

    One-line ValueError naming the file and field for a bad table: missing or non-list fields,
    mismatched lengths, NaN or negative values, probes not strictly increasing.

    Example:
        >>> cost = read_sglang_table({"bias_seconds": 0.01, "bs_probes": [1, 64], "alpha_seconds": [0.0, 0.004],
        ...                          "m_probes": [64, 512], "theta_seconds": [0.0, 0.002]})
        >>> round(float(cost.verify_seconds(32, 288, 0)) * 1e3, 3)  # 10 + 4 x 31/63 + 2 x 224/448 ms
        12.968
        >>> read_sglang_table({"sample_batch_tokens": [8, 16], "sample_steps_per_sec": [100.0, 50.0],
        ...                    "max_batch_tokens": 16}).verify_seconds(4, [8, 15, 16], 0).tolist()
        [0.01, 0.01, 0.02]
    """
    where = str(source) if isinstance(source, (str, Path)) else "SGLang table"
    if isinstance(source, (str, Path)):
        from sparksched.io import load_json, read_text

        data = load_json(read_text(source, "SGLang cost table"), where)
    else:
        data = source
    if not is_sglang_table(data):
        raise ValueError(f"{where}: not an SGLang cost table (needs 'sample_batch_tokens' or 'bias_seconds')")
    if "bias_seconds" in data:
        return _read_additive(data, where)
    return _read_sps(data, where)


def _read_sps(d: dict[str, Any], where: str) -> StepCost:
    probes = _numbers(d, "sample_batch_tokens", where, positive=True, increasing=True)
    sps = _numbers(d, "sample_steps_per_sec", where, positive=True, increasing=False)
    _same_length(d, "sample_batch_tokens", "sample_steps_per_sec", where)
    mbt = d.get("max_batch_tokens")
    if not (isinstance(mbt, (int, float)) and not isinstance(mbt, bool) and math.isfinite(mbt) and mbt > 0):
        raise ValueError(f"{where}: field 'max_batch_tokens' must be a finite number > 0, got {mbt!r}")
    seconds = 1.0 / sps
    # the nearest probe at or below B, at integer B: knots (p_j, T_j) and (p_{j+1} - 1, T_j)
    xs: list[float] = []
    ys: list[float] = []
    for j, (p, t) in enumerate(zip(probes, seconds)):
        xs.append(float(p))
        ys.append(float(t))
        if j + 1 < probes.size and probes[j + 1] - 1 > p:
            xs.append(float(probes[j + 1] - 1))
            ys.append(float(t))
    notes = ["SGLang SpsCostTable: whole steps by batch tokens, the same at every request count"]
    y = np.asarray(ys)
    if np.any(np.diff(y) < 0):
        notes.append("steps per second rise with batch tokens somewhere: priced non-decreasing (running maximum)")
    arrays = CostArrays(MODE_BATCH, np.ones(1), np.asarray(xs), np.zeros(1), y[None, None, :].copy(), False,
                        float(y.min()), math.inf, PREFILL_BATCH, np.zeros(1), np.zeros(1), float(mbt))
    return StepCost(arrays, (), 1, (), True, "no limit known", where, tuple(notes), {"format": "sglang-sps"})


def _read_additive(d: dict[str, Any], where: str) -> StepCost:
    bias = d.get("bias_seconds")
    if not (isinstance(bias, (int, float)) and not isinstance(bias, bool) and math.isfinite(bias) and bias >= 0):
        raise ValueError(f"{where}: field 'bias_seconds' must be a finite number >= 0, got {bias!r}")
    bs = _numbers(d, "bs_probes", where, positive=True, increasing=True)
    alpha = _numbers(d, "alpha_seconds", where, positive=False, increasing=False)
    m = _numbers(d, "m_probes", where, positive=True, increasing=True)
    theta = _numbers(d, "theta_seconds", where, positive=False, increasing=False)
    _same_length(d, "bs_probes", "alpha_seconds", where)
    _same_length(d, "m_probes", "theta_seconds", where)
    secs = (float(bias) + alpha[:, None] + theta[None, :])[None, :, :]
    if not np.all(secs > 0):
        raise ValueError(f"{where}: bias + alpha + theta must be > 0 at every probe (a step takes time)")
    notes = ["SGLang SpsAdditiveCostTable: whole steps = bias + alpha(requests) + theta(batch tokens)"]
    if np.any(np.diff(theta) < 0):
        notes.append("theta falls with batch tokens somewhere: priced non-decreasing (running maximum)")
    arrays = CostArrays(MODE_BATCH, bs, m, np.zeros(1), secs.copy(), False, float(secs.min()), math.inf,
                        PREFILL_BATCH, np.zeros(1), np.zeros(1), math.inf)
    return StepCost(arrays, (), 1, (), True, "no limit known", where, tuple(notes), {"format": "sglang-additive"})


# ------------------------------------------------------------------------------------------ writing
def _whole_step(cost: StepCost, n: float, b: np.ndarray, context: float, block: int, family: str) -> np.ndarray:
    """Whole-step seconds (verify + drafter) at n requests for batch tokens b [m]."""
    return cost.verify_seconds(n, b, context) + cost.draft_seconds(int(round(n)), block, context, family)


def sglang_sps_table(cost: StepCost, context: float, requests: int, block: int, *, family: str = "dspark",
              max_batch_tokens: int | None = None) -> dict[str, Any]:
    """SGLang's SpsCostTable from `cost` at `context`: whole steps (drafter at `block` included) of
    `requests` requests, for batch tokens from `requests` (anchors only) to `max_batch_tokens`
    (default requests x (block + 1), capped where the KV stops fitting).

    Every integer B from `requests` to requests x (block + 1) is a probe (the budget search at this
    concurrency reads each one); past it a ladder of x1.25 steps. SGLang clamps below the first
    probe, so a step with fewer requests is priced as `requests` anchors: the table is exact at
    this concurrency only (the additive table has a request axis).

    Example:
        >>> t = sglang_sps_table(StepCost.from_profile("h100-qwen3-8b-roofline"), 2048, requests=4, block=3)
        >>> t["sample_batch_tokens"][0], t["sample_batch_tokens"][-1], t["max_batch_tokens"]
        (4, 16, 16)
    """
    if requests < 1:
        raise ValueError(f"requests must be >= 1, got {requests}")
    top = requests * (block + 1)
    hi = int(max_batch_tokens) if max_batch_tokens is not None else top
    cap = cost.max_batch_tokens(requests, context)
    hi = int(min(hi, math.floor(cap))) if math.isfinite(cap) else hi
    if hi < requests:
        raise ValueError(f"{requests} requests at context {context:g} do not fit: "
                         f"{cost.why(requests, requests, context)}")
    probes = list(range(requests, min(top, hi) + 1))
    b = float(probes[-1])
    while b < hi:
        b = min(max(math.floor(b * 1.25), b + 1), hi)
        probes.append(int(b))
    seconds = _whole_step(cost, requests, np.asarray(probes, dtype=np.float64), context, block, family)
    return {"sample_batch_tokens": probes, "sample_steps_per_sec": [float(1.0 / s) for s in seconds],
            "max_batch_tokens": int(hi)}


@dataclass(frozen=True)
class AdditiveFit:
    """An additive table and how well it prices the grid it was fitted to."""

    table: dict[str, Any]
    points: np.ndarray  # [p, 3] (requests, batch tokens, whole-step seconds of the cost model)
    predicted: np.ndarray  # [p] the table's seconds at those points
    between: np.ndarray  # [q] relative errors at points between the grid's (n, t) values

    @property
    def errors(self) -> np.ndarray:
        """Relative error of the table at each grid point, [p]."""
        return self.predicted / self.points[:, 2] - 1.0

    def report(self) -> str:
        """A few lines: the fit's error at the grid points and between them."""
        e = np.abs(self.errors)
        w = int(np.argmax(e))
        n, b, s = self.points[w]
        lines = [f"additive fit: {e.size} grid points, relative error median {100 * np.median(e):.1f} %, "
                 f"90th percentile {100 * np.percentile(e, 90):.1f} %, max {100 * e.max():.1f} % "
                 f"(n={n:g}, B={b:g}: table {1e3 * self.predicted[w]:.3f} ms vs grid {1e3 * s:.3f} ms)"]
        if self.between.size:
            q = np.abs(self.between)
            lines.append(f"between grid points ({q.size} random interior points): median {100 * np.median(q):.1f} %, "
                         f"max {100 * q.max():.1f} %")
        return "\n".join(lines)


def _ladder(top: float) -> list[float]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (the doubling ladder with midpoints) up to and including top."""
    out = [1.0]
    while out[-1] < top:
        x = out[-1]
        nxt = x + 1 if x < 4 else (x * 1.5 if _is_pow2(x) else x * 4 / 3)
        out.append(min(float(round(nxt)), top))
    return out


def _is_pow2(x: float) -> bool:
    i = int(round(x))
    return i > 0 and (i & (i - 1)) == 0


def _hat(probes: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[len(x), len(probes)] weights of linear interpolation on `probes`, clamped at the ends."""
    w = np.zeros((x.size, probes.size))
    xc = np.clip(x, probes[0], probes[-1])
    j = np.clip(np.searchsorted(probes, xc, side="right") - 1, 0, max(probes.size - 2, 0))
    if probes.size == 1:
        w[:, 0] = 1.0
        return w
    f = (xc - probes[j]) / (probes[j + 1] - probes[j])
    w[np.arange(x.size), j] = 1.0 - f
    w[np.arange(x.size), j + 1] += f
    return w


def _additive_predict(table: dict[str, Any], n: np.ndarray, b: np.ndarray) -> np.ndarray:
    bs, alpha = np.asarray(table["bs_probes"], float), np.asarray(table["alpha_seconds"], float)
    m, theta = np.asarray(table["m_probes"], float), np.asarray(table["theta_seconds"], float)
    return table["bias_seconds"] + _hat(bs, n) @ alpha + _hat(m, b) @ theta


def sglang_additive_table(cost: StepCost, context: float, block: int, *, family: str = "dspark",
                   seed: int = 0) -> AdditiveFit:
    """SGLang's SpsAdditiveCostTable fitted to `cost` at `context`: whole steps (drafter at `block`
    included) at every grid request count whose KV fits and every tokens-per-request value up to
    block + 1 (anchors + all drafts), least squares on the relative error, alpha and theta
    non-decreasing from 0 at their first probe, bias >= 0. bs_probes are the grid's request counts;
    m_probes a 1, 2, 3, 4, 6, 8, 12, ... ladder over the batch sizes covered.

    The fit is also checked at 2000 random points between the grid's (n, t) values (`seed`).

    Example:
        >>> fit = sglang_additive_table(StepCost.from_profile("h100-qwen3-8b-roofline"), 2048, block=7)
        >>> sorted(fit.table), bool(abs(fit.errors).max() < 0.10)
        (['alpha_seconds', 'bias_seconds', 'bs_probes', 'm_probes', 'theta_seconds'], True)
    """
    from scipy.optimize import lsq_linear

    a = cost.arrays
    if a.mode != 0:
        raise ValueError("an additive table is fitted to a profile's request x token grid; this cost has "
                         "no request axis")
    per = sorted({float(t) for t in a.knots if t <= block + 1} | {float(block + 1)})
    pts = []
    for n in a.reqs:
        if cost.max_batch_tokens(n, context) < n * (block + 1):
            continue
        b = n * np.asarray(per)
        for bi, s in zip(b, _whole_step(cost, n, b, context, block, family)):
            pts.append((n, bi, s))
    if len(pts) < 4:
        raise ValueError(f"too few grid points fit at context {context:g} to fit an additive table")
    p = np.asarray(pts)
    bs = np.unique(p[:, 0])
    ladder = np.asarray(_ladder(float(p[:, 1].max())))
    m = np.unique(np.concatenate([ladder[(ladder >= p[:, 1].min())], [p[:, 1].min()]]))
    hn, hb = _hat(bs, p[:, 0]), _hat(m, p[:, 1])
    # alpha_j = sum of increments d_1..d_j >= 0 (alpha_0 = 0): column j of the design is the hat
    # weight mass at probes >= j; the same for theta
    an = np.cumsum(hn[:, ::-1], axis=1)[:, ::-1][:, 1:]
    ab = np.cumsum(hb[:, ::-1], axis=1)[:, ::-1][:, 1:]
    design = np.hstack([np.ones((p.shape[0], 1)), an, ab]) / p[:, 2:3]
    sol = lsq_linear(design, np.ones(p.shape[0]), bounds=(0.0, np.inf), lsmr_tol="auto", max_iter=5000)
    x = sol.x
    alpha = np.concatenate([[0.0], np.cumsum(x[1:bs.size])])
    theta = np.concatenate([[0.0], np.cumsum(x[bs.size:])])
    table = {"bias_seconds": float(x[0]), "bs_probes": [int(v) if float(v).is_integer() else float(v) for v in bs],
             "alpha_seconds": alpha.tolist(), "m_probes": [int(v) if float(v).is_integer() else float(v) for v in m],
             "theta_seconds": theta.tolist()}
    predicted = _additive_predict(table, p[:, 0], p[:, 1])
    rng = np.random.default_rng(seed)
    nq = np.exp(rng.uniform(np.log(bs[0]), np.log(bs[-1]), 2000))
    tq = rng.uniform(1.0, float(block + 1), 2000)
    keep = np.asarray([cost.max_batch_tokens(nn, context) >= nn * tt for nn, tt in zip(nq, tq)])
    nq, tq = nq[keep], tq[keep]
    truth = np.asarray([float(_whole_step(cost, nn, np.asarray([nn * tt]), context, block, family)[0])
                        for nn, tt in zip(nq, tq)])
    between = _additive_predict(table, nq, nq * tq) / truth - 1.0 if nq.size else np.zeros(0)
    return AdditiveFit(table, p, predicted, between)


def write_json(obj: dict[str, Any], path: str | Path) -> Path:
    """Write a table as JSON, one key a line, all or nothing (`sparksched.io.write_text`)."""
    from sparksched.io import write_text

    return write_text(path, "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()) + "\n}\n")
