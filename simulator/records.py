"""The engine's step and round rows, handed on in batches: to the summaries and, when logged, to Parquet.

Covers: memory that does not grow with the trace. An engine appends each step (one tuple of
scalars) or each planned epoch (one array per column) and its rounds (flat arrays); every
STEP_BATCH steps or ROUND_BATCH rounds `Recorder.flush` turns the buffer into columns (numpy, a few
vectorised calls per batch, never per step) and hands them to:

- the streaming summaries (simulator.stats): step sums, the (verified, accepted) histogram, the
  inter-token gaps (computed here: each round's end minus its request's previous emission);
- the per-request totals the requests table reports (rounds, drafted, verified, accepted);
- a `TableSink` per logged table (`SimConfig.log`): in memory (concatenated at the end: the same
  frame as building it at once) or as hidden Parquet part files inside the run's staging folder,
  joined into one file at the end (`sparksched.io.ResultSet` publishes the folder whole, so a
  killed run leaves nothing half-written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from simulator.stats import GapStats, RoundStats, StepStats

STEP_COLUMNS = {  # per-step table: column -> dtype
    "t_start": np.float64, "duration_s": np.float64, "draft_s": np.float64, "decode_requests": np.int32,
    "prefill_requests": np.int32, "prefill_tokens": np.int32, "batch_tokens": np.int32,
    "verified": np.int32, "accepted": np.int32, "emitted": np.int32, "mean_context": np.float32,
    "running": np.int32, "waiting": np.int32, "kv_free_blocks": np.int32, "preempted": np.int32}


class StepRow(NamedTuple):
    """One step's row of the steps table (scalars), or a planned epoch's rows (one [steps] array per
    column): the fields are STEP_COLUMNS, in its order (built by name, so none lands in another's column)."""

    t_start: Any
    duration_s: Any
    draft_s: Any
    decode_requests: Any
    prefill_requests: Any
    prefill_tokens: Any
    batch_tokens: Any
    verified: Any
    accepted: Any
    emitted: Any
    mean_context: Any
    running: Any
    waiting: Any
    kv_free_blocks: Any
    preempted: Any


assert StepRow._fields == tuple(STEP_COLUMNS), "StepRow and STEP_COLUMNS name the steps table's columns alike"
ROUND_SCHEMA = {"step": pl.Int32, "request": pl.Int32, "drafted": pl.Int16, "verified": pl.Int16,
                "accepted": pl.Int16, "emitted": pl.Int16}
STEPS_SCHEMA = {k: pl.Series(k, np.zeros(0, dtype=v)).dtype for k, v in STEP_COLUMNS.items()}
STEP_BATCH = 1 << 16  # steps buffered before a flush
ROUND_BATCH = 1 << 18  # rounds buffered before a flush
LOGGABLE = ("steps", "rounds")  # per-step and per-round tables `SimConfig.log` may choose


class TableSink:
    """One table's batches, in memory or as Parquet part files in `folder` (joined by `finish`).

    Batches carry a key (replica, sequence): the table lists them in key order.
    """

    def __init__(self, name: str, folder: Path | None, schema: dict[str, Any]) -> None:
        self.name, self.folder, self.schema = name, folder, schema
        self._parts: list[tuple[tuple[int, int], Any]] = []

    def add(self, key: tuple[int, int], df: pl.DataFrame) -> None:
        if self.folder is None:
            self._parts.append((key, df))
            return
        from sparksched.io import OutputError, write_parquet

        path = self.folder / f".{self.name}.part-{key[0]:04d}-{key[1]:06d}.parquet"
        try:
            write_parquet(path, df)
        except OutputError as exc:  # named as the table the part belongs to
            raise OutputError(self.folder / f"{self.name}.parquet", exc.cause) from None
        self._parts.append((key, path))

    def finish(self) -> pl.DataFrame | Path:
        """The whole table: a DataFrame (in memory) or the path of `<name>.parquet` in the folder."""
        parts = [p for _, p in sorted(self._parts, key=lambda x: x[0])]
        if self.folder is None:
            if not parts:
                return pl.DataFrame(schema=self.schema)
            return pl.concat(parts, how="vertical").rechunk() if len(parts) > 1 else parts[0]
        from sparksched.io import atomic_write, replace_file, write_parquet

        target = self.folder / f"{self.name}.parquet"
        if not parts:
            write_parquet(target, pl.DataFrame(schema=self.schema))
        elif len(parts) == 1:
            replace_file(parts[0], target)  # one batch: the same bytes as writing the frame at once
        else:
            atomic_write(target, lambda tmp: pl.scan_parquet(parts).sink_parquet(tmp))
            for p in parts:
                p.unlink()
        self._parts = []
        return target


class RoundBatch(NamedTuple):
    """Rounds one step or epoch appended (`Recorder.add_rounds`): [r] arrays of the step index, the
    request, verified, accepted and emitted tokens; `drafted` an int (the same for every row) or [r]."""

    step: np.ndarray
    request: np.ndarray
    drafted: int | np.ndarray
    verified: np.ndarray
    accepted: np.ndarray
    emitted: np.ndarray


class RunTables:
    """A run's logged tables (`SimConfig.log`: one TableSink per table), shared by its replicas' Recorders.

    `tables()` flushes every recorder (in replica order) and finishes the sinks, once: the steps and
    rounds tables as DataFrames or Parquet paths (an empty frame for a table not logged).
    """

    def __init__(self, folder: Path | None, log: tuple[str, ...] | list[str]) -> None:
        self.sinks = {name: TableSink(name, folder, STEPS_SCHEMA if name == "steps" else ROUND_SCHEMA)
                      for name in log}
        self.recorders: list[Recorder] = []
        self._tables: dict[str, pl.DataFrame | Path] | None = None

    def tables(self) -> dict[str, pl.DataFrame | Path]:
        """{"steps": ..., "rounds": ...} once the run has ended (later calls return the same)."""
        if self._tables is None:
            for rec in self.recorders:
                rec.flush()
            schemas: dict[str, dict[str, Any]] = {"steps": STEPS_SCHEMA, "rounds": ROUND_SCHEMA}
            self._tables = {name: self.sinks[name].finish() if name in self.sinks else pl.DataFrame(schema=schema)
                            for name, schema in schemas.items()}
        return self._tables


class Recorder:
    """One replica's step and round rows (see the module docstring).

    `add_step` appends one step as a StepRow of scalars, `add_epoch` `steps` steps as a StepRow of
    [steps] arrays; `add_rounds` appends rounds as flat [r] arrays with their step index and end
    time. `n_steps` counts the replica's steps (the steps table's row index within the replica).
    """

    def __init__(self, book: Any, replica: int, rounds_stats: RoundStats, gaps: GapStats, steps_stats: StepStats,
                 fleet_steps: StepStats | None, tables: RunTables, with_replica: bool) -> None:
        self.book, self.replica = book, replica
        self.rounds_stats, self.gaps, self.step_stats, self.fleet_steps = rounds_stats, gaps, steps_stats, fleet_steps
        self.tables, self.sinks, self.with_replica = tables, tables.sinks, with_replica
        tables.recorders.append(self)
        self.n_steps = 0
        self._first = 0  # step index of the buffer's first step
        self._scalars: list[StepRow] = []
        self._scalar_at: list[int] = []
        self._arrays: list[StepRow] = []
        self._array_at: list[int] = []
        self._rounds: list[RoundBatch] = []
        self._n_rounds = 0
        self._seq = 0

    # ---------------------------------------------------------------- appending
    def add_step(self, values: StepRow) -> int:
        """Append one step (a StepRow of scalars); return its index."""
        self._scalars.append(values)
        self._scalar_at.append(self.n_steps)
        self.n_steps += 1
        if len(self._scalars) >= STEP_BATCH or self._n_rounds >= ROUND_BATCH:
            self.flush()
        return self.n_steps - 1

    def add_epoch(self, steps: int, values: StepRow) -> int:
        """Append `steps` steps given as a StepRow of [steps] arrays; return the first index."""
        self._arrays.append(values)
        self._array_at.append(self.n_steps)
        self.n_steps += steps
        return self.n_steps - steps

    def add_rounds(self, step: np.ndarray, req: np.ndarray, verified: np.ndarray, accepted: np.ndarray,
                   emitted: np.ndarray, drafted: int | np.ndarray) -> None:
        """Rounds as flat [r] arrays (step index and request of each row)."""
        self._rounds.append(RoundBatch(step=step, request=req, drafted=drafted, verified=verified, accepted=accepted,
                                       emitted=emitted))
        self._n_rounds += int(req.size)

    def maybe_flush(self) -> None:
        """Flush when the buffer is full (call after a whole step or epoch is recorded)."""
        if self.n_steps - self._first >= STEP_BATCH or self._n_rounds >= ROUND_BATCH:
            self.flush()

    # ---------------------------------------------------------------- flushing
    def _step_columns(self) -> dict[str, np.ndarray]:
        n = self.n_steps - self._first
        at = np.asarray(self._scalar_at, dtype=np.int64) - self._first
        firsts = np.asarray(self._array_at, dtype=np.int64) - self._first
        sizes = np.asarray([v[0].size for v in self._arrays], dtype=np.int64)
        idx = (np.repeat(firsts, sizes) + np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
        scal = list(zip(*self._scalars)) if self._scalars else None
        out: dict[str, np.ndarray] = {}
        for c, (k, dtype) in enumerate(STEP_COLUMNS.items()):
            col = np.zeros(n, dtype=dtype)
            if scal is not None:
                col[at] = np.asarray(scal[c], dtype=np.float64)
            if self._arrays:
                col[idx] = np.concatenate([v[c] for v in self._arrays])
            out[k] = col
        return out

    def _round_columns(self) -> dict[str, np.ndarray]:
        if not self._rounds:
            return {k: np.zeros(0, dtype=np.int64) for k in ROUND_SCHEMA}
        batches = self._rounds
        sizes = np.asarray([b.step.size for b in batches], dtype=np.int64)
        uniform = [isinstance(b.drafted, (int, np.integer)) for b in batches]
        if all(uniform):
            drafted = np.repeat(np.asarray([b.drafted for b in batches], dtype=np.int64), sizes)
        else:
            drafted = np.concatenate([np.full(sz, b.drafted) if u else b.drafted
                                      for b, u, sz in zip(batches, uniform, sizes)])
        return {"step": np.concatenate([b.step for b in batches]),
                "request": np.concatenate([b.request for b in batches]), "drafted": drafted,
                "verified": np.concatenate([b.verified for b in batches]),
                "accepted": np.concatenate([b.accepted for b in batches]),
                "emitted": np.concatenate([b.emitted for b in batches])}

    def flush(self, final: bool = False) -> None:
        """Hand the buffered steps and rounds on (summaries, per-request totals, table sinks)."""
        book = self.book
        if self.n_steps > self._first:
            steps = self._step_columns()
            self.step_stats.add(steps)
            if self.fleet_steps is not None:
                self.fleet_steps.add(steps)
            r = self._round_columns()
            req = r["request"].astype(np.int64)
            if req.size:
                ver, acc, emit = r["verified"].astype(np.int64), r["accepted"].astype(np.int64), r["emitted"]
                book.add_round_totals(req, r["drafted"].astype(np.int64), ver, acc)
                self.rounds_stats.add(book.domain[req], ver, acc, int(r["drafted"].sum()))
                # each round's chunk arrives at its step's end; the gap runs from the request's previous
                # emission (its previous round, or its first token)
                ends = steps["t_start"] + steps["duration_s"]
                t = ends[r["step"] - self._first]
                order = np.argsort(req, kind="stable")  # rounds are in time order: keeps it per request
                rq, tt = req[order], t[order]
                prev = np.empty_like(tt)
                prev[1:] = tt[:-1]
                new = np.ones(rq.size, dtype=bool)
                new[1:] = rq[1:] != rq[:-1]
                last = book.last_emit[rq[new]]
                prev[new] = np.where(np.isnan(last), book.first_s[rq[new]], last)
                last_of = np.ones(rq.size, dtype=bool)
                last_of[:-1] = rq[1:] != rq[:-1]
                book.last_emit[rq[last_of]] = tt[last_of]
                self.gaps.add(rq, tt, tt - prev, emit[order])
            if "steps" in self.sinks:
                frame = pl.DataFrame(steps)
                if self.with_replica:
                    frame = frame.with_columns(pl.lit(self.replica, dtype=pl.Int32).alias("replica"))
                self.sinks["steps"].add((self.replica, self._seq), frame)
            if "rounds" in self.sinks:
                self.sinks["rounds"].add((self.replica, self._seq), pl.DataFrame(
                    {k: r[k].astype(_NP[k]) for k in ROUND_SCHEMA}))
            self._seq += 1
        self._first = self.n_steps
        self._scalars, self._scalar_at, self._arrays, self._array_at = [], [], [], []
        self._rounds, self._n_rounds = [], 0
        self.gaps.settle(book.status, final)


_NP = {"step": np.int32, "request": np.int32, "drafted": np.int16, "verified": np.int16, "accepted": np.int16,
       "emitted": np.int16}
