"""Scenario files (TOML) and the one place the defaults of simulate, pareto and whatif come from.

Covers: a run that can be repeated exactly. Every command-line flag of `simulate`, `pareto` and
`whatif` is a key of a scenario file (spelled as the flag, `max-running` or `max_running`); flags
given on the command line override the file; every run writes its resolved scenario
(`scenario.toml`) beside its results, each key with the value the run used and where it came from.

    # scenario.toml
    trace = "chat"            # top-level keys apply to every command that has the flag
    block = 5
    goodput = "ttft:500 tpot:20"
    [simulate]                # keys for one command only
    policy = "async-dspark"
    [pareto]
    policies = "dspark,mtp1"
    load = "8,32,128"

Defaults: `SimConfig` (simulator.config) holds every simulation knob's default; `SWEEP` holds the
few that only sweeps have. The CLI options read both, so simulate, pareto and whatif cannot
disagree (the per-user SLA is `SimConfig.sla_tps` everywhere).

This module is click-free: `read_scenario` parses and checks the file's shape, `to_toml` writes one.
The command layer (sparksched.commands._common) maps keys to options and checks their values.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.config import SimConfig, knob
from sparksched.policies import policy_forms

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

COMMANDS = ("simulate", "pareto", "whatif")

SIM = SimConfig()  # every simulation knob's default

# --speed: the per-user speed a sweep's frontier and SLA read, as the sweep row's column
SPEED_COLUMNS = {"p50": "user_tps_p50", "p90": "user_tps_p90"}


@dataclass(frozen=True)
class SweepDefaults:
    """Defaults only sweeps have, sized to finish in about a minute on 2 CPU cores on the chat trace."""

    policies: str = knob("dspark,mtp1,static-3", "Comma-separated policies: " + policy_forms(", ") + ".")
    load: str = knob("4,8,16,32,48,64,96,128,192", "Concurrency caps (max running requests) to sweep, "
                                                   "comma-separated.")
    # 16x the chat trace keeps every cap saturated
    rate_scales: str = knob("16", "Arrival-rate multipliers to sweep, comma-separated (crossed with --load). The "
                                  "default overloads the chat trace so each cap is the concurrency; use values "
                                  "around 1 to sweep offered load instead.")
    max_requests: int = knob(1000, "Simulate the first N requests of the trace in every run (0: all).")
    speed: str = knob("p50", "Per-user speed the frontier and SLA use: p50 = the median user, p90 = the speed "
                             "90 % of users reach or beat (1 / P90 of TPOT).", choices=tuple(SPEED_COLUMNS))
    trace: str = knob("chat.jsonl", "Trace file (JSON Lines) or bundled name (chat, code, math, mixed).")
    slo_attainment: float = knob(0.9, "With --goodput: the share of requests that must meet every SLO for a load "
                                      "to count as meeting them (throughput at SLO).")


SWEEP = SweepDefaults()


def normalize_key(key: str) -> str:
    """A file key as a parameter-style name: "max-running" -> "max_running"."""
    return key.strip().replace("-", "_")


def read_scenario(path: str | Path, command: str, known: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """The keys of scenario `path` that apply to `command`, normalized ("max-running" -> "max_running").

    Args:
        path: a TOML file.
        command: the command reading it (one of `known`).
        known: for every command, the normalized keys it accepts.
    Returns:
        {normalized key: value} from the top level (keys `command` has) and from the [command] table.
    Raises:
        ValueError naming the file and the key: unreadable file, bad TOML, a key no command knows,
        a table that is not a command, a key the command of its table does not have.
    """
    from sparksched.io import read_text

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such scenario file")
    text = read_text(path, "scenario file", 16 << 20)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {' '.join(str(exc).split())}") from None
    except (ValueError, RecursionError) as exc:  # integers of more than 4300 digits, nesting
        what = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())[:120]
        raise ValueError(f"{path}: not valid TOML: {what}") from None
    everywhere = set().union(*(set(v) for v in known.values()))
    mine = set(known[command])
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and key in known:  # a [command] table
            for sub, v in value.items():
                name = normalize_key(sub)
                if name not in set(known[key]):
                    raise ValueError(f"{path}: [{key}] key '{sub}': `{key}` has no such option")
                if key == command:
                    out[name] = v  # tables follow the top level in TOML, so a table wins
            continue
        name = normalize_key(key)
        if name not in everywhere:
            what = "table" if isinstance(value, dict) else "key"
            raise ValueError(f"{path}: {what} '{key}': no command has such an option "
                             f"(tables: {', '.join(f'[{c}]' for c in known)})")
        if name in mine:
            out.setdefault(name, value)
    return out


def toml_value(v: Any) -> str:
    """One TOML value: strings quoted, booleans lowercase, floats round-tripping, lists bracketed."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    # a TOML basic string: JSON's escapes are TOML's, except that TOML also forbids a raw DEL
    return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007f")


def to_toml(rows: Iterable[tuple[str, Any, str]], header: str = "") -> str:
    """A flat TOML document from (key, value, comment) rows; None values are written commented out."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []
    for key, value, comment in rows:
        note = f"  # {comment}" if comment else ""
        if value is None:
            lines.append(f"# {key} = <unset>{note}")
        else:
            lines.append(f"{key} = {toml_value(value)}{note}")
    return "\n".join(lines) + "\n"
