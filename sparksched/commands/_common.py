"""What every command shares: exit codes, scenario files, -q/--quiet, vLLM's --goodput syntax, examples.

Exit codes (the same for every command):
    0  success
    2  usage error: an unknown option, a bad option value, a bad scenario-file key or value
    1  runtime error: an input file that cannot be read or is invalid, an output that cannot be
       written, a simulation that cannot run
A closed pipe (`sparksched ... | head`) is not an error: nothing is printed.

Scenario files (`--config FILE`, TOML, simulator.scenario): read by an eager option that turns the
file's keys into click's `default_map`, so any flag given on the command line still wins; each
value is checked with the option's own type, and a bad one is a usage error naming the file and
the key. `resolved_scenario` renders the values a command ran with, for `scenario.toml`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from simulator.scenario import COMMANDS, SIM

# options that say where and how loudly to write, not what to run: left out of a resolved scenario
NOT_SCENARIO = frozenset({"config", "out", "out_dir", "quiet", "progress", "help"})


def one_line(exc: BaseException) -> str:
    """An exception as one line (whitespace collapsed; the class name when it has no message)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename or ""
        text = f"{where}: {exc.strerror}" if where else exc.strerror
    return text or type(exc).__name__


class BadUsage(click.ClickException):
    """A bad option value or scenario key: one line "Error: ..." and exit 2 (click's usage-error code)."""

    exit_code = 2


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """ValueError inside -> BadUsage (exit 2): the command line or scenario is wrong."""
    try:
        yield
    except ValueError as exc:
        raise BadUsage(one_line(exc)) from None


@contextlib.contextmanager
def runtime_errors() -> Iterator[None]:
    """ValueError / OSError / RuntimeError inside -> click.ClickException (exit 1), one line.

    A broken pipe passes through: click's entry point then exits quietly.
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except (ValueError, OSError, RuntimeError) as exc:
        raise click.ClickException(one_line(exc)) from None


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: the command body under `surface_warnings()` and `runtime_errors()`."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with surface_warnings(), runtime_errors():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def surface_warnings() -> Iterator[None]:
    """Print each distinct warning raised inside the block to stderr as one `warning: ...` line
    (e.g. a profile without drafter timings: the run charges the drafter nothing)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        try:
            yield
        finally:
            seen: set[str] = set()
            for w in caught:
                text = " ".join(str(w.message).split())
                if text not in seen:
                    seen.add(text)
                    click.echo(f"warning: {text}", err=True)


# ------------------------------------------------------------------------------------------ options

def quiet_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """-q/--quiet: no progress bar and no report on stdout (errors still go to stderr)."""
    return click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors; no progress bar.")(f)


def goodput_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--goodput in vLLM's syntax: `--goodput ttft:500 tpot:50 e2el:3000` (ms; any subset)."""
    return knob_option(SIM, "goodput", metavar="KEY:MS ...")(f)


_TYPES: dict[str, Any] = {"int": int, "int | None": int, "float": float, "float | None": float}


def knob_option(defaults: Any, name: str, *decls: str, **overrides: Any) -> Callable[[Any], Any]:
    """The click option of field `name` of a config dataclass instance (SimConfig, SweepDefaults):
    its default, help and choices come from the field (`simulator.config.knob`), so simulate,
    pareto and whatif cannot disagree on a knob.

    Args:
        defaults: an instance holding the defaults (simulator.scenario.SIM or SWEEP).
        name: the field; the option is `--name-with-dashes` (or the field's `flag`), the parameter `name`.
        decls: other declarations (`"--sla", "sla"`) where a command spells the knob its own way.
        overrides: click.option keywords that win over the field's (`help=`, `default=`).
    Tuple fields (`log`, `replica_profiles`) are comma-separated text on the command line; booleans
    are flags; fields whose default is None show no default (their help says what None means).
    """
    field = _knob(defaults, name)
    meta = field.metadata
    default = getattr(defaults, name)
    kw: dict[str, Any] = {"help": meta["help"]}
    if isinstance(default, tuple):
        default = ",".join(default) or None
    elif field.type == "bool":
        if "/" not in meta.get("flag", ""):
            kw["is_flag"] = True
    elif "choices" in meta:
        kw["type"] = click.Choice(list(meta["choices"]))
    elif field.type in _TYPES:
        kw["type"] = _TYPES[field.type]
    kw["default"] = default
    if default is not None and not (kw.get("is_flag") and default is False):
        kw["show_default"] = True
    kw.update(overrides)
    return click.option(*(decls or (meta.get("flag", "--" + name.replace("_", "-")), name)), **kw)


def knob_help(defaults: Any, name: str) -> str:
    """The help text of knob `name` of a config dataclass instance (for an option that adds to it)."""
    return str(_knob(defaults, name).metadata["help"])


def _knob(defaults: Any, name: str) -> Any:
    """The dataclass field `name` of `defaults`, which must carry help metadata (simulator.config.knob)."""
    import dataclasses

    field = next((f for f in dataclasses.fields(defaults) if f.name == name), None)
    if field is None or "help" not in field.metadata:
        raise ValueError(f"{type(defaults).__name__} has no knob {name!r}")
    return field


def option_keys(command: click.Command) -> dict[str, click.Parameter]:
    """Scenario key -> option of `command`: its name and each long flag ("--max-running" -> max_running)."""
    out: dict[str, click.Parameter] = {}
    for p in command.params:
        if not isinstance(p, click.Option) or p.name in ("config", "help"):
            continue
        assert p.name is not None
        out[p.name] = p
        for opt in p.opts:
            if opt.startswith("--"):
                out[opt[2:].replace("-", "_")] = p
    return out


def _known_keys() -> dict[str, set[str]]:
    from sparksched.cli import main

    ctx = click.Context(main)
    known = {}
    for name in COMMANDS:
        cmd = main.get_command(ctx, name)
        assert cmd is not None
        known[name] = set(option_keys(cmd))
    return known


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from simulator.scenario import read_scenario

    assert ctx.command.name is not None
    keys = option_keys(ctx.command)
    with usage_errors():
        raw = read_scenario(value, ctx.command.name, _known_keys())
    defaults: dict[str, Any] = {}
    for key, v in raw.items():
        opt = keys[key]
        assert opt.name is not None
        try:
            defaults[opt.name] = opt.type_cast_value(ctx, _from_toml(opt, v))
        except click.BadParameter as exc:
            raise BadUsage(f"{value}: key '{key}': {exc.message}") from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["scenario_file"] = value
    return value


def _from_toml(opt: click.Parameter, v: Any) -> Any:
    """A TOML value as the option takes it; BadParameter where TOML's type cannot be the option's."""
    if isinstance(v, dict):
        if opt.name != "goodput":
            raise click.BadParameter(f"expected a single value, got a table {v!r}")
        return " ".join(f"{k}:{x}" for k, x in v.items())  # goodput = {ttft = 500, tpot = 50}
    if isinstance(v, list) and not getattr(opt, "multiple", False):
        sep = " " if opt.name == "goodput" else ","  # list-valued options take comma-separated text
        return sep.join(str(x) for x in v)
    kind = opt.type
    if isinstance(kind, (click.types.IntParamType, click.types.FloatParamType)) and isinstance(v, bool):
        raise click.BadParameter(f"expected a number, got {v!r}")
    if isinstance(kind, click.types.IntParamType) and isinstance(v, float) and not v.is_integer():
        raise click.BadParameter(f"expected an integer, got {v!r}")
    if isinstance(kind, click.types.BoolParamType) and not isinstance(v, bool):
        raise click.BadParameter(f"expected true or false, got {v!r}")
    return v


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--config FILE: a TOML scenario whose keys are this command's flags (flags given still win)."""
    return click.option("--config", "config", type=click.Path(dir_okay=False), default=None, is_eager=True,
                        expose_value=False, callback=_load_config,
                        help="Scenario file (TOML): every flag is a key; flags on the command line win.")(f)


def resolved_scenario(ctx: click.Context, extra: dict[str, Any] | None = None) -> str:
    """The TOML of every option value this command ran with, and where each came from."""
    from simulator.scenario import to_toml

    source_note = {ParameterSource.COMMANDLINE: "command line", ParameterSource.ENVIRONMENT: "environment",
                   ParameterSource.DEFAULT_MAP: f"from {ctx.meta.get('scenario_file', 'the scenario')}",
                   ParameterSource.DEFAULT: "default"}
    rows = []
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name in NOT_SCENARIO or p.name is None:
            continue
        long = next((o[2:] for o in p.opts if o.startswith("--")), p.name)
        value = (extra or {}).get(p.name, ctx.params.get(p.name))
        if isinstance(value, tuple):
            value = list(value)
        source = ctx.get_parameter_source(p.name)
        rows.append((long, value, "" if source is None else source_note.get(source, "")))
    from sparksched import __version__

    header = (f"sparksched {ctx.command.name}: the resolved scenario of this run (sparksched {__version__}).\n"
              f"Repeat it with: sparksched {ctx.command.name} --config scenario.toml -o NEW_DIR")
    return to_toml(rows, header)


def write_scenario(ctx: click.Context, directory: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, str]:
    """Write scenario.toml into `directory`; returns (path, text)."""
    from sparksched.io import write_text

    text = resolved_scenario(ctx, extra)
    return write_text(Path(directory) / "scenario.toml", text), text


# ------------------------------------------------------------------------------------------ commands

class Command(click.Command):
    """A click command that also takes vLLM's multi-value `--goodput ttft:500 tpot:50` form.

    vLLM's flag takes several space-separated KEY:MS words; click options take one value, so the
    words following --goodput that look like KEY:VALUE are joined into that one value first.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, join_goodput(args))


def join_goodput(args: list[str]) -> list[str]:
    """["--goodput", "ttft:5", "tpot:2", "-o", "d"] -> ["--goodput", "ttft:5 tpot:2", "-o", "d"]."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        out.append(a)
        i += 1
        if a == "--goodput":
            words = []
            while i < len(args) and not args[i].startswith("-") and ":" in args[i]:
                words.append(args[i])
                i += 1
            if words:
                out.append(" ".join(words))
        elif a.startswith("--goodput="):
            while i < len(args) and not args[i].startswith("-") and ":" in args[i]:
                out[-1] += " " + args[i]
                i += 1
    return out
