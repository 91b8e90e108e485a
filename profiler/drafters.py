"""Drafters priced on the target's deployment: DSpark (the paper's production drafter), DFlash, MTP-1, EAGLE-3.

- dspark: a parallel backbone of `layers` target-shaped layers (MoE layers for an MoE target, with
  the target's attention) over the anchor + block positions at once, attending bidirectionally
  within the block and, through a sliding window, to the last `window` target states; the shared
  LM head over every position; then the Markov head's `block` sequential steps (rank-r bias, softmax,
  sampling). The paper's production drafter on DeepSeek-V4: three MoE layers, window 128, gamma 5.
  On a dense target the default stays the reference decoder's drafter (5 dense layers, full context).
- dflash: the same backbone, positions sampled in parallel (no sequential head).
- mtp1: DeepSeek's multi-token-prediction module: one target-shaped layer with its own KV cache over
  the whole context, a 2d -> d projection, the shared LM head; one token per request per step.
- eagle3: one dense decoder layer (target width and MLP width; attention over the whole context), a
  3d -> d fusion of target states, a 32k-token draft vocabulary; one pass per drafted token.

Each family's (backbone, head) cost comes out as `PassCost`s on the same deployment as the target:
its MoE layers see every attention group's tokens and pay the same all-to-all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from profiler.devices import DTYPE_BYTES
from profiler.models import ModelSpec
from profiler.parallel import Deployment
from profiler.passes import PassCost, Precision, Work, head_cost, layers_cost, tiled

FAMILIES = ("dspark", "dflash", "mtp1", "eagle3")
EAGLE3_VOCAB = 32000  # EAGLE-3 drafters predict over a reduced draft vocabulary
PAPER_LAYERS, PAPER_WINDOW, PAPER_BLOCK = 3, 128, 5  # the paper's production DSpark drafter (section 5.1)


@dataclass(frozen=True)
class DrafterSpec:
    """Shape of a drafter on a given target.

    Attributes:
        family: dspark | dflash | mtp1 | eagle3.
        layers: decoder layers in the drafter.
        moe: whether those layers are the target's MoE layer (else dense of the target's width).
        window: attention window in tokens (0 = the whole context).
        rank: Markov head rank (dspark only; 0 = no sequential head).
        parallel: one pass drafts the whole block (dspark, dflash); else one pass per token.
        vocab: draft vocabulary (0 = the target's, shared LM head).
        fusion_inputs: target hidden states fused into the first layer (k d -> d projection).
    """

    family: str
    layers: int
    moe: bool
    window: int
    rank: int
    parallel: bool
    vocab: int = 0
    fusion_inputs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drafter_presets(target: ModelSpec, layers: int | None = None, window: int | None = None,
                    rank: int = 256) -> dict[str, DrafterSpec]:
    """The four families on `target`. `layers` / `window` override the DSpark / DFlash backbone."""
    moe = target.is_moe
    n = layers if layers is not None else (PAPER_LAYERS if moe else 5)
    w = window if window is not None else (PAPER_WINDOW if moe else 0)
    if n < 1 or w < 0 or rank < 0:
        raise ValueError(f"drafter needs layers >= 1, window >= 0, rank >= 0; got {n}, {w}, {rank}")
    return {
        "dspark": DrafterSpec("dspark", n, moe, w, rank, True, fusion_inputs=3),
        "dflash": DrafterSpec("dflash", n, moe, w, 0, True, fusion_inputs=3),
        "mtp1": DrafterSpec("mtp1", 1, moe, 0, 0, False, fusion_inputs=2),
        "eagle3": DrafterSpec("eagle3", 1, False, 0, 0, False, vocab=EAGLE3_VOCAB, fusion_inputs=3),
    }


def drafter_model(target: ModelSpec, spec: DrafterSpec) -> ModelSpec:
    """The drafter's layers as a ModelSpec (target width and attention; MoE or dense MLPs)."""
    idx = list(range(spec.layers))
    width = target.intermediate or (target.moe_intermediate * max(target.experts_per_token, 1)) or 4 * target.hidden
    return target.with_(name=f"{target.name}-{spec.family}", layers=spec.layers,
                        moe_layers=idx if spec.moe else [], intermediate=width,
                        sliding_window=spec.window, sliding_layers=idx if spec.window else [],
                        vocab_size=spec.vocab or target.vocab_size)


def _sampling(rows: float, vocab: int, steps: int = 1) -> PassCost:
    """Softmax + sampling over `rows` x `vocab` float32 logits, `steps` times."""
    w = Work("sample", (("float32", 6.0 * rows * vocab),), 4.0 * rows * vocab * 4)
    return PassCost((w,) * steps, (), 3 * steps)


def _markov_head(rows: float, block: int, rank: int, vocab: int, prec: Precision) -> PassCost:
    """`block` sequential steps of the Markov bias: gather n rows of W1 [V, r], [n, r] x [r, V], add,
    softmax, sample over [n, V] float32 (rows = n requests)."""
    s = DTYPE_BYTES[prec.emb]
    w = Work("markov_head", ((prec.emb, 2.0 * tiled(rows) * rank * vocab), ("float32", 6.0 * rows * vocab)),
             rank * vocab * s + rows * rank * s + 4 * rows * vocab * 4)
    return PassCost((w,) * block, (), 6 * block)


def draft_cost(target: ModelSpec, spec: DrafterSpec, n: float, block: int, context: float,
               prec: Precision, dep: Deployment) -> tuple[PassCost, PassCost]:
    """(backbone, head) of one drafting step for n requests per attention group, block g, context L."""
    model = drafter_model(target, spec)
    d = target.hidden
    fusion = Work("fusion", ((prec.weights, 0.0),), 0.0)
    if spec.parallel:
        rows = n * block
        fusion = Work("fusion", ((prec.weights, 2.0 * tiled(rows) * spec.fusion_inputs * d * d / int(dep.tp)),),  # type: ignore[arg-type]
                      spec.fusion_inputs * d * d * DTYPE_BYTES[prec.weights] / int(dep.tp))  # type: ignore[arg-type]
        body = layers_cost(model, n, block, context, prec, dep, causal=False)
        backbone = PassCost((fusion,)) + body + head_cost(model, rows, rows, prec, dep)
        head = (_markov_head(n, block, spec.rank, model.vocab_size, prec) if spec.rank
                else _sampling(rows, model.vocab_size))
        return backbone, head
    steps = 1 if spec.family == "mtp1" else block
    fusion = Work("fusion", ((prec.weights, 2.0 * tiled(n) * spec.fusion_inputs * d * d / int(dep.tp)),),  # type: ignore[arg-type]
                  spec.fusion_inputs * d * d * DTYPE_BYTES[prec.weights] / int(dep.tp))  # type: ignore[arg-type]
    one = PassCost((fusion,)) + layers_cost(model, n, 1, context, prec, dep) + head_cost(model, n, n, prec, dep)
    return one.times(steps), _sampling(n, model.vocab_size, steps)
