"""Conventions every command keeps: an example in --help, -o for outputs, exit 2 / 1, no torch where
none is needed, quiet on a closed pipe, a progress bar that never passes 100 %."""

from __future__ import annotations

import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from sparksched.cli import main


def _all_commands():
    """(path, command) for the group and every command and subcommand under it."""
    out = []

    def walk(cmd, path):
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(main, [])
    return out


COMMANDS = _all_commands()


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "sparksched")
def test_every_help_has_an_example(path):
    res = CliRunner().invoke(main, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert re.search(r"Examples?:\n(\s+.*\n)*?\s+sparksched ", res.output), res.output


# commands that write files: each takes -o for its output (a file or a directory)
WRITERS = [["simulate"], ["pareto"], ["whatif"], ["compare"], ["profile"], ["profile", "show"], ["profile", "compare"],
           ["trace", "convert"], ["trace", "generate"], ["trace", "transform"], ["trace", "mix"], ["trace", "bundle"],
           ["train", "all"], ["train", "target"], ["train", "drafter"], ["calibration", "fit"],
           ["calibration", "export"], ["calibration", "apply"]]


@pytest.mark.parametrize("path", WRITERS, ids=" ".join)
def test_outputs_take_dash_o(path):
    cmd = dict((tuple(p), c) for p, c in COMMANDS)[tuple(path)]
    assert any("-o" in p.opts for p in cmd.params if isinstance(p, click.Option)), path


def test_every_command_that_reports_can_be_quiet():
    quiet = {" ".join(p) for p, c in COMMANDS if any("--quiet" in o.opts for o in c.params
                                                      if isinstance(o, click.Option))}
    assert {"simulate", "pareto", "whatif", "compare", "profile", "trace convert", "trace generate",
            "trace transform", "trace mix", "trace bundle", "calibration fit", "calibration export",
            "calibration apply"} <= quiet


@pytest.mark.parametrize("args, code", [
    (["simulate", "--trace", "chat", "--block", "0"], 2),           # a bad value
    (["simulate", "--trace", "chat", "--nope"], 2),                 # an unknown option
    (["simulate", "--trace", "chat", "--goodput", "speed:3"], 2),   # a bad SLO
    (["simulate", "--trace", "/no/such/trace.jsonl"], 1),           # an input that cannot be read
    (["pareto", "--load", "8,x"], 2),
    (["whatif", "--from", "/no/such/sweep"], 1),
    (["trace", "generate", "--rate", "-1", "-o", "x.jsonl"], 2),
    (["trace", "convert", "--from", "azure", "/no/such.csv", "-o", "x.jsonl"], 1),
    (["trace", "transform", "chat", "--clip-output", "0", "-o", "x.jsonl"], 2),
    (["profile", "--gpu", "0", "--roofline", "h100"], 2),
    (["profile", "show", "/no/such/profile.json"], 1),
    (["compare", "/no/such.json", "."], 1),
    (["calibration", "show", "/no/such/sts.json"], 1),
])
def test_exit_codes(tmp_path, monkeypatch, args, code):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.jsonl").exists()


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [["--help"], ["trace", "stats", "chat"], ["simulate", "--help"],
                                  ["pareto", "--help"], ["compare", "--help"]], ids=" ".join)
def test_no_torch_where_none_is_needed(args):
    proc = _python("import sys\nfrom sparksched.cli import main\n"
                   f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
                   "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO TORCH"


def test_no_torch_negative_control():
    """The check sees torch when a path does import it (the profiler's CPU measurement code)."""
    proc = _python("import sys\nimport sparksched\nsparksched.verify\nprint('torch' in sys.modules)")
    assert proc.stdout.strip() == "True", proc.stderr


def test_closed_pipe_is_quiet():
    """`sparksched trace stats ... | head -1`: no traceback, no error line."""
    cli = [sys.executable, "-m", "sparksched.cli", "trace", "stats", "chat", "code", "math", "mixed"]
    producer = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-c", "10"], stdin=producer.stdout, capture_output=True, timeout=120)
    producer.stdout.close()
    err = producer.stderr.read().decode()
    producer.wait(timeout=120)
    assert len(head.stdout) == 10
    assert err == "", err


def test_progress_bar_never_passes_100_percent(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sparksched.cli", "simulate", "--trace", "chat", "--max-requests",
                           "120", "--no-report", "-o", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    shown = [int(p) for p in re.findall(r"(\d+)%\|", proc.stderr)]
    assert shown and max(shown) == 100 and shown[-1] == 100, proc.stderr[-500:]
    assert "clamping frac" not in proc.stderr
    counts = re.findall(r"\| (\d+)/(\d+) sim-s", proc.stderr)
    assert all(int(n) <= int(total) for n, total in counts)


# ------------------------------------------------------------------------------------------ one default per knob
def _knobs(name: str) -> dict:
    """{parameter name: (default, help)} of the knobs of command `name`: SimConfig's, and for the sweeps
    (pareto, whatif) SweepDefaults' over them, as the options spell them."""
    import dataclasses

    from simulator.scenario import SIM, SWEEP

    out = {}
    for defaults in (SIM,) if name == "simulate" else (SIM, SWEEP):
        for f in dataclasses.fields(defaults):
            v = getattr(defaults, f.name)
            out[f.name] = (",".join(v) or None if isinstance(v, tuple) else v, f.metadata["help"])
    # where a command spells a knob its own way (pareto / whatif): parameter -> knob
    for param, knob in (("sla", "sla_tps"), ("loads", "load"), ("attainment", "slo_attainment")):
        if knob in out:
            out[param] = out[knob]
    return out


# simulate derives --verify-layout from --engine; whatif's --router says it is for --replicas
OWN_DEFAULT = {("simulate", "verify_layout")}
OWN_HELP = {("simulate", "verify_layout"), ("whatif", "router")}


def knob_mismatches(name: str, command: click.Command) -> list[str]:
    """Options of `command` whose default or help differs from their config field's."""
    knobs = _knobs(name)
    bad = []
    for p in command.params:
        if p.name not in knobs:
            continue
        default, help_ = knobs[p.name]
        if (name, p.name) not in OWN_DEFAULT and p.default != default:
            bad.append(f"{name} --{p.name}: default {p.default!r}, the config's {default!r}")
        if (name, p.name) not in OWN_HELP and getattr(p, "help", None) != help_:
            bad.append(f"{name} --{p.name}: help differs from the config field's")
    return bad


@pytest.mark.parametrize("name", ["simulate", "pareto", "whatif"])
def test_every_knob_has_the_config_s_default_and_help(name):
    cmd = main.get_command(click.Context(main), name)
    assert not knob_mismatches(name, cmd)
    assert sum(p.name in _knobs(name) for p in cmd.params) >= (25 if name == "simulate" else 14)


def test_negative_control_a_knob_with_its_own_default_is_caught():
    @click.command()
    @click.option("--block", default=5, help="Drafted tokens per round.")
    def cmd(block):
        pass

    assert len(knob_mismatches("demo", cmd)) == 2  # its own default and its own help


def test_knob_option_builds_flags_choices_and_lists():
    from simulator.scenario import SIM
    from sparksched.commands._common import knob_option

    @click.command()
    @knob_option(SIM, "disaggregated")
    @knob_option(SIM, "prefix_cache")
    @knob_option(SIM, "router")
    @knob_option(SIM, "log")
    @knob_option(SIM, "horizon_s")
    def cmd(**kw):
        click.echo(repr(sorted(kw.items())))

    res = CliRunner().invoke(cmd, ["--disaggregated", "--no-prefix-cache", "--router", "session", "--horizon", "3"])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == repr(sorted({"disaggregated": True, "prefix_cache": False, "router": "session",
                                              "log": "steps,rounds", "horizon_s": 3.0}.items()))
    assert CliRunner().invoke(cmd, ["--router", "nearest"]).exit_code == 2
    with pytest.raises(ValueError, match="no knob"):
        knob_option(SIM, "engine")
