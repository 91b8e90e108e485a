"""The trace as a stream, and the book of every request's state while a run replays it.

Covers: reading a day of traffic without holding it as Python objects. `Book` reads the trace in
chunks of CHUNK requests (a JSON Lines file through simulator.trace's validating reader, or a
DataFrame slice by slice) into preallocated numpy arrays, as the simulation's clock reaches them:
the arrival process and the engines ask for requests up to an index (`need`) or up to a time
(`need_until`). Ids stay as compact polars string chunks; domains as small integer codes.

Per request it also holds what the engines record (status, emitted tokens, admission, first token
and finish times, preemptions, the replica that served it, prefix-cache hits, round totals), about
100 bytes a request: the only state that grows with the trace (a day of chat, 467k requests, is
about 50 MB), besides the request percentiles computed at the end from the requests table.

Arrivals run on a clock that starts at the trace's first arrival less its fractional second
(`offset`), divided by `rate_scale` (simulator.run.relative_arrivals's rules, chunk by chunk).
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

CHUNK = 1 << 16  # requests read at a time
MAX_ARRIVAL_S = 2.0**33


def count_lines(path: Path) -> int:
    """Newlines in a (possibly gzipped) file, plus one: an upper bound on its requests (no parsing)."""
    opener = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "rb") as fh:  # type: ignore[operator]
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n + 1


def session_key(session: str | None) -> int:
    """A session string's stable 32-bit key (crc32: the same in every process; -1 when absent)."""
    return -1 if session is None else zlib.crc32(session.encode("utf-8"))


class Book:
    """A trace read as a stream, and every request's run state (see the module docstring).

    Arrays are [capacity] (an upper bound on the trace's requests); entries [0, n) are read.
    """

    def __init__(self, trace: pl.DataFrame | str | Path, rate_scale: float = 1.0,
                 max_requests: int | None = None) -> None:
        from simulator.trace import resolve_trace

        if not (isinstance(rate_scale, (int, float)) and math.isfinite(rate_scale) and rate_scale > 0):
            raise ValueError(f"rate_scale must be a finite number > 0, got {rate_scale!r}")
        self.rate_scale = float(rate_scale)
        if isinstance(trace, pl.DataFrame):
            self.name = "dataframe"
            cap = trace.height
            self._chunks: Iterator[dict[str, Any]] = self._frame_chunks(trace)
        else:
            path = resolve_trace(trace)
            self.name = Path(path).name
            from sparksched.io import check_input_file

            check_input_file(path, "trace")
            cap = count_lines(Path(path))
            self._chunks = self._file_chunks(Path(path))
        if max_requests is not None:
            cap = min(cap, max_requests)
        self.max_requests = max_requests
        cap = max(cap, 1)
        self.capacity = cap
        self.n = 0  # requests read
        self.exhausted = False
        self.offset: float | None = None
        # trace
        self.arrival = np.zeros(cap)
        self.prompt = np.zeros(cap, dtype=np.int64)
        self.output = np.zeros(cap, dtype=np.int64)
        self.domain = np.zeros(cap, dtype=np.int16)
        self.domain_names: list[str] = []
        self._domain_code: dict[str, int] = {}
        self.session = np.full(cap, -1, dtype=np.int64)
        self.has_session = False
        self.slo = np.full(cap, np.nan)
        self.has_slo = False
        self.ids: list[pl.Series] = []
        self.prompts: list[str | None] | None = None
        # prefix blocks (CSR): hashes of request i are hashes[starts[i]:starts[i + 1]]
        self.prefix_starts = np.zeros(cap + 1, dtype=np.int64)
        self._hashes: list[np.ndarray] = []
        self.hashes = np.zeros(0, dtype=np.int64)
        self.has_prefix = False
        # run state
        self.status = np.zeros(cap, dtype=np.int8)
        self.reason: dict[int, str] = {}
        self.emitted = np.zeros(cap, dtype=np.int64)
        self.first_s = np.full(cap, np.nan)
        self.finish_s = np.full(cap, np.nan)
        self.admit_s = np.full(cap, np.nan)
        self.last_emit = np.full(cap, np.nan)
        self.preemptions = np.zeros(cap, dtype=np.int64)
        self.replica = np.zeros(cap, dtype=np.int32)
        self.cached_tokens = np.zeros(cap, dtype=np.int64)
        self.totals = np.zeros((4, cap), dtype=np.int64)  # rounds, drafted, verified, accepted

    # ---------------------------------------------------------------- reading
    def _file_chunks(self, path: Path) -> Iterator[dict[str, Any]]:
        from simulator.trace import _iter_rows

        rows: list[tuple] = []
        for row in _iter_rows(path):
            rows.append(row)
            if len(rows) == CHUNK:
                yield self._rows_chunk(rows)
                rows = []
        if rows:
            yield self._rows_chunk(rows)

    @staticmethod
    def _rows_chunk(rows: list[tuple]) -> dict[str, Any]:
        cols = list(zip(*rows))
        out: dict[str, Any] = {"id": pl.Series("id", cols[0], dtype=pl.Utf8), "arrival_s": np.asarray(cols[1], dtype=np.float64),
                               "prompt_tokens": np.asarray(cols[2], dtype=np.int64),
                               "output_tokens": np.asarray(cols[3], dtype=np.int64), "domain": list(cols[4])}
        if any(p is not None for p in cols[5]):
            out["prompt"] = list(cols[5])
        if any(s is not None for s in cols[6]):
            out["session"] = list(cols[6])
        if any(s is not None for s in cols[7]):
            out["slo_tps"] = np.asarray([np.nan if s is None else s for s in cols[7]], dtype=np.float64)
        if any(h is not None for h in cols[8]):
            out["prefix_blocks"] = list(cols[8])
        return out

    @staticmethod
    def _frame_chunks(df: pl.DataFrame) -> Iterator[dict[str, Any]]:
        for start in range(0, df.height, CHUNK):
            part = df.slice(start, CHUNK)
            out: dict[str, Any] = {"id": part["id"].cast(pl.Utf8),
                                   "arrival_s": part["arrival_s"].to_numpy().astype(np.float64),
                                   "prompt_tokens": part["prompt_tokens"].to_numpy().astype(np.int64),
                                   "output_tokens": part["output_tokens"].to_numpy().astype(np.int64),
                                   "domain": part["domain"].cast(pl.Utf8).to_list()}
            if "prompt" in part.columns:
                out["prompt"] = part["prompt"].to_list()
            if "session" in part.columns:
                out["session"] = part["session"].cast(pl.Utf8).to_list()
            if "slo_tps" in part.columns:
                out["slo_tps"] = part["slo_tps"].cast(pl.Float64).fill_null(np.nan).to_numpy()
            for col in ("prefix_blocks", "hash_ids"):
                if col in part.columns:
                    out["prefix_blocks"] = part[col].to_list()
                    break
            yield out

    def _read_chunk(self) -> bool:
        """Read the next chunk; False at the end of the trace."""
        if self.exhausted:
            return False
        limit = self.capacity - self.n
        c = next(self._chunks, None) if limit > 0 else None
        if c is None:
            self.exhausted = True
            if self.n == 0:
                raise ValueError(f"trace {self.name}: no requests to simulate")
            return False
        k = min(len(c["arrival_s"]), limit)
        a, i = self.n, self.n + k
        raw = c["arrival_s"][:k]
        if self.offset is None:
            first = float(raw[0]) if math.isfinite(float(raw[0])) else 0.0
            self.offset = float(math.floor(first)) if abs(first) < MAX_ARRIVAL_S else 0.0
        bad = ~np.isfinite(raw) | (np.abs(raw) >= MAX_ARRIVAL_S)
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(f"{self.name}: line {a + j + 1}: field 'arrival_s': {raw[j]!r} s is beyond "
                             f"{MAX_ARRIVAL_S:.4g} s, where float64 cannot hold microseconds (epoch micro- or "
                             "milliseconds read as seconds?)")
        with np.errstate(over="ignore"):
            scaled = (raw - self.offset) / self.rate_scale
        if not np.isfinite(scaled[-1]) or scaled[-1] >= MAX_ARRIVAL_S:
            raise ValueError(f"rate_scale {self.rate_scale:g} stretches {self.name} to {float(scaled[-1]):.4g} s of "
                             f"arrivals, beyond {MAX_ARRIVAL_S:.4g} s (the clock's microsecond precision); use a "
                             "larger rate_scale")
        prev = self.arrival[a - 1] if a else -math.inf
        if np.any(np.diff(scaled) < 0) or scaled[0] < prev:
            raise ValueError(f"trace {self.name}: arrival_s must not decrease")
        self.arrival[a:i] = scaled
        p, o = c["prompt_tokens"][:k], c["output_tokens"][:k]
        if np.any(p < 1) or np.any(o < 1):
            raise ValueError(f"trace {self.name}: prompt_tokens and output_tokens must be >= 1")
        self.prompt[a:i], self.output[a:i] = p, o
        codes = np.empty(k, dtype=np.int16)
        for j, d in enumerate(c["domain"][:k]):
            code = self._domain_code.get(d)
            if code is None:
                code = self._domain_code[d] = len(self.domain_names)
                self.domain_names.append(d)
            codes[j] = code
        self.domain[a:i] = codes
        self.ids.append(c["id"][:k])
        if "prompt" in c:
            if self.prompts is None:
                self.prompts = [None] * a
            self.prompts.extend(c["prompt"][:k])
        elif self.prompts is not None:
            self.prompts.extend([None] * k)
        if "session" in c:
            self.has_session = True
            self.session[a:i] = [session_key(s) for s in c["session"][:k]]
        if "slo_tps" in c:
            self.has_slo = bool(self.has_slo or np.isfinite(c["slo_tps"][:k]).any())
            self.slo[a:i] = c["slo_tps"][:k]
        lengths = np.zeros(k, dtype=np.int64)
        if "prefix_blocks" in c:
            blocks = c["prefix_blocks"][:k]
            lengths[:] = [0 if b is None else len(b) for b in blocks]
            flat = [h for b in blocks if b for h in b]
            if flat:
                self.has_prefix = True
                self._hashes.append(np.asarray(flat, dtype=np.int64))
        self.prefix_starts[a + 1:i + 1] = self.prefix_starts[a] + np.cumsum(lengths)
        self.n = i
        if self.n >= self.capacity:
            self.exhausted = True
        return True

    def need(self, index: int) -> bool:
        """Read until request `index` is read; False when the trace ends before it."""
        while index >= self.n:
            if not self._read_chunk():
                return False
        return True

    def need_until(self, t: float) -> None:
        """Read until the last request read arrives after `t` (or the trace ends)."""
        while not self.exhausted and (self.n == 0 or self.arrival[self.n - 1] <= t):
            if not self._read_chunk():
                return

    def next_arrival(self, index: int) -> float:
        """Arrival time of request `index` on the clock (inf past the trace's end)."""
        return float(self.arrival[index]) if self.need(index) else math.inf

    def read_all(self) -> None:
        while self._read_chunk():
            pass

    # ---------------------------------------------------------------- lookups
    def ids_of(self, idx: list[int]) -> list[str]:
        return [self.ids[r // CHUNK][r % CHUNK] for r in idx]

    def domains_of(self, idx: list[int]) -> list[str]:
        names = self.domain_names
        return [names[int(d)] for d in self.domain[idx]]

    def prompts_of(self, idx: list[int]) -> list[str | None] | None:
        return None if self.prompts is None else [self.prompts[r] for r in idx]

    def prefix_of(self, r: int) -> np.ndarray:
        """The prefix-block hashes of request r ([m] int64, maybe empty)."""
        if not self.has_prefix:
            return np.zeros(0, dtype=np.int64)
        if sum(h.size for h in self._hashes) != self.hashes.size:
            self.hashes = np.concatenate(self._hashes) if self._hashes else np.zeros(0, dtype=np.int64)
            self._hashes = [self.hashes]
        return self.hashes[self.prefix_starts[r]:self.prefix_starts[r + 1]]

    def add_round_totals(self, req: np.ndarray, drafted: np.ndarray, verified: np.ndarray,
                         accepted: np.ndarray) -> None:
        """Add a batch of rounds to each request's totals (rounds, drafted, verified, accepted)."""
        n = self.n
        self.totals[0, :n] += np.bincount(req, minlength=n)[:n]
        for k, w in ((1, drafted), (2, verified), (3, accepted)):
            self.totals[k, :n] += np.bincount(req, weights=w, minlength=n)[:n].astype(np.int64)

    def id_column(self) -> pl.Series:
        return pl.concat(self.ids).rename("id") if len(self.ids) > 1 else self.ids[0].rename("id")

    def domain_column(self) -> pl.Series:
        return pl.Series("domain", self.domain_names, dtype=pl.Utf8).gather(self.domain[:self.n].astype(np.int64))
