"""Scenario files: reading (keys, tables, errors), writing TOML that reads back, one source of defaults."""

from __future__ import annotations

import math
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.config import SimConfig
from simulator.scenario import SIM, SWEEP, read_scenario, to_toml, toml_value
from sparksched.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KNOWN = {"simulate": {"trace", "block", "policy", "max_running"}, "pareto": {"trace", "block", "load", "policies"},
         "whatif": {"trace", "sla"}}


def test_top_level_keys_apply_where_the_command_has_them(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('trace = "chat"\nmax-running = 64\nload = "4,8"\nsla = 90.0\n[simulate]\nblock = 5\n'
                 '[pareto]\nblock = 3\n')
    assert read_scenario(p, "simulate", KNOWN) == {"trace": "chat", "max_running": 64, "block": 5}
    assert read_scenario(p, "pareto", KNOWN) == {"trace": "chat", "load": "4,8", "block": 3}
    assert read_scenario(p, "whatif", KNOWN) == {"trace": "chat", "sla": 90.0}


def test_a_command_table_wins_over_the_top_level(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('block = 7\n[simulate]\nblock = 4\n')
    assert read_scenario(p, "simulate", KNOWN)["block"] == 4
    assert read_scenario(p, "pareto", KNOWN)["block"] == 7


@pytest.mark.parametrize("text, needle", [
    ("blocks = 3\n", "key 'blocks': no command has such an option"),
    ("[simulate]\nload = '4'\n", "[simulate] key 'load': `simulate` has no such option"),
    ("[other]\nx = 1\n", "table 'other': no command has such an option"),
    ("block = \n", "not valid TOML"),
])
def test_errors_name_the_file_and_the_key(tmp_path, text, needle):
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")) as e:
        read_scenario(p, "simulate", KNOWN)
    assert str(p) in str(e.value)
    with pytest.raises(ValueError, match="no such scenario file"):
        read_scenario(tmp_path / "missing.toml", "simulate", KNOWN)


scalars = st.one_of(st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False, allow_infinity=True, width=64),
                    st.text(st.characters(blacklist_categories=("Cs",)), max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
                       st.one_of(scalars, st.lists(st.integers(-5, 5), max_size=4)), max_size=8))
def test_written_toml_reads_back(values):
    doc = tomllib.loads(to_toml([(k, v, "a comment") for k, v in values.items()], header="hdr\nline 2"))
    assert doc.keys() == values.keys()
    for k, v in values.items():
        assert doc[k] == v or (isinstance(v, float) and math.isnan(v))


def test_toml_value_negative_control():
    """Python's own spellings are not TOML: the writer's conversions are needed."""
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(f"x = {True!r}\n")
    assert tomllib.loads(f"x = {toml_value(True)}\n")["x"] is True
    tricky = 'a "quoted" \\ path\n'
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(f'x = "{tricky}"\n')
    assert tomllib.loads(f"x = {toml_value(tricky)}\n")["x"] == tricky
    assert tomllib.loads(to_toml([("unset", None, "default")])) == {}  # None: commented out


def test_one_source_of_defaults():
    """simulate, pareto and whatif show the same defaults, and they are SimConfig's."""
    ctx_defaults = {}
    for name in ("simulate", "pareto", "whatif"):
        cmd = main.get_command(None, name)
        ctx_defaults[name] = {p.name: p.default for p in cmd.params}
    assert ctx_defaults["simulate"]["sla_tps"] == ctx_defaults["pareto"]["sla"] == ctx_defaults["whatif"]["sla"] \
        == SimConfig().sla_tps == SIM.sla_tps
    for key in ("block", "drafter", "seed"):
        assert ctx_defaults["simulate"][key] == ctx_defaults["pareto"][key] == getattr(SIM, key)
    assert ctx_defaults["pareto"]["policies"] == SWEEP.policies


def test_pareto_and_whatif_read_a_scenario_and_write_theirs(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('trace = "math"\nmax-requests = 20\nworkers = 1\n[pareto]\npolicies = ["dspark", "mtp1"]\n'
                   'load = "2,8"\ngoodput = {ttft = 5000, e2el = 60000}\n')
    out = tmp_path / "p"
    res = CliRunner().invoke(main, ["pareto", "--config", str(cfg), "-q", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert res.output == ""
    text = (out / "scenario.toml").read_text()
    assert 'policies = "dspark,mtp1"  # from' in text and 'goodput = "ttft:5000 e2el:60000"' in text
    assert (out / "goodput.parquet").exists() and (out / "report.html").exists()
    res = CliRunner().invoke(main, ["pareto", "--config", str(out / "scenario.toml"), "--no-progress",
                                    "-o", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert "Goodput under SLOs ttft:5000 e2el:60000 ms" in res.output
    w = tmp_path / "w"
    res = CliRunner().invoke(main, ["whatif", "--from", str(out), "--sla", "40", "-o", str(w)])
    assert res.exit_code == 0, res.output
    assert "Goodput under SLOs" in res.output
    page = (w / "report.html").read_text()
    assert "data:image/png;base64," in page and "https://" not in page and (w / "scenario.toml").exists()
