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
