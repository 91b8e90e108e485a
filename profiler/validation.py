"""The roofline against published measurements: decode step times at a stated batch, with their sources.

Each `Reference` is one measured figure from a public source (engine, model, hardware, parallelism,
batch, context) turned into seconds per decode step, and the deployment the roofline prices it on.
`validation_table()` returns measured vs predicted for all of them; `python -m profiler.validation`
prints the Markdown table that docs/roofline.md carries. No calibration factor is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiler.devices import get_device_spec
from profiler.model_presets import resolve_model
from profiler.parallel import Collective, Deployment
from profiler.passes import verify_cost

LAMBDA = "github.com/LambdaLabsML/vllm-benchmark results/prompt_10"


@dataclass(frozen=True)
class Reference:
    """One published measurement of a decode step.

    Attributes:
        source: where it is published (repository path / URL).
        model, device: preset names understood by `resolve_model` / `get_device_spec`.
        dtype, kv_dtype: weight and KV-cache dtypes the measurement ran with.
        deployment: how the roofline splits the model (as the engine did).
        requests, context: decoding requests per attention group, mean cached tokens per request.
        measured_s: seconds per decode step derived from the source (see `derivation`).
        engine, derivation: engine and how `measured_s` follows from the published numbers.
    """

    label: str
    source: str
    model: str
    device: str
    dtype: str
    requests: int
    context: int
    measured_s: float
    engine: str
    derivation: str
    kv_dtype: str | None = None
    deployment: Deployment = field(default_factory=Deployment)


REFERENCES: tuple[Reference, ...] = (
    Reference("Llama-3-8B, 1 request", f"{LAMBDA}/1xH100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json",
              "llama-3-8b", "h100", "bfloat16", 1, 600, 70.5e-3 / 10, "vLLM 0.6.0, 10-step scheduling",
              "inter-token gap 70.5 ms per 10-token chunk once one request is left"),
    Reference("Llama-3-8B, 9 requests", f"{LAMBDA}/1xH100-80GB-SXM/Meta-Llama-3-8B-Instruct_tp1_len2048.json",
              "llama-3-8b", "h100", "bfloat16", 9, 250, 75.3e-3 / 10, "vLLM 0.6.0, 10-step scheduling",
              "first 10-token chunk with 9 requests decoding: 75.3 ms"),
    Reference("Llama-3.1-70B FP8, 8 requests",
              f"{LAMBDA}/2xH100-80GB-SXM/Meta-Llama-3.1-70B-Instruct-FP8_tp2_len2048.json",
              "llama-3.1-70b", "h100", "float8", 8, 250, 193.0e-3 / 10, "vLLM 0.6.0, 10-step scheduling",
              "10-token chunks of 193 ms while 8 requests decode", kv_dtype="bfloat16",
              deployment=Deployment(gpus=2)),
    Reference("Qwen3-30B-A3B, 1 request", "github.com/tenstorrent/tt-inference-server/issues/340 (A100 sweep)",
              "qwen3-30b-a3b", "a100", "bfloat16", 1, 192, 9.6e-3, "vLLM (tt-inference-server GPU reference)",
              "TPOT 9.6 ms at concurrency 1, 128 input / 128 output tokens"),
    Reference("DeepSeek-V3, 256 requests/GPU", "lmsys.org/blog/2025-05-05-large-scale-ep (decode table)",
              "deepseek-v3", "h100", "float8", 256, 2000, 256 / (22282 / 8), "SGLang, DeepEP, DeepGEMM, TBO",
              "22,282 output tok/s per 8-GPU node at 256 requests per GPU: 256 / 2785 s per step",
              kv_dtype="bfloat16", deployment=Deployment(gpus=72, ep=72, dp_attention=True, two_batch_overlap=True)),
)

# Mixtral-8x7B on 2 H100 (TP2): one file, 10-token chunks timed while 1, 2, 4 and 9 requests decode
_MIXTRAL = f"{LAMBDA}/2xH100-80GB-SXM/Mixtral-8x7B-Instruct-v0.1_tp2_len2048.json"
REFERENCES += tuple(
    Reference(f"Mixtral-8x7B, {n} request{'s' if n > 1 else ''}", _MIXTRAL, "mixtral-8x7b", "h100", "bfloat16", n,
              ctx, chunk_ms * 1e-3 / 10, "vLLM 0.6.0, 10-step scheduling", f"{note}: {chunk_ms} ms per 10 tokens",
              deployment=Deployment(gpus=2))
    for n, ctx, chunk_ms, note in ((1, 900, 74.0, "last chunks, one request left"),
                                   (2, 700, 104.0, "chunks with two requests left"),
                                   (4, 300, 138.0, "chunks with four requests decoding"),
                                   (9, 150, 175.4, "first chunk, 9 requests decoding")))

# DeepEP's low-latency kernels (V1 docs/legacy.md): H800, 128 tokens per rank, 7168 hidden, top-8,
# FP8 dispatch 77 us and BF16 combine 114 us at EP8.
DEEPEP: dict[str, Any] = {"source": "github.com/deepseek-ai/DeepEP docs/legacy.md (low-latency kernels, EP8)",
          "tokens": 128, "hidden": 7168, "top_k": 8, "ep": 8, "measured_s": 77e-6 + 114e-6}


def predict(ref: Reference) -> dict[str, Any]:
    """The roofline's step for `ref` and its split (seconds)."""
    model = resolve_model(ref.model)
    device = get_device_spec(ref.device)
    cost = verify_cost(model, ref.requests, 1, ref.context, ref.dtype, ref.deployment, ref.kv_dtype)
    return cost.breakdown(device)


def deepep_prediction() -> float:
    """The roofline's dispatch + combine for DeepEP's low-latency test (NVLink pricing inside a node)."""
    d = DEEPEP
    sent = d["tokens"] * d["top_k"] * (d["ep"] - 1) / d["ep"] * d["hidden"]
    h800 = get_device_spec("h800")
    return (Collective("all_to_all", sent * (1 + 4 / 128), d["ep"]).seconds(h800)
            + Collective("all_to_all", sent * 2, d["ep"]).seconds(h800))


def validation_table() -> list[dict[str, Any]]:
    """Measured vs predicted for every reference, plus DeepEP's collective test."""
    rows = []
    for ref in REFERENCES:
        dep = ref.deployment
        split = predict(ref)
        rows.append({"label": ref.label, "model": ref.model, "device": ref.device, "dtype": ref.dtype,
                     "parallelism": _parallelism(dep), "requests": ref.requests, "context": ref.context,
                     "engine": ref.engine, "source": ref.source, "derivation": ref.derivation,
                     "measured_s": ref.measured_s, "predicted_s": split["total_s"],
                     "ratio": split["total_s"] / ref.measured_s, **{k: split[k] for k in
                                                                    ("compute_s", "memory_s", "comm_s", "launch_s")}})
    pred = deepep_prediction()
    rows.append({"label": "DeepEP dispatch + combine (one MoE layer)", "model": "DeepSeek-V3 shapes",
                 "device": "h800", "dtype": "float8", "parallelism": "EP8", "requests": DEEPEP["tokens"],
                 "context": 0, "engine": "DeepEP low-latency kernels", "source": DEEPEP["source"],
                 "derivation": "77 us dispatch + 114 us combine", "measured_s": DEEPEP["measured_s"],
                 "predicted_s": pred, "ratio": pred / DEEPEP["measured_s"], "compute_s": 0.0, "memory_s": 0.0,
                 "comm_s": pred, "launch_s": 0.0})
    return rows


def _parallelism(dep: Deployment) -> str:
    if dep.gpus == 1:
        return "1 GPU"
    parts = [f"{dep.gpus} GPUs", f"TP{dep.tp}"]
    if dep.ep > 1:
        parts.append(f"EP{dep.ep}")
    if dep.dp_attention:
        parts.append("DP attention")
    if dep.two_batch_overlap:
        parts.append("two-batch overlap")
    return ", ".join(parts)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown: measured and predicted in ms, ratio predicted / measured."""
    out = ["| figure | hardware | parallelism | batch, context | measured | predicted | pred / meas | source |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit, scale = ("us", 1e6) if r["measured_s"] < 1e-3 else ("ms", 1e3)
        out.append(f"| {r['label']} ({r['dtype']}, {r['engine']}) | {r['device'].upper()} | {r['parallelism']} | "
                   f"{r['requests']}, {r['context']} | {r['measured_s'] * scale:.1f} {unit} | "
                   f"{r['predicted_s'] * scale:.1f} {unit} | {r['ratio']:.2f} | {r['source']} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(validation_table()))
