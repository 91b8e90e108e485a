"""PNG of a profile: step time and tokens/s against batch tokens B, one line per context length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_profile(profile: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Draw `profile`'s verify curve to a PNG at `path` (written via a temporary file); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_ctx: dict[float, dict[float, list[float]]] = {}
    for r in profile["verify"]:
        by_ctx.setdefault(float(r["context"]), {}).setdefault(float(r["tokens"]), []).append(float(r["median_s"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ctx in sorted(by_ctx):
        b = np.asarray(sorted(by_ctx[ctx]))
        s = np.asarray([np.mean(by_ctx[ctx][x]) for x in b])
        ax1.plot(b, s * 1e3, marker=".", label=f"L={ctx:g}")
        ax2.plot(b, b / s, marker=".", label=f"L={ctx:g}")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch tokens B (verify pass)")
        ax.grid(True, alpha=0.3)
        ax.legend(title="context", fontsize=8)
    ax1.set_ylabel("step time (ms)")
    ax2.set_ylabel("tokens / s (B / step time)")
    dev = profile.get("device", {}).get("name", "?")
    model = profile.get("model", {}).get("preset", "?")
    fig.suptitle(title or f"{model} on {dev} ({profile.get('dtype')}, {profile.get('kind', 'measured')})")
    fig.tight_layout()
    from sparksched.io import save_figure

    return save_figure(path, fig, dpi=110)


def plot_verify_lengths(profiles: dict[str, dict[str, Any]], path: str | Path, context: int = 2048,
                        requests: tuple[int, ...] = (1, 8, 32, 64, 128, 256)) -> Path:
    """Step time against tokens per request t (anchor + drafts) at one context, one line per request
    count n, one panel per profile: where verifying more drafts is nearly free and where it is not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparksched.io import save_figure

    fig, axes = plt.subplots(1, len(profiles), figsize=(5.5 * len(profiles), 4.2), squeeze=False)
    for ax, (label, prof) in zip(axes[0], profiles.items()):
        rows = [r for r in prof["verify"] if r["context"] == context]
        for n in requests:
            pts = sorted((r["tokens_per_request"], r["median_s"], r.get("fits", True)) for r in rows
                         if r["requests"] == n)
            if not pts:
                continue
            t = [p[0] for p in pts]
            ax.plot(t, [p[1] * 1e3 for p in pts], marker="o", label=f"n={n}")
            out = [p for p in pts if not p[2]]
            if out:
                ax.plot([p[0] for p in out], [p[1] * 1e3 for p in out], "kx", ms=7)
        ax.set_xlabel("tokens verified per request t (anchor + drafts)")
        ax.set_ylabel("verify step time (ms)")
        ax.set_title(f"{label}, context {context}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(title="requests per GPU", fontsize=8)
    fig.suptitle("roofline verify cost by batch shape (x: KV does not fit)")
    fig.tight_layout()
    return save_figure(path, fig, dpi=110)
