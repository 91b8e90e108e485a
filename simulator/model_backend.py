"""The real drafter + target loop as a simulator backend (`sparksched simulate --engine model`).

Covers: driving the SimPy engine with a real DSpark drafter and a real target decoder. The engine
owns the clock, batching and admission; this backend owns the models: `join` prefills prompts,
`draft` runs the drafter (backbone pass + sequential head loop) and reports the confidence head's
calibrated confidences, `verify` runs the target over the anchor plus the scheduled drafts and the
core's lossless rejection sampling, rolling rejected positions back in both KV caches.

Prompts: a trace line's "prompt" text when present (tokenized with the bundled tokenizer), else a
window of `prompt_tokens` tokens of the request's domain's held-out text (chat and unknown domains
-> prose), cut at `max_prompt` tokens (kept from the end), chosen by the request's index.

Clock: with SimConfig.clock = "measured" the engine advances by the wall time of the real drafter
and target passes (Draft.seconds, Verdict.seconds); with "profile" by a profile (hardware what-ifs).

Randomness: each request owns a torch.Generator seeded from (seed, trace row); it survives
preemption, so a resumed request continues its own sequence and stream.

Every round is kept in `self.rows` (sparksched.rounds format); `write_rounds(path)` saves them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator.backend import Draft, Requests, Verdict

DOMAIN_TEXT = {"code": "code", "math": "math", "prose": "prose", "chat": "prose"}


class ModelBackend:
    """Backend over a `SpeculativeDecoder` with one row per engine slot."""

    def __init__(self, target, drafter, tokenizer, heldout: dict[str, np.ndarray], max_running: int,
                 max_len: int = 2048, max_prompt: int = 512, seed: int = 0, greedy: bool = False,
                 temperature: float = 1.0, device: str | torch.device = "cpu", name: str = "model") -> None:
        from sparksched.speculative import SpeculativeDecoder

        self.block = drafter.config.block
        self.name = name
        self.tokenizer, self.heldout = tokenizer, heldout
        self.max_prompt, self.seed = max_prompt, seed
        self.dec = SpeculativeDecoder(target, drafter, max_running, max_len, greedy=greedy, temperature=temperature,
                                      seed=seed)
        self.max_len = max_len
        self.history: dict[int, tuple[list[int], list[int], Any]] = {}  # index -> (prompt, emitted, generator)
        self.slot_request = np.full(max_running, -1, dtype=np.int64)
        # engine slot -> decoder row; resident requests occupy rows 0..n_rows-1 (kept compact on leave,
        # so a step over all resident requests runs on cache views, never on gathered copies)
        self.row_of = np.full(max_running, -1, dtype=np.int64)
        self.slot_of_row = np.full(max_running, -1, dtype=np.int64)
        self.n_rows = 0
        self.slot_domain = np.array([""] * max_running, dtype=object)
        self.slot_id = np.array([""] * max_running, dtype=object)
        self.rows: list[dict] = []
        self._step = 0
        self._last: tuple[np.ndarray, np.ndarray, int] | None = None

    # ------------------------------------------------------------------------------ prompts
    def _prompt(self, index: int, domain: str, length: int, text: str | None) -> list[int]:
        if text:
            ids = self.tokenizer.encode(text).ids or [0]
            return ids[-self.max_prompt:]
        stream = self.heldout.get(DOMAIN_TEXT.get(domain, "prose"))
        if stream is None:
            stream = self.heldout[next(iter(self.heldout))]
        length = int(max(1, min(length, self.max_prompt, stream.size - 1)))
        rng = np.random.default_rng([self.seed, int(index)])
        start = int(rng.integers(0, stream.size - length))
        return stream[start:start + length].tolist()

    # ---------------------------------------------------------------------------- protocol
    def join(self, slots: np.ndarray, requests: Requests) -> None:
        prompts: list[list[int]] = []
        anchors: list[int | None] = []
        gens: list[Any] = []
        for j, s in enumerate(slots):
            idx = int(requests.index[j])
            if idx in self.history:  # resumed after preemption: replay prompt + emitted, keep the anchor
                prompt, emitted, gen = self.history[idx]
                prompts.append(prompt + emitted[:-1])
                anchors.append(emitted[-1])
                gens.append(gen)
            else:
                text = requests.prompts[j] if requests.prompts is not None else None
                prompt = self._prompt(idx, requests.domains[j], int(requests.prompt_tokens[j]), text)
                room = self.max_len - int(requests.output_tokens[j]) - 2 * self.block - 4
                if room < 1:
                    raise ValueError(f"request {requests.ids[j]}: output_tokens {int(requests.output_tokens[j])} does "
                                     f"not fit the model backend's max_len {self.max_len}")
                prompt = prompt[-room:]
                prompts.append(prompt)
                anchors.append(None)
                gens.append(None)
            self.slot_request[s] = idx
            self.slot_domain[s] = requests.domains[j]
            self.slot_id[s] = requests.ids[j]
        rows = self.n_rows + np.arange(len(slots))
        self.row_of[slots] = rows
        self.slot_of_row[rows] = slots
        self.n_rows += len(slots)
        first = self.dec.prefill(list(rows), prompts, [int(i) for i in requests.index], anchors, gens)
        for j, r in enumerate(rows):
            idx = int(requests.index[j])
            if idx not in self.history:
                self.history[idx] = (prompts[j], [first[j]], self.dec.gens[r])

    def _rows(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(decoder rows to run, index of each slot's result in the run's outputs)."""
        rows = self.row_of[slots]
        if np.any(rows < 0):
            raise ValueError(f"slots {slots[rows < 0].tolist()} have no joined request")
        k = rows.size
        if k and rows.max() == k - 1 and np.unique(rows).size == k:  # exactly rows 0..k-1: run on views
            return np.arange(k), rows
        return rows, np.arange(k)

    def draft(self, slots: np.ndarray, block: int) -> Draft:
        if block > self.block:
            raise ValueError(f"model backend drafts at most {self.block} tokens, asked for {block}")
        run, pick = self._rows(np.asarray(slots, dtype=np.int64))
        out, seconds = self.dec.draft(run)
        conf = out.conf[:, :block].double().cpu().numpy().clip(0.0, 1.0)[pick]
        self._last = (np.asarray(slots).copy(), conf, block)
        return Draft(conf, np.full(len(slots), block, dtype=np.int64), seconds)

    def verify(self, slots: np.ndarray, lengths: np.ndarray) -> Verdict:
        slots = np.asarray(slots, dtype=np.int64)
        run, pick = self._rows(slots)
        run_lengths = np.zeros(run.size, dtype=np.int64)
        run_lengths[pick] = np.asarray(lengths, dtype=np.int64)
        acc_run, emitted_run, seconds = self.dec.verify(run, run_lengths)
        acc = acc_run[pick]
        emitted = [emitted_run[i] for i in pick]
        conf = self._last[1] if self._last is not None else np.zeros((slots.size, 0))
        for j, s in enumerate(slots):
            self.history[int(self.slot_request[s])][1].extend(emitted[j])
            self.rows.append({"request": str(self.slot_id[s]), "step": self._step, "domain": str(self.slot_domain[s]),
                              "conf": conf[j].tolist(), "drafted": int(conf.shape[1]), "verified": int(lengths[j]),
                              "accepted": int(acc[j])})
        self._step += 1
        self._last = None  # a verify without a draft before it (plain step) records no confidences
        return Verdict(acc, seconds)

    def leave(self, slots: np.ndarray) -> None:
        for s in slots:
            r, last = int(self.row_of[s]), self.n_rows - 1
            if r < 0:
                continue
            if r != last:  # move the last resident row into the hole
                self.dec.copy_row(last, r)
                moved = int(self.slot_of_row[last])
                self.row_of[moved] = r
                self.slot_of_row[r] = moved
            self.row_of[s] = -1
            self.slot_of_row[last] = -1
            self.n_rows -= 1
            idx = int(self.slot_request[s])
            prompt, emitted, _ = self.history.get(idx, ([], [], None))
            total = len(prompt) + len(emitted)
            self.slot_request[s] = -1
            # keep the history (a preempted request resumes); drop it once it cannot fit any more
            if total + self.block + 2 >= self.max_len:
                self.history.pop(idx, None)

    def write_rounds(self, path: str | Path) -> int:
        """Write the recorded rounds (sparksched.rounds format); returns the row count."""
        from sparksched.rounds import write_rounds

        return write_rounds(path, self.rows)

    def text(self, index: int) -> str:
        """The generated text of trace row `index` (for inspection)."""
        prompt, emitted, _ = self.history[index]
        return self.tokenizer.decode(emitted)


def make_backend(config, checkpoints: str | Path | None = None, head: str = "markov", device: str | None = None,
                 max_len: int = 2048, max_prompt: int = 512, greedy: bool = False) -> ModelBackend:
    """The backend for `sparksched simulate --engine model` from a SimConfig (bundled checkpoints).

    Uses config.max_running, config.seed and config.block (must not exceed the drafter's block).
    """
    from sparksched.training.checkpoint import BUNDLED, load_bundle, load_heldout

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if str(dev).startswith("cpu"):
        torch.set_num_threads(1)  # tiny models: one thread is faster, and far steadier on a busy host
    directory = Path(checkpoints) if checkpoints else BUNDLED
    tok, target, drafter = load_bundle(directory, head=head, device=dev)
    if config.block > drafter.config.block:
        raise ValueError(f"--block {config.block} exceeds the bundled drafter's block {drafter.config.block}")
    heldout_path = directory / "heldout.npz"
    if not heldout_path.exists():
        raise ValueError(f"{heldout_path}: missing (regenerate with `sparksched train target --out {directory}`)")
    return ModelBackend(target, drafter, tok, load_heldout(heldout_path), config.max_running, max_len=max_len,
                        max_prompt=max_prompt, seed=config.seed, greedy=greedy, device=dev,
                        name=f"model {directory.name}/drafter-{head}")
