"""report.html builders: escaping, self-containment, the latency grid."""

from __future__ import annotations

import polars as pl

from simulator.report import fmt, image, latency_table, page, sweep_report, table


def test_cells_are_formatted_and_escaped():
    assert fmt(None) == "-" and fmt(float("nan")) == "-" and fmt(12345) == "12,345" and fmt(0.123456) == "0.1235"
    html = table(["a<b"], [["<script>x</script>"]])
    assert "<script>" not in html and "&lt;script&gt;" in html and "a&lt;b" in html


def test_latency_grid_has_one_row_per_metric_and_vllms_percentiles():
    bench = {f"{s}_{m}_ms": 1.0 for m in ("ttft", "tpot", "itl", "e2el")
             for s in ("mean", "median", "std", "p50", "p90", "p99", "p99.9")}
    html = latency_table(bench)
    assert html.count("<tr>") == 5  # header + 4 metrics
    assert html.index("p50") < html.index("p90") < html.index("p99<") < html.index("p99.9")


def test_sweep_report_is_one_offline_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = tmp_path / "frontier.png"
    fig.savefig(png)
    plt.close(fig)
    text = sweep_report("t", "answers & more", {"Frontier": pl.DataFrame({"policy": ["dspark"], "x": [1.5]})},
                        [png], 'sla = 80.0\n')
    assert text.startswith("<!DOCTYPE html>") and "answers &amp; more" in text and "dspark" in text
    assert image(png) in text and "src=\"http" not in text and "<script" not in text
    assert page("x", []).count("<h2>") == 0
