"""compare and trace convert --from vllm-bench, on result files written here from vLLM's and SGLang's schemas."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from simulator.bench_files import read_bench
from simulator.compare import compare_results
from simulator.convert import bench_arrivals, convert_vllm_bench
from sparksched.cli import main

LATENCY = {f"{s}_{m}_ms": v for m, base in (("ttft", 120.0), ("tpot", 9.0), ("itl", 20.0), ("e2el", 2400.0))
           for s, v in (("mean", base), ("median", 0.9 * base), ("std", 0.5 * base), ("p99", 3 * base))}


def vllm_result(n: int = 200, rate: float | str = 4.0, burstiness: float = 1.0, seed: int = 0) -> dict:
    """A `vllm bench serve --save-result --save-detailed` result as vLLM writes it (benchmarks/serve.py)."""
    rng = np.random.default_rng(seed)
    return {
        "date": "20261203-120000", "endpoint_type": "openai", "backend": "openai", "label": None,
        "model_id": "Qwen/Qwen3-8B", "tokenizer_id": "Qwen/Qwen3-8B", "num_prompts": n,
        "request_rate": rate, "burstiness": burstiness, "max_concurrency": None,
        "duration": 55.0, "completed": n, "failed": 0, "total_input_tokens": 1000 * n, "total_output_tokens": 200 * n,
        "request_throughput": n / 55.0, "request_goodput": None, "output_throughput": 200 * n / 55.0,
        "total_token_throughput": 1200 * n / 55.0, "max_output_tokens_per_s": 900.0, "max_concurrent_requests": 17,
        "input_lens": rng.integers(50, 2000, n).tolist(), "output_lens": rng.integers(1, 400, n).tolist(),
        "ttfts": [0.1] * n, "itls": [[0.01]] * n, "start_times": np.sort(rng.uniform(0, 50, n)).tolist(),
        "errors": [""] * n,
        **LATENCY,
        "spec_decode_acceptance_rate": 45.0, "spec_decode_acceptance_length": 3.2, "spec_decode_num_drafts": 1000,
        "spec_decode_draft_tokens": 5000, "spec_decode_accepted_tokens": 2200,
        "spec_decode_per_position_acceptance_rates": [0.8, 0.6, 0.4, 0.2, 0.1],
    }


def sglang_line(n: int = 50) -> dict:
    """One line of `python -m sglang.bench_serving --output-file F --output-details` (bench_serving.py)."""
    rng = np.random.default_rng(1)
    return {
        "backend": "sglang", "dataset_name": "random", "request_rate": 8.0, "max_concurrency": None,
        "duration": 12.0, "completed": n, "total_input_tokens": 500 * n, "total_output_tokens": 100 * n,
        "request_throughput": n / 12.0, "input_throughput": 500 * n / 12.0, "output_throughput": 100 * n / 12.0,
        "total_throughput": 600 * n / 12.0,
        "mean_e2e_latency_ms": 900.0, "median_e2e_latency_ms": 850.0, "std_e2e_latency_ms": 200.0,
        "p99_e2e_latency_ms": 1500.0, "mean_ttft_ms": 80.0, "median_ttft_ms": 70.0, "std_ttft_ms": 30.0,
        "p99_ttft_ms": 200.0, "mean_tpot_ms": 8.0, "median_tpot_ms": 7.5, "std_tpot_ms": 2.0, "p99_tpot_ms": 15.0,
        "mean_itl_ms": 18.0, "median_itl_ms": 16.0, "std_itl_ms": 5.0, "p95_itl_ms": 30.0, "p99_itl_ms": 45.0,
        "concurrency": 3.7, "accept_length": 3.1,
        "input_lens": rng.integers(50, 1000, n).tolist(), "output_lens": rng.integers(2, 200, n).tolist(),
    }


def test_read_vllm_and_sglang_results(tmp_path):
    v = tmp_path / "bench.json"
    v.write_text(json.dumps(vllm_result()))
    b = read_bench(v)
    assert b.source == "vllm" and b.renamed == {} and b.data["mean_ttft_ms"] == 120.0
    s = tmp_path / "sglang.jsonl"
    lines = [sglang_line(), {**sglang_line(), "mean_ttft_ms": 99.0}]
    s.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    last = read_bench(s)
    assert last.source == "sglang" and last.line == 2 and last.data["mean_ttft_ms"] == 99.0
    assert last.data["mean_e2el_ms"] == 900.0 and last.data["p99_e2el_ms"] == 1500.0
    assert last.data["spec_decode_acceptance_length"] == 3.1 and last.data["total_token_throughput"] == 2500.0
    assert read_bench(s, line=1).data["mean_ttft_ms"] == 80.0


@pytest.mark.parametrize("text, needle", [
    ("[1, 2]", "must be a JSON object"),
    ('{"mean_ttft_ms": "fast"}', "field 'mean_ttft_ms': must be a finite number"),
    ('{"model_id": "x"}', "no benchmark metric keys"),
    ('{"mean_ttft_ms": 1.0}\n{oops\n', "line 2: field '<line>': bad JSON"),
    ('{"mean_ttft_ms": 1, "spec_decode_per_position_acceptance_rates": [0.5, "x"]}', "must be a list of numbers"),
])
def test_bad_result_files_are_one_line_errors(tmp_path, text, needle):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        read_bench(p)


def test_compare_results_errors_are_relative_to_the_engine():
    engine = {"mean_ttft_ms": 100.0, "p99_ttft_ms": 400.0, "output_throughput": 2000.0, "completed": 50,
              "spec_decode_per_position_acceptance_rates": [0.8, 0.5], "p95_itl_ms": 3.0}
    sim = {"mean_ttft_ms": 110.0, "p99_ttft_ms": 300.0, "output_throughput": 2000.0, "completed": 50,
           "spec_decode_per_position_acceptance_rates": [0.7, 0.5, 0.3], "p90_itl_ms": 2.0}
    t = compare_results(engine, sim)
    err = dict(zip(t["metric"], t["error_pct"]))
    assert err["mean_ttft_ms"] == pytest.approx(10.0) and err["p99_ttft_ms"] == pytest.approx(-25.0)
    assert err["output_throughput"] == 0.0 and err["spec_decode_per_position_acceptance_rates[0]"] == pytest.approx(-12.5)
    assert "spec_decode_per_position_acceptance_rates[2]" not in err  # only positions both sides report
    assert "p95_itl_ms" not in err and "p90_itl_ms" not in err  # only keys both sides have


def test_bench_arrivals_follow_vllms_process():
    rng = np.random.default_rng(0)
    t = bench_arrivals(rng, 4000, rate=5.0, burstiness=1.0)
    assert t[-1] == pytest.approx(4000 / 5.0)  # vLLM rescales the last send time to n / rate
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(0.2, rel=0.02) and gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)
    smooth = np.diff(bench_arrivals(rng, 4000, rate=5.0, burstiness=4.0))
    assert smooth.std() / smooth.mean() == pytest.approx(0.5, abs=0.05)  # CV = 1 / sqrt(burstiness)
    assert np.all(bench_arrivals(rng, 10, rate=float("inf"), burstiness=1.0) == 0)
    assert np.allclose(np.diff(bench_arrivals(rng, 10, rate=2.0, burstiness=float("inf"))), 0.5)


def test_convert_vllm_bench_keeps_lengths_and_drops_failures(tmp_path):
    doc = vllm_result(n=100)
    doc["output_lens"][3] = 0  # a failed request (vLLM writes 0 output tokens)
    doc["errors"][7] = "Timeout"
    p = tmp_path / "bench.json"
    p.write_text(json.dumps(doc))
    df, report = convert_vllm_bench(p, seed=2)
    assert df.height == 98 and report.dropped == {"failed (an error or 0 tokens)": 2}
    keep = [i for i in range(100) if i not in (3, 7)]
    assert df["prompt_tokens"].to_list() == [doc["input_lens"][i] for i in keep]
    assert df["output_tokens"].to_list() == [doc["output_lens"][i] for i in keep]
    rec, _ = convert_vllm_bench(p, arrivals="recorded")
    starts = np.asarray(doc["start_times"])[keep]
    assert rec["arrival_s"].to_numpy() == pytest.approx(starts - starts.min())
    no_details = {k: v for k, v in doc.items() if k not in ("input_lens", "output_lens")}
    p.write_text(json.dumps(no_details))
    with pytest.raises(ValueError, match="--save-detailed"):
        convert_vllm_bench(p)


def test_convert_simulate_compare_end_to_end(tmp_path):
    runner = CliRunner()
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(vllm_result(n=60, rate=3.0)))
    trace = tmp_path / "workload.jsonl"
    res = runner.invoke(main, ["trace", "convert", "--from", "vllm-bench", str(bench), "-o", str(trace)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    res = runner.invoke(main, ["simulate", "--trace", str(trace), "-q", "--no-report", "-o", str(run)])
    assert res.exit_code == 0, res.output
    out_csv = tmp_path / "cmp.csv"
    res = runner.invoke(main, ["compare", str(bench), str(run), "-o", str(out_csv)])
    assert res.exit_code == 0, res.output
    assert "mean_ttft_ms" in res.output and "spec_decode_acceptance_length" in res.output
    sim = json.loads((run / "result.json").read_text())
    table = pl.read_csv(out_csv)
    row = table.filter(pl.col("metric") == "mean_ttft_ms").row(0, named=True)
    assert row["simulated"] == pytest.approx(sim["mean_ttft_ms"]) and row["engine"] == 120.0
    assert row["error_pct"] == pytest.approx(100 * (sim["mean_ttft_ms"] - 120.0) / 120.0)
    # the same workload: input tokens agree exactly (the converted trace carries the benchmark's lengths)
    tokens = table.filter(pl.col("metric") == "total_input_tokens").row(0, named=True)
    assert tokens["engine"] != tokens["simulated"]  # the hand-written totals are round numbers...
    assert sim["total_input_tokens"] == sum(vllm_result(n=60, rate=3.0)["input_lens"])  # ...the trace is exact


def test_compare_sglang_output_and_errors(tmp_path):
    runner = CliRunner()
    s = tmp_path / "sglang.jsonl"
    s.write_text(json.dumps(sglang_line()) + "\n")
    run = tmp_path / "run"
    assert runner.invoke(main, ["simulate", "--trace", "chat", "--max-requests", "30", "-q", "--no-report",
                                "-o", str(run)]).exit_code == 0
    res = runner.invoke(main, ["compare", str(s), str(run)])
    assert res.exit_code == 0, res.output
    assert "sglang bench_serving" in res.output and "mean_e2e_latency_ms -> mean_e2el_ms" in res.output
    assert "mean_e2el_ms" in res.output
    missing = runner.invoke(main, ["compare", str(tmp_path / "nope.json"), str(run)])
    assert missing.exit_code == 1 and "no such file" in missing.output and "Traceback" not in missing.output
    not_run = runner.invoke(main, ["compare", str(s), str(tmp_path)])
    assert not_run.exit_code == 1 and "result.json" in not_run.output
    bad_out = runner.invoke(main, ["compare", str(s), str(run), "-o", str(tmp_path / "x.txt")])
    assert bad_out.exit_code == 2


def test_trace_convert_positional_output_is_an_alias(tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(vllm_result(n=20)))
    runner = CliRunner()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert runner.invoke(main, ["trace", "convert", "--from", "vllm-bench", str(bench), str(a)]).exit_code == 0
    assert runner.invoke(main, ["trace", "convert", "--from", "vllm-bench", str(bench), "-o", str(b)]).exit_code == 0
    assert a.read_text() == b.read_text()
    both = runner.invoke(main, ["trace", "convert", "--from", "vllm-bench", str(bench), str(a), "-o", str(b)])
    assert both.exit_code == 2 and "two outputs" in both.output
    none = runner.invoke(main, ["trace", "convert", "--from", "vllm-bench", str(bench)])
    assert none.exit_code == 2 and "-o" in none.output
