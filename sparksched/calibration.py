"""Sequential Temperature Scaling (STS) of confidence heads, and calibration metrics.

The scheduler uses the absolute magnitude of the survival S_k = c_1 * ... * c_k, so confidences
must be calibrated, not only ranked (docs/method.md). STS fits one temperature per block
position, left to right: with t_1..t_{k-1} fixed, a 1-D grid search picks the t_k applied as
c_k' = sigmoid(logit(c_k) / t_k) that minimises the expected calibration error (ECE) of the
cumulative S_k' against the label "the first k drafted tokens were all accepted".

Data are recorded rounds: conf [N, g] (the confidences the scheduler saw), accepted [N] (accepted
drafts in that round), drafted [N] (positions that were drafted and verified; default g). At
position k only rows with drafted >= k are used: beyond the verified length the label is unknown
(and keeping only the rows that happened to be rejected early would bias it towards 0).

Temperature scaling is monotone per position, so the ranking of c_k (its ROC-AUC against "x_k
accepted given x_{<k} accepted") is unchanged exactly; the AUC of the cumulative S_k can move
slightly because the product mixes positions with different temperatures (reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparksched.survival import survival

try:
    from scipy.special import expit
except ImportError:  # a bare GPU box without scipy (profiler runs): the same logistic in numpy

    def expit(x: Any) -> Any:
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))

__all__ = ["CalibrationReport", "apply_sts", "calibration_report", "expected_calibration_error",
           "fit_sts", "roc_auc"]

DEFAULT_GRID = np.unique(np.concatenate((np.exp(np.linspace(np.log(0.05), np.log(20.0), 241)), [1.0])))


def _logit(c: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(c) - np.log1p(-c)  # -inf at 0, +inf at 1: temperatures keep them there


def _check(conf: Any, accepted: Any, drafted: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(conf, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"conf must be 2-D [N, g], got shape {c.shape}")
    n, g = c.shape
    bad = ~((c >= 0.0) & (c <= 1.0))
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"conf[{i}, {k}] = {float(c[i, k])!r}: confidences must be numbers in [0, 1]")
    a = np.asarray(accepted)
    if a.shape != (n,):
        raise ValueError(f"accepted must have shape ({n},) to match conf, got {a.shape}")
    d = np.full(n, g, dtype=np.int64) if drafted is None else np.asarray(drafted)
    if d.shape != (n,):
        raise ValueError(f"drafted must have shape ({n},) to match conf, got {d.shape}")
    for name, arr in (("accepted", a), ("drafted", d)):
        if arr.size and (not np.issubdtype(arr.dtype, np.number) or np.any(arr != np.round(arr))):
            i = int(np.argmax(arr != np.round(arr))) if np.issubdtype(arr.dtype, np.number) else 0
            raise ValueError(f"{name}[{i}] = {arr[i]!r}: must be an integer count")
    a, d = a.astype(np.int64), d.astype(np.int64)
    if np.any((d < 0) | (d > g)):
        i = int(np.argmax((d < 0) | (d > g)))
        raise ValueError(f"drafted[{i}] = {d[i]}: must be in [0, g={g}]")
    if np.any((a < 0) | (a > d)):
        i = int(np.argmax((a < 0) | (a > d)))
        raise ValueError(f"accepted[{i}] = {a[i]}: must be in [0, drafted[{i}]={d[i]}]")
    return c, a, d


def expected_calibration_error(pred: Any, label: Any, n_bins: int = 15) -> float:
    """ECE with equal-width bins on [0, 1]: sum_b (|b| / N) * |mean pred_b - mean label_b|.

    Args:
        pred: [M] predicted probabilities in [0, 1].
        label: [M] outcomes in {0, 1} (bool or numbers).
        n_bins: number of bins (>= 1).

    Returns:
        ECE in [0, 1] (nan for M = 0).

    Example:
        >>> round(expected_calibration_error([0.2, 0.2, 0.8, 0.8], [0, 1, 1, 1], n_bins=10), 12)
        0.25
    """
    p = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(label, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"pred and label must have the same length, got {p.size} and {y.size}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if p.size == 0:
        return float("nan")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    keep = count > 0  # summed over the bins that hold samples (one order, one rounding, everywhere)
    gap = np.abs(np.bincount(b, weights=p, minlength=n_bins)[keep] - np.bincount(b, weights=y, minlength=n_bins)[keep])
    return float(np.sum(gap) / p.size)


def roc_auc(scores: Any, labels: Any) -> float:
    """ROC-AUC = P(score of a positive > score of a negative) + 0.5 P(equal); tie-aware.

    Args:
        scores: [M] real scores. labels: [M] outcomes in {0, 1}.

    Returns:
        AUC in [0, 1]; nan when all labels are equal.

    Example:
        >>> roc_auc([0.1, 0.5, 0.5, 0.9], [0, 0, 1, 1])
        0.875
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.size} and {y.size}")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average rank over each run of equal scores
    starts = np.flatnonzero(np.concatenate(([True], sorted_s[1:] != sorted_s[:-1])))
    ends = np.concatenate((starts[1:], [s.size]))
    avg = (starts + ends + 1) / 2.0  # ranks are 1-based: mean of start+1 .. end
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def apply_sts(conf: Any, temps: Any) -> Any:
    """c_k' = sigmoid(logit(c_k) / t_k) per position; conf [N, g] (numpy or torch), temps [g] > 0.

    Exact 0 and 1 stay 0 and 1. A torch tensor stays on its device and dtype.

    Example:
        >>> apply_sts(np.array([[0.0, 0.5, 0.8, 1.0]]), [1.0, 2.0, 2.0, 0.5]).round(4).tolist()
        [[0.0, 0.5, 0.6667, 1.0]]
    """
    t = np.asarray(temps, dtype=np.float64)
    if t.ndim != 1 or np.any(~(t > 0)) or np.any(~np.isfinite(t)):
        raise ValueError(f"temps must be a 1-D array of finite temperatures > 0, got {t.tolist()}")
    if type(conf).__module__.startswith("torch"):
        import torch

        if conf.dim() != 2 or conf.shape[1] != t.size:
            raise ValueError(f"conf must be [N, {t.size}] to match temps, got {tuple(conf.shape)}")
        tt = torch.as_tensor(t, dtype=torch.float64, device=conf.device)
        c = conf.to(torch.float64)
        return torch.sigmoid(torch.logit(c) / tt).to(conf.dtype)
    c = np.asarray(conf, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != t.size:
        raise ValueError(f"conf must be [N, {t.size}] to match temps, got {c.shape}")
    return expit(_logit(c) / t)


def fit_sts(conf: Any, accepted: Any, drafted: Any = None, grid: Any = None, n_bins: int = 15) -> np.ndarray:
    """Fit per-position temperatures by sequential grid search (STS).

    Args:
        conf: [N, g] recorded confidences c_{i,k} in [0, 1].
        accepted: [N] accepted draft tokens per round (0 <= accepted_i <= drafted_i).
        drafted: [N] positions drafted and verified per round (default g); rows with
            drafted_i < k are excluded at position k.
        grid: candidate temperatures (> 0); default 242 log-spaced values in [0.05, 20] plus 1.
        n_bins: ECE bins.

    Returns:
        [g] float64 temperatures (1.0 where a position has no rows); ties prefer t closest to 1.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> z = rng.normal(1.0, 1.0, (4000, 1))
        >>> accepted = (rng.random(4000) < expit(z[:, 0])).astype(int)
        >>> conf = expit(3 * z)  # overconfident by a factor 3 in logit space
        >>> bool(abs(fit_sts(conf, accepted)[0] - 3) < 0.6)
        True
    """
    c, a, d = _check(conf, accepted, drafted)
    ts = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=np.float64)
    if ts.ndim != 1 or ts.size == 0 or np.any(~(ts > 0)) or np.any(~np.isfinite(ts)):
        raise ValueError(f"grid must be a non-empty 1-D array of temperatures > 0, got {np.asarray(grid)!r}")
    ts = ts[np.argsort(np.abs(np.log(ts)), kind="stable")]  # ties resolve towards t = 1
    n, g = c.shape
    logits = _logit(c)
    temps = np.ones(g)
    surv = np.ones(n)  # calibrated S_{k-1}'
    for k in range(g):
        rows = d >= k + 1
        label = a[rows] >= k + 1
        if rows.any():
            errs = [expected_calibration_error(surv[rows] * expit(logits[rows, k] / t), label, n_bins) for t in ts]
            temps[k] = ts[int(np.argmin(errs))]
        surv = surv * expit(logits[:, k] / temps[k])
    return temps


@dataclass(frozen=True)
class CalibrationReport:
    """Per-position calibration of recorded rounds (arrays [g]).

    count: rows observed at position k (drafted >= k). ece_before / ece_after: ECE of the
    cumulative S_k vs "first k accepted". auc_survival_*: ROC-AUC of S_k for the same label.
    auc_conditional: ROC-AUC of c_k vs "x_k accepted" among rows whose first k-1 were accepted
    (identical before and after STS by construction). temps: the temperatures applied.

    Example:
        >>> rep = calibration_report(np.array([[0.9, 0.5], [0.2, 0.5]]), [2, 0], temps=[1.0, 1.0])
        >>> rep.count.tolist(), rep.ece_before.round(3).tolist()
        ([2.0, 2.0], [0.15, 0.325])
    """

    count: np.ndarray
    ece_before: np.ndarray
    ece_after: np.ndarray
    auc_survival_before: np.ndarray
    auc_survival_after: np.ndarray
    auc_conditional: np.ndarray
    temps: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def to_text(self) -> str:
        """A fixed-width table, one row per position."""
        lines = [f"{'k':>3} {'rows':>8} {'temp':>7} {'ECE before':>11} {'ECE after':>10} "
                 f"{'AUC(S) before':>14} {'AUC(S) after':>13} {'AUC(c_k)':>9}"]
        for k in range(self.count.size):
            lines.append(f"{k + 1:>3} {int(self.count[k]):>8} {self.temps[k]:>7.3f} {self.ece_before[k]:>11.4f} "
                         f"{self.ece_after[k]:>10.4f} {self.auc_survival_before[k]:>14.4f} "
                         f"{self.auc_survival_after[k]:>13.4f} {self.auc_conditional[k]:>9.4f}")
        return "\n".join(lines)


def calibration_report(conf: Any, accepted: Any, drafted: Any = None, temps: Any = None,
                       n_bins: int = 15) -> CalibrationReport:
    """ECE and ROC-AUC per position before and after STS (temps fitted here when None).

    Args:
        conf: [N, g] recorded confidences; accepted: [N]; drafted: [N] or None (see `fit_sts`).
        temps: [g] temperatures to evaluate, or None to fit them on the same data.

    Example:
        >>> rep = calibration_report(np.array([[0.9, 0.5], [0.2, 0.5]]), [2, 0], temps=[1.0, 1.0])
        >>> print(rep.to_text().splitlines()[1])
          1        2   1.000      0.1500     0.1500         1.0000        1.0000    1.0000
    """
    c, a, d = _check(conf, accepted, drafted)
    t = fit_sts(c, a, d, n_bins=n_bins) if temps is None else np.asarray(temps, dtype=np.float64)
    cal = apply_sts(c, t)
    s_raw, s_cal = survival(c), survival(cal)
    g = c.shape[1]
    out = {key: np.full(g, np.nan) for key in ("count", "eb", "ea", "ab", "aa", "ac")}
    for k in range(g):
        rows = d >= k + 1
        label = a[rows] >= k + 1
        out["count"][k] = rows.sum()
        out["eb"][k] = expected_calibration_error(s_raw[rows, k], label, n_bins)
        out["ea"][k] = expected_calibration_error(s_cal[rows, k], label, n_bins)
        out["ab"][k] = roc_auc(s_raw[rows, k], label)
        out["aa"][k] = roc_auc(s_cal[rows, k], label)
        cond = rows & (a >= k)
        out["ac"][k] = roc_auc(c[cond, k], a[cond] >= k + 1)
    return CalibrationReport(out["count"], out["eb"], out["ea"], out["ab"], out["aa"], out["ac"], t)
