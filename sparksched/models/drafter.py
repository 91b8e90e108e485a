"""The DSpark drafter: a parallel backbone plus a sequential head and a confidence head (docs/method.md).

API (n requests, g = block size, V = vocabulary, w = draft width):

    drafter = DSparkDrafter(DrafterConfig(block=7, head="markov"), target)   # shares target.embed / lm_head
    ctx = drafter.new_context(n, max_len)               # per-request context cache (KVCache, rolls back)
    drafter.extend_context(ctx, hidden)                 # hidden: target block outputs at
                                                        #   config.target_layers, each [n, T, d_target];
                                                        #   written at ctx.lengths, caller advances
    bb = drafter.backbone(anchor, ctx)                  # ONE parallel pass: bb.base_logits [n, g, V]
                                                        #   (float32), bb.hidden [n, g, w]
    out = drafter.sample(bb, anchor, generators, greedy=False)   # sequential head loop, left to right:
                                                        #   out.tokens [n, g] int64, out.probs [n, g, V]
                                                        #   (float32, the q_k used for rejection
                                                        #   sampling), out.conf [n, g] (c_k in (0, 1))
    out = drafter.draft(anchor, ctx, generators)        # backbone + sample
    logits, conf = drafter.score(bb, prev)              # teacher forcing: prev [n, g] = x_0..x_{g-1}

Backbone: the anchor x_0 plus g-1 learned mask embeddings at positions L..L+g-1 (L = ctx.lengths, the
anchor's position) go through `layers` draft blocks. Each draft layer's queries attend to the block's
own keys bidirectionally and to the context: hidden states of a few target layers at positions < L,
concatenated, projected into the draft width (`fc`), then through that layer's own key / value
projections (with RoPE at their positions) and appended to its keys and values. The anchor is the
first prediction position, so g inputs give g draft logits. The target's embedding and LM head are
shared and frozen (held by reference, not registered, not saved with the drafter).

Sequential head (`head`): logits_k = base_logits_k + B_k with
    "markov": B_k = W2 W1[x_{k-1}]          (W1: V x r embedding, W2: r x V, rank r)
    "rnn":    z_k = [s_{k-1}; W1[x_{k-1}]; h_k], (g, c, o) = split(W z_k),
              s_k = sigmoid(g) * s_{k-1} + (1 - sigmoid(g)) * tanh(c),  B_k = W2 tanh(o),  s_0 = 0
    "none":   B_k = 0                       (DFlash-like backbone only)
Confidence head (all heads): c_k = sigmoid(w^T [h_k; W1[x_{k-1}]] + b): a function of the context,
the backbone hidden state and the PREVIOUS draft token x_{k-1} only, never of x_k (the lossless
contract of the scheduler). Optional STS temperatures (`sts_temps`, [g], ones by default) are
applied as c' = sigmoid(logit(c) / t_k) when `calibrated=True`.

Randomness: `sample` draws g uniforms per request from that request's own torch.Generator (when
given) before the loop and samples by inverse CDF, so a request's draft never depends on which other
requests share the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparksched.models.decoder import Decoder, KVCache, RMSNorm, apply_rope, rope_tables
from sparksched.sampling import sample_rows

HEADS = ("markov", "rnn", "none")


@dataclass(frozen=True)
class DrafterConfig:
    """Shape of a DSpark drafter (the target supplies vocabulary, embedding and LM head)."""

    block: int = 7  # g: draft positions per round (anchor + g-1 masks)
    layers: int = 1  # draft backbone blocks
    width: int = 0  # draft width w; 0 = the target's hidden size
    heads: int = 4  # query heads
    kv_heads: int = 2  # key/value heads
    head_dim: int = 32
    intermediate: int = 384  # SwiGLU inner width
    target_layers: tuple[int, ...] = (0, 1)  # target blocks whose outputs condition the drafter
    head: str = "markov"  # sequential head: markov | rnn | none
    rank: int = 64  # r: Markov / RNN embedding rank (the paper's default is 256 for large V)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"DrafterConfig.head must be one of {HEADS}, got {self.head!r}")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        for f in ("block", "layers", "heads", "kv_heads", "head_dim", "intermediate", "rank"):
            if getattr(self, f) <= 0:
                raise ValueError(f"DrafterConfig.{f} must be > 0, got {getattr(self, f)}")
        if not self.target_layers:
            raise ValueError("DrafterConfig.target_layers must name at least one target layer")
        object.__setattr__(self, "target_layers", tuple(int(i) for i in self.target_layers))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_layers"] = list(self.target_layers)
        return d


@dataclass
class BackboneOutput:
    """base_logits [n, g, V] float32 (U_k), hidden [n, g, w] (h_k, after the final norm)."""

    base_logits: torch.Tensor
    hidden: torch.Tensor


@dataclass
class DraftOutput:
    """tokens [n, g] int64 (x_1..x_g), probs [n, g, V] float32 (q_k), conf [n, g] float32 (c_k)."""

    tokens: torch.Tensor
    probs: torch.Tensor
    conf: torch.Tensor


class DraftAttention(nn.Module):
    def __init__(self, c: DrafterConfig, width: int) -> None:
        super().__init__()
        self.c = c
        self.q = nn.Linear(width, c.heads * c.head_dim, bias=False)
        self.k = nn.Linear(width, c.kv_heads * c.head_dim, bias=False)
        self.v = nn.Linear(width, c.kv_heads * c.head_dim, bias=False)
        self.o = nn.Linear(c.heads * c.head_dim, width, bias=False)

    def kv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys (with RoPE) and values [n, Hkv, T, hd] of features x [n, T, w]; cos/sin [n, 1, T, hd]."""
        n, t, _ = x.shape
        c = self.c
        k = self.k(x).view(n, t, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v(x).view(n, t, c.kv_heads, c.head_dim).transpose(1, 2)
        return apply_rope(k, cos, sin), v

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx_k: torch.Tensor,
                ctx_v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [n, Q, w]; ctx_k/ctx_v [n, Hkv, Lc, hd]; mask [n, 1, Q, Lc + Q] bool (True = attend)."""
        n, t, _ = x.shape
        c = self.c
        q = apply_rope(self.q(x).view(n, t, c.heads, c.head_dim).transpose(1, 2), cos, sin)
        k, v = self.kv(x, cos, sin)
        keys, values = torch.cat([ctx_k, k], dim=2), torch.cat([ctx_v, v], dim=2)
        groups = c.heads // c.kv_heads
        if groups > 1:
            keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.o(out.transpose(1, 2).reshape(n, t, c.heads * c.head_dim))


class DraftBlock(nn.Module):
    def __init__(self, c: DrafterConfig, width: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(width, c.norm_eps)
        self.attn = DraftAttention(c, width)
        self.mlp_norm = RMSNorm(width, c.norm_eps)
        self.gate = nn.Linear(width, c.intermediate, bias=False)
        self.up = nn.Linear(width, c.intermediate, bias=False)
        self.down = nn.Linear(c.intermediate, width, bias=False)

    def forward(self, x, cos, sin, ctx_k, ctx_v, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, ctx_k, ctx_v, mask)
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class DSparkDrafter(nn.Module):
    """DSpark drafter for `target` (see the module docstring for the API and the maths)."""

    def __init__(self, config: DrafterConfig, target: Decoder) -> None:
        super().__init__()
        tc = target.config
        bad = [i for i in config.target_layers if not 0 <= i < tc.layers]
        if bad:
            raise ValueError(f"DrafterConfig.target_layers {bad} outside the target's {tc.layers} layers")
        self.config = config
        self.width = w = config.width or tc.hidden
        self.vocab = tc.vocab_size
        self._shared = (target.embed, target.lm_head)  # by reference: frozen, not registered
        self.fc = nn.Linear(len(config.target_layers) * tc.hidden, w, bias=False)
        self.fc_norm = RMSNorm(w, config.norm_eps)
        self.in_proj = nn.Linear(tc.hidden, w, bias=False) if w != tc.hidden else nn.Identity()
        self.mask_embed = nn.Parameter(torch.zeros(w))
        blocks = [DraftBlock(config, w) for _ in range(config.layers)]
        self.blocks = nn.ModuleList(blocks)
        self._blocks: list[DraftBlock] = blocks  # typed view of the same modules
        self.norm = RMSNorm(w, config.norm_eps)
        self.out_proj = nn.Linear(w, tc.hidden, bias=False) if w != tc.hidden else nn.Identity()
        r = config.rank
        self.w1 = nn.Embedding(tc.vocab_size, r)  # Markov embedding W1 (also feeds the confidence head)
        self.w2 = nn.Linear(r, tc.vocab_size, bias=False) if config.head != "none" else None
        self.rnn = nn.Linear(2 * r + w, 3 * r) if config.head == "rnn" else None
        self.conf_head = nn.Linear(w + r, 1)
        self.sts_temps: torch.Tensor
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        self.register_buffer("sts_temps", torch.ones(config.block))
        cos, sin = rope_tables(config.head_dim, tc.max_positions, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters(0)

    # ------------------------------------------------------------------------------------ setup
    def reset_parameters(self, seed: int = 0, std: float = 0.02) -> None:
        """Seeded init: normal(std), norms at 1, W2 and the mask at zero (starts as backbone only)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.startswith("w2.") or name.endswith("bias") or name == "mask_embed":
                    p.zero_()
                else:
                    p.copy_((torch.randn(p.shape, generator=gen) * std).to(p))

    @property
    def target_layers(self) -> tuple[int, ...]:
        return self.config.target_layers

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        embed = self._shared[0]
        return self.in_proj(embed(tokens).to(self.fc.weight.dtype))

    def _lm_head(self, h: torch.Tensor) -> torch.Tensor:
        head = self._shared[1]
        return head(self.out_proj(h).to(head.weight.dtype)).float()

    def features(self, hidden: Sequence[torch.Tensor]) -> torch.Tensor:
        """Context features [n, T, w] from target hidden states (one [n, T, d] per target layer)."""
        if len(hidden) != len(self.config.target_layers):
            raise ValueError(f"expected {len(self.config.target_layers)} target hidden states, got {len(hidden)}")
        x = torch.cat([h.to(self.fc.weight.dtype) for h in hidden], dim=-1)
        return self.fc_norm(self.fc(x))

    # ------------------------------------------------------------------------- context cache
    def new_context(self, n: int, max_len: int) -> KVCache:
        """Empty context cache for n requests (keys/values of each draft layer, lengths [n] = 0)."""
        c = self.config
        w = self.fc.weight
        shape = (c.layers, n, c.kv_heads, max_len, c.head_dim)
        return KVCache(torch.zeros(shape, device=w.device, dtype=w.dtype),
                       torch.zeros(shape, device=w.device, dtype=w.dtype),
                       torch.zeros(n, device=w.device, dtype=torch.long))

    def extend_context(self, ctx: KVCache, hidden: Sequence[torch.Tensor]) -> None:
        """Write the context of T new committed tokens per request at `ctx.lengths` (no advance).

        hidden: target block outputs at `config.target_layers`, each [n, T, d_target] (what the
        target's forward returns with `hidden_layers=drafter.target_layers`). The caller advances
        `ctx.lengths` by the number of tokens it keeps, exactly like the target's KV cache.
        """
        feats = self.features(hidden)
        n, t, _ = feats.shape
        positions = ctx.lengths[:, None] + torch.arange(t, device=feats.device)
        cos, sin = self._rope(positions)
        idx = positions[:, None, :, None].expand(n, self.config.kv_heads, t, self.config.head_dim)
        for i, block in enumerate(self._blocks):
            k, v = block.attn.kv(feats, cos, sin)
            ctx.k[i].scatter_(2, idx, k.to(ctx.k.dtype))
            ctx.v[i].scatter_(2, idx, v.to(ctx.v.dtype))

    # ------------------------------------------------------------------------------ backbone
    def _block_inputs(self, anchor: torch.Tensor) -> torch.Tensor:
        """[n, g, w]: the anchor's embedding followed by g-1 mask embeddings."""
        g = self.config.block
        a = self._embed(anchor[:, None])
        return torch.cat([a, self.mask_embed.to(a.dtype).expand(a.shape[0], g - 1, -1)], dim=1)

    def _run_blocks(self, x, positions, ctx_kv, mask) -> torch.Tensor:
        cos, sin = self._rope(positions)
        for i, block in enumerate(self.blocks):
            ck, cv = ctx_kv(i)
            x = block(x, cos, sin, ck, cv, mask)
        return self.norm(x)

    def backbone(self, anchor: torch.Tensor, ctx: KVCache) -> BackboneOutput:
        """One parallel pass over anchor [n] + g-1 masks at positions ctx.lengths + 0..g-1.

        Attends to the cached context positions < ctx.lengths. Returns base logits [n, g, V] and
        hidden [n, g, w].
        """
        g = self.config.block
        n = anchor.shape[0]
        x = self._block_inputs(anchor)
        positions = ctx.lengths[:, None] + torch.arange(g, device=x.device)
        key_pos = torch.arange(ctx.max_len, device=x.device)
        ctx_mask = (key_pos[None, :] < ctx.lengths[:, None])[:, None, None, :].expand(n, 1, g, ctx.max_len)
        mask = torch.cat([ctx_mask, torch.ones(n, 1, g, g, dtype=torch.bool, device=x.device)], dim=-1)
        h = self._run_blocks(x, positions, lambda i: (ctx.k[i], ctx.v[i]), mask)
        return BackboneOutput(self._lm_head(h), h)

    def train_forward(self, tokens: torch.Tensor, hidden: Sequence[torch.Tensor],
                      anchors: torch.Tensor) -> BackboneOutput:
        """Backbone for A blocks per sequence at once (training).

        tokens [n, T]; hidden: target block outputs over the same tokens (each [n, T, d]); anchors
        [n, A] anchor positions (block j covers positions anchors[:, j] + 0..g-1 and sees context
        positions < anchors[:, j]). Returns base logits [n, A, g, V] and hidden [n, A, g, w].
        """
        g = self.config.block
        n, t = tokens.shape
        a = anchors.shape[1]
        feats = self.features(hidden)
        ctx_pos = torch.arange(t, device=tokens.device).expand(n, t)
        ccos, csin = self._rope(ctx_pos)
        ctx_kv = [blk.attn.kv(feats, ccos, csin) for blk in self._blocks]
        anchor_tok = tokens.gather(1, anchors)  # [n, A]
        x = self._block_inputs(anchor_tok.reshape(-1)).reshape(n, a * g, -1)
        offs = torch.arange(g, device=tokens.device)
        positions = (anchors[:, :, None] + offs).reshape(n, a * g)
        q_anchor = anchors[:, :, None].expand(n, a, g).reshape(n, a * g)
        ctx_mask = torch.arange(t, device=tokens.device)[None, None, :] < q_anchor[:, :, None]  # [n, Q, T]
        blk_id = torch.arange(a, device=tokens.device).repeat_interleave(g)
        blk_mask = (blk_id[:, None] == blk_id[None, :]).expand(n, a * g, a * g)
        mask = torch.cat([ctx_mask, blk_mask], dim=-1)[:, None]
        h = self._run_blocks(x, positions, lambda i: ctx_kv[i], mask)
        return BackboneOutput(self._lm_head(h).reshape(n, a, g, -1), h.reshape(n, a, g, -1))

    # --------------------------------------------------------------------------------- heads
    def _conf_logit(self, h_k: torch.Tensor, e_prev: torch.Tensor) -> torch.Tensor:
        return self.conf_head(torch.cat([h_k, e_prev.to(h_k.dtype)], dim=-1)).squeeze(-1).float()

    def _head_step(self, h_k: torch.Tensor, prev: torch.Tensor, state: torch.Tensor | None):
        """Bias [.., V], confidence logit [..] and the new RNN state for position k from x_{k-1}."""
        e = self.w1(prev)
        conf = self._conf_logit(h_k, e)
        if self.config.head == "none":
            return None, conf, state
        assert self.w2 is not None
        if self.config.head == "markov":
            return self.w2(e).float(), conf, state
        r = self.config.rank
        s = state if state is not None else e.new_zeros(e.shape)
        assert self.rnn is not None
        gate, cand, out = self.rnn(torch.cat([s, e, h_k.to(e.dtype)], dim=-1)).split(r, dim=-1)
        sg = torch.sigmoid(gate)
        s = sg * s + (1 - sg) * torch.tanh(cand)
        return self.w2(torch.tanh(out)).float(), conf, s

    def _calibrate(self, conf_logit: torch.Tensor, k: int | None, calibrated: bool) -> torch.Tensor:
        if not calibrated:
            return torch.sigmoid(conf_logit)
        t = self.sts_temps if k is None else self.sts_temps[k]
        return torch.sigmoid(conf_logit / t.to(conf_logit))

    def score(self, bb: BackboneOutput, prev: torch.Tensor, calibrated: bool = False,
              conf_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced head: prev [..., g] = x_0 (anchor), x_1..x_{g-1}.

        bb.base_logits [..., g, V], bb.hidden [..., g, w] (any leading dims). Returns the final
        logits [..., g, V] (float32) and confidences [..., g] (or their logits with conf_logits=True).
        Position k's outputs depend on prev[..., :k] only.
        """
        g = self.config.block
        base, h = bb.base_logits, bb.hidden
        if self.config.head == "rnn":
            logits, confs, state = [], [], None
            for k in range(g):
                bias, c, state = self._head_step(h[..., k, :], prev[..., k], state)
                logits.append(base[..., k, :] + bias)
                confs.append(c)
            out, conf = torch.stack(logits, dim=-2), torch.stack(confs, dim=-1)
        else:
            bias, conf, _ = self._head_step(h, prev, None)
            out = base if bias is None else base + bias
        if conf_logits:
            return out, conf
        return out, self._calibrate(conf, None, calibrated)

    @torch.no_grad()
    def sample(self, bb: BackboneOutput, anchor: torch.Tensor,
               generators: Sequence[torch.Generator | None] | None = None, greedy: bool = False,
               temperature: float = 1.0, calibrated: bool = True) -> DraftOutput:
        """The sequential head loop: for k = 1..g, c_k and q_k from x_{k-1}, then draw x_k ~ q_k.

        anchor [n] int64 (x_0). generators: one torch.Generator per request (or None: the global
        RNG). greedy: x_k = argmax q_k (q_k is then still the softmax, for reporting). temperature
        scales the logits (> 0). calibrated applies the STS temperatures to c_k.
        """
        g = self.config.block
        n = anchor.shape[0]
        dev = bb.base_logits.device
        if not greedy:
            if generators is None:
                u = torch.rand(n, g, dtype=torch.float64, device=dev)
            else:
                if len(generators) != n:
                    raise ValueError(f"need {n} generators, got {len(generators)}")
                u = torch.stack([torch.rand(g, dtype=torch.float64, generator=gen, device=dev)
                                 for gen in generators])
        tokens = torch.empty(n, g, dtype=torch.long, device=dev)
        probs = torch.empty(n, g, self.vocab, dtype=torch.float32, device=dev)
        conf = torch.empty(n, g, dtype=torch.float32, device=dev)
        head = self.config.head
        prev, state = anchor, None
        for k in range(g):
            # only what x_k needs runs in the loop: the Markov bias from x_{k-1} (the RNN head also
            # carries its state, and its confidence with it); the Markov / backbone-only confidences
            # read x_{k-1} too, so they are computed for all k at once after the loop
            if head == "rnn":
                bias, c, state = self._head_step(bb.hidden[:, k], prev, state)
                conf[:, k] = self._calibrate(c, k, calibrated)
            else:
                bias = self.w2(self.w1(prev)).float() if self.w2 is not None else None
            logits = bb.base_logits[:, k] if bias is None else bb.base_logits[:, k] + bias
            q = torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
            probs[:, k] = q
            if greedy:
                x = logits.argmax(-1)
            else:
                x = sample_rows(q, u[:, k])
            tokens[:, k] = x
            prev = x
        if head != "rnn":  # c_k from h_k and x_{k-1}: prev = (x_0, x_1, .., x_{g-1}), never x_k
            prev_all = torch.cat([anchor[:, None], tokens[:, :-1]], dim=1)
            conf = self._calibrate(self._conf_logit(bb.hidden, self.w1(prev_all)), None, calibrated)
        return DraftOutput(tokens, probs, conf)

    def draft(self, anchor: torch.Tensor, ctx: KVCache, generators: Sequence[torch.Generator | None] | None = None,
              greedy: bool = False, temperature: float = 1.0, calibrated: bool = True) -> DraftOutput:
        """backbone + sample (see both)."""
        with torch.no_grad():
            bb = self.backbone(anchor, ctx)
        return self.sample(bb, anchor, generators, greedy, temperature, calibrated)

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_drafter(config: DrafterConfig, target: Decoder, seed: int = 0) -> DSparkDrafter:
    """A drafter for `target` with seeded init, on the target's device and dtype, in eval mode."""
    w = target.embed.weight
    d = DSparkDrafter(config, target)
    d.reset_parameters(seed)
    return d.to(device=w.device, dtype=w.dtype).eval()
