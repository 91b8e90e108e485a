"""Reading real engines' benchmark results: `vllm bench serve` and SGLang's `bench_serving`.

Formats:
- vLLM (`vllm bench serve --save-result [--save-detailed]`): one JSON object. Setup keys
  (`request_rate` a number or "inf", `burstiness`, `max_concurrency`, `num_prompts`, ...), the
  metric keys of simulator.vllm_metrics, and with --save-detailed per-request lists
  `input_lens`, `output_lens`, `ttfts`, `itls`, `start_times`, `errors`.
- SGLang (`python -m sglang.bench_serving --output-file F [--output-details]`): JSON Lines, one
  object appended per run (the last line is the latest). The same metric vocabulary, except:
  end-to-end latency is `{mean,median,std,pP}_e2e_latency_ms` (vLLM: `_e2el_ms`), total
  throughput is `total_throughput` (vLLM: `total_token_throughput`) and the acceptance length
  is `accept_length` (vLLM: `spec_decode_acceptance_length`). `read_bench` renames these to
  vLLM's keys, so every later step speaks one vocabulary.

Bad input is a one-line ValueError naming the file, the line and the key.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SGLANG_RENAMES = {"total_throughput": "total_token_throughput", "accept_length": "spec_decode_acceptance_length"}
_SGLANG_E2E = re.compile(r"^(mean|median|std|p\d+(?:\.\d+)?)_e2e_latency_ms$")
METRIC_KEY = re.compile(r"^(mean|median|std|p\d+(?:\.\d+)?)_(ttft|tpot|itl|e2el)_ms$")
COUNT_KEYS = ("completed", "failed", "total_input_tokens", "total_output_tokens", "max_concurrent_requests",
              "spec_decode_num_drafts", "spec_decode_draft_tokens", "spec_decode_accepted_tokens")
RATE_KEYS = ("duration", "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
             "max_output_tokens_per_s", "spec_decode_acceptance_rate", "spec_decode_acceptance_length")


@dataclass
class BenchResult:
    """One benchmark run: `data` in vLLM's keys, where it came from, and what was renamed."""

    data: dict[str, Any]
    source: str  # "vllm" or "sglang"
    path: str
    line: int
    renamed: dict[str, str] = field(default_factory=dict)


def _bad(path: Path, line: int, key: str, what: str, value: Any) -> ValueError:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return ValueError(f"{path}: line {line}: field '{key}': {what} (got {text})")


def _objects(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON object of a file, or every object of a JSON Lines file, with its line number."""
    from sparksched.io import json_error, read_text

    if not path.exists():
        raise ValueError(f"{path}: no such file")
    text = read_text(path, "benchmark result", None)
    try:
        whole = json.loads(text)
    except (ValueError, RecursionError):  # not one document (JSON Lines, or bad: each line says)
        whole = None
    if whole is not None:
        if not isinstance(whole, dict):
            raise _bad(path, 1, "<file>", "must be a JSON object (a benchmark result)", type(whole).__name__)
        return [(1, whole)]
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _bad(path, number, "<line>", json_error(exc), raw.strip()) from None
        if not isinstance(obj, dict):
            raise _bad(path, number, "<line>", "must be a JSON object", obj)
        out.append((number, obj))
    if not out:
        raise ValueError(f"{path}: line 1: field '<file>': empty (no benchmark result)")
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_bench(path: str | Path, line: int | None = None) -> BenchResult:
    """A vLLM or SGLang benchmark result, in vLLM's keys (see the module docstring).

    Args:
        path: a vLLM result JSON, or SGLang's JSON Lines output (several runs, one per line).
        line: which line of a JSON Lines file (1-based); None: the last one.
    """
    path = Path(path)
    objects = _objects(path)
    if line is None:
        number, obj = objects[-1]
    else:
        match = [o for o in objects if o[0] == line]
        if not match:
            raise ValueError(f"{path}: line {line}: no benchmark result there (lines: {[n for n, _ in objects]})")
        number, obj = match[0]
    sglang = any(_SGLANG_E2E.match(k) for k in obj) or "accept_length" in obj
    data: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for key, value in obj.items():
        new = key
        m = _SGLANG_E2E.match(key)
        if m:
            new = f"{m.group(1)}_e2el_ms"
        elif key in SGLANG_RENAMES and SGLANG_RENAMES[key] not in obj:
            new = SGLANG_RENAMES[key]
        if new != key:
            renamed[key] = new
        data[new] = value
    for key, value in data.items():
        if (METRIC_KEY.match(key) or key in RATE_KEYS or key in COUNT_KEYS) and value is not None \
                and not _number(value):
            raise _bad(path, number, key, "must be a finite number", value)
    rates = data.get("spec_decode_per_position_acceptance_rates")
    if rates is not None and (not isinstance(rates, list) or not all(_number(r) for r in rates)):
        raise _bad(path, number, "spec_decode_per_position_acceptance_rates", "must be a list of numbers", rates)
    if not any(METRIC_KEY.match(k) or k in RATE_KEYS for k in data):
        raise ValueError(f"{path}: line {number}: field '<object>': no benchmark metric keys (expected e.g. "
                         "mean_ttft_ms, output_throughput: a vllm bench serve or sglang bench_serving result)")
    return BenchResult(data, "sglang" if sglang else "vllm", str(path), number, renamed)
