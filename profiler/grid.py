"""The profiling grid: which (requests, tokens per request, context) points to time.

A verify pass of n requests with t tokens each (the anchor plus t - 1 drafts, t in 1..g+1) over a KV
cache of L tokens per request has B = n t batch tokens. Every context gets the same (n, t) points,
so the profile has the same B grid at every context (what `ThroughputCurve.from_profile` needs).
The drafter is timed per (n, g) at one context; prefill per prompt length with one request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """'1,2,4' or '1-8' (inclusive range) or a mix -> sorted unique positive ints; one-line ValueError."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                vals = range(int(lo), int(hi) + 1)
                if not vals:
                    raise ValueError
                out.update(vals)
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"--{name}: {part!r} is not an integer or a range like 1-8") from None
    if not out:
        raise ValueError(f"--{name}: empty list {text!r}")
    if min(out) <= 0:
        raise ValueError(f"--{name}: values must be > 0, got {min(out)}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Grid:
    """Points to time. Lengths in tokens.

    Attributes:
        requests: batch sizes n (requests per verify pass).
        tokens_per_request: t values, 1 .. g + 1 (anchor + up to g drafts).
        contexts: KV cache lengths L per request; 0 means an empty cache.
        prompts: prefill prompt lengths (one request each).
        draft_requests: n values for the drafter.
        blocks: drafter block sizes g.
        draft_context: context length the drafter attends to while timing it.
    """

    requests: tuple[int, ...] = (1, 2, 4, 8)
    tokens_per_request: tuple[int, ...] = (1, 2, 4, 8)
    contexts: tuple[int, ...] = (128, 512)
    prompts: tuple[int, ...] = (64, 256)
    draft_requests: tuple[int, ...] = (1, 4)
    blocks: tuple[int, ...] = (4, 7)
    draft_context: int = 256

    def __post_init__(self) -> None:
        for name in ("requests", "tokens_per_request", "prompts", "draft_requests", "blocks"):
            vals = getattr(self, name)
            if not vals or min(vals) <= 0:
                raise ValueError(f"grid {name} must be a non-empty list of values > 0, got {list(vals)}")
        if not self.contexts or min(self.contexts) < 0:
            raise ValueError(f"grid contexts must be a non-empty list of values >= 0, got {list(self.contexts)}")
        if self.draft_context < 0:
            raise ValueError(f"grid draft_context must be >= 0, got {self.draft_context}")
        for name in ("requests", "tokens_per_request", "contexts", "prompts", "draft_requests", "blocks"):
            object.__setattr__(self, name, tuple(sorted(set(int(v) for v in getattr(self, name)))))

    def verify_points(self) -> list[tuple[int, int, int]]:
        """(n, t, L) for every point, context-major then n then t."""
        return [(n, t, c) for c in self.contexts for n in self.requests for t in self.tokens_per_request]

    def draft_points(self) -> list[tuple[int, int]]:
        """(n, g) for every drafter point."""
        return [(n, g) for n in self.draft_requests for g in self.blocks]

    @property
    def batch_tokens(self) -> list[int]:
        """The distinct B = n t values of the verify grid, increasing."""
        return sorted({n * t for n in self.requests for t in self.tokens_per_request})

    @property
    def size(self) -> int:
        """Number of timed points (verify + draft + prefill)."""
        return len(self.verify_points()) + len(self.draft_points()) + len(self.prompts)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def for_block(cls, block: int, **kw: Any) -> Grid:
        """A grid whose tokens per request are 1 .. block + 1 (every verify length of a g-block)."""
        return cls(tokens_per_request=tuple(range(1, block + 2)), **kw)


# Named grids. Requests and tokens per request are doubling ladders on purpose: a curve keyed on B
# averages every (n, t) row with n t = B, and step time grows with n (each request's KV cache is read)
# as well as with B; with both ladders doubling, the mix of n at each B scales with B, so the averaged
# curve stays non-decreasing even where KV reads dominate (long contexts). With t = 1..8 it would not:
# e.g. B = 384 (n = 128 x 3) costs more than B = 448 (n = 64 x 7) at L = 8192.
# "cpu": a modest grid for the tiny preset on 2 cores. "gpu": an 8B target on one 80 GB card
# (n L <= 128 x 2056 tokens of KV, ~39 GB at bf16). "roofline": the simulation default, B up to
# 256 x 8 = 2048 tokens. "moe": the paper's regime on an MoE deployment (requests per attention group
# up to 512, every verify length 1..8 of blocks up to 7, contexts to 32 K, drafter rows up to 512
# requests): a full requests x tokens x context grid for a step-cost model keyed on (n, B, L). With
# every t in 1..8 the requests must double (1, 2, 4, ...): then the fewest requests giving a batch B,
# 2^ceil(log2(B / 8)), never falls as B grows, and a KV-heavy long-context curve read by B stays
# non-decreasing (an in-between n such as 96 x 5 = 480 would cost more than 64 x 8 = 512 at 32 K).
_POW2_T = (1, 2, 4, 8)
GRIDS: dict[str, Grid] = {
    "cpu": Grid(requests=(1, 2, 4, 8, 16, 32), tokens_per_request=_POW2_T, contexts=(64, 256, 1024),
                prompts=(32, 128, 512), draft_requests=(1, 4, 16), blocks=(4, 7), draft_context=256),
    "gpu": Grid(requests=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128), tokens_per_request=_POW2_T,
                contexts=(128, 512, 2048),
                prompts=(128, 512, 2048, 8192), draft_requests=(1, 8, 32, 64), blocks=(5, 7, 16),
                draft_context=1024),
    "roofline": Grid(requests=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
                     tokens_per_request=_POW2_T,
                     contexts=(512, 2048, 8192), prompts=(128, 512, 2048, 8192),
                     draft_requests=(1, 8, 32, 64, 128), blocks=(5, 7, 16), draft_context=2048),
    "moe": Grid(requests=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                tokens_per_request=tuple(range(1, 9)), contexts=(512, 2048, 8192, 32768),
                prompts=(128, 512, 2048, 8192), draft_requests=(1, 8, 32, 64, 128, 256, 384, 512),
                blocks=(5, 7, 16), draft_context=2048),
}


def get_grid(name: str) -> Grid:
    try:
        return GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown grid {name!r}; known: {', '.join(GRIDS)}") from None
