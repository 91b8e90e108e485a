"""The one atomic writer and result sets (sparksched/io.py): all or nothing, under errors, kills and full disks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from sparksched.io import (
    FILE_MODE,
    MANIFEST,
    OutputError,
    ResultSet,
    atomic_write,
    check_result_set,
    write_lines,
    write_parquet,
    write_text,
)

ROOT = Path(__file__).resolve().parents[1]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------ one file
def test_atomic_write_gives_0644_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_parquet(tmp_path / "b.parquet", pl.DataFrame({"x": [1]}))
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"a.txt": FILE_MODE,
                                                                             "b.parquet": FILE_MODE}


def test_a_failed_write_leaves_the_target_untouched(tmp_path):
    target = tmp_path / "keep.jsonl"
    target.write_text("precious\n")

    def lines():
        yield "one"
        raise ValueError("line 2 is bad")

    with pytest.raises(ValueError, match="line 2 is bad"):
        write_lines(target, lines())
    assert target.read_text() == "precious\n" and _hidden(tmp_path) == []

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match=r"^cannot write .*keep.jsonl: No space left on device$"):
        atomic_write(target, fails)
    assert target.read_text() == "precious\n" and _hidden(tmp_path) == []


def test_partials_of_dead_processes_are_swept(tmp_path):
    """A SIGKILLed writer leaves its hidden partial; the next writer of the same target removes it."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".t.txt.{pid}.partial-abc").write_text("half")
    (tmp_path / f".run.{pid}.partial-xyz").mkdir()
    (tmp_path / f".other.{pid}.partial-abc").write_text("not ours to judge")
    write_text(tmp_path / "t.txt", "whole")
    with ResultSet(tmp_path / "run") as rs:
        write_text(rs.path("a.txt"), "a")
    assert _hidden(tmp_path) == [f".other.{pid}.partial-abc"]


# ------------------------------------------------------------------------------------------ result sets
def test_result_set_is_published_whole_with_a_manifest(tmp_path):
    out = tmp_path / "set"
    with ResultSet(out, about={"seed": 3}) as rs:
        write_text(rs.path("a.txt"), "a")
        write_parquet(rs.path("b.parquet"), pl.DataFrame({"x": [1, 2]}))
        assert not out.exists()  # nothing visible until the end
    manifest = check_result_set(out, need=["a.txt"])
    assert sorted(manifest["files"]) == ["a.txt", "b.parquet"] and manifest["about"] == {"seed": 3}
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(OutputError, match="--overwrite"):
        with ResultSet(out) as rs:
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with ResultSet(out, overwrite=True) as rs:
            write_text(rs.path("c.txt"), "c")
            raise RuntimeError("boom")
    assert sorted(check_result_set(out)["files"]) == ["a.txt", "b.parquet"]  # the old set, untouched
    assert _hidden(tmp_path) == []
    with ResultSet(out, overwrite=True) as rs:
        write_text(rs.path("c.txt"), "c")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt", MANIFEST]  # replaced, not merged


def test_check_result_set_refuses_incomplete_sets(tmp_path):
    with ResultSet(tmp_path / "s") as rs:
        write_text(rs.path("a.txt"), "abc")
    (tmp_path / "s" / "a.txt").unlink()
    with pytest.raises(ValueError, match="incomplete result set: a.txt is missing"):
        check_result_set(tmp_path / "s")
    (tmp_path / "t").mkdir()
    with pytest.raises(ValueError, match="not a complete result set"):
        check_result_set(tmp_path / "t")
    with pytest.raises(ValueError, match="a plain file name"):
        with ResultSet(tmp_path / "u") as rs:
            rs.path("../escape.txt")


# ------------------------------------------------------------------------------------------ kills
WRITER = """
import sys, time
from pathlib import Path
from sparksched.io import ResultSet, atomic_write, write_text
target = Path(sys.argv[1])
if sys.argv[2] == "set":
    with ResultSet(target, overwrite=True) as rs:
        write_text(rs.path("requests.txt"), "new run")
        print("ready", flush=True)
        time.sleep(60)
        write_text(rs.path("steps.txt"), "new run")
else:
    def slow(tmp):
        tmp.write_text("new, half")
        print("ready", flush=True)
        time.sleep(60)
    atomic_write(target, slow)
"""


@pytest.mark.parametrize("kind", ["set", "file"])
def test_kill_during_write_keeps_the_previous_output_whole(tmp_path, kind):
    """SIGKILL in the middle of a write: the target is the previous complete output, and the next
    writer removes the dead writer's partial."""
    target = tmp_path / ("run" if kind == "set" else "t.txt")
    if kind == "set":
        with ResultSet(target) as rs:
            write_text(rs.path("requests.txt"), "old run")
            write_text(rs.path("steps.txt"), "old run")
    else:
        write_text(target, "old, whole")
    before = {p.name: p.read_bytes() for p in target.iterdir()} if kind == "set" else target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), kind], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert _hidden(tmp_path)  # the partial exists: we are inside the write
    finally:
        proc.kill()
        proc.wait(timeout=30)
    after = {p.name: p.read_bytes() for p in target.iterdir()} if kind == "set" else target.read_bytes()
    assert after == before
    if kind == "set":
        check_result_set(target)
        with ResultSet(target, overwrite=True) as rs:
            write_text(rs.path("requests.txt"), "next run")
    else:
        write_text(target, "next")
    assert _hidden(tmp_path) == []


def test_kill_during_simulate_keeps_the_previous_results(tmp_path):
    """The real command, killed with SIGKILL as soon as it starts staging its results."""
    out = tmp_path / "run"
    base = [sys.executable, "-m", "sparksched.cli", "simulate", "--trace", "math", "--max-requests", "30",
            "--no-progress", "-o", str(out)]
    subprocess.run(base, check=True, capture_output=True, cwd=ROOT, timeout=300)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = subprocess.Popen([*base, "--overwrite", "--seed", "5"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name.startswith(".run.") and p.is_dir() for p in tmp_path.iterdir()):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    if proc.returncode == 0:  # finished before the poll saw the staging folder: a whole new set
        assert json.loads(after[MANIFEST])["about"]["seed"] == 5
    else:
        assert after == before
    check_result_set(out)


# ------------------------------------------------------------------------------------------ full disk
def _in_small_tmpfs(tmp_path: Path, kib: int, *command: str) -> subprocess.CompletedProcess:
    """Run `command` in a fresh user + mount namespace with a `kib` KiB tmpfs mounted on tmp_path/mnt.

    Skips when this system allows no such namespace or mount (containers, macOS)."""
    unshare = shutil.which("unshare")
    if unshare is None or sys.platform != "linux":
        pytest.skip("needs Linux unshare to mount a private tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size={kib}k tmpfs '{mnt}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()[:200]}")
    script = f"mount -t tmpfs -o size={kib}k tmpfs '{mnt}' && cd '{mnt}' && exec \"$@\""
    return subprocess.run([unshare, "-rm", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("command, target", [
    # the steps table streams into the staged folder as the run goes: the first file written
    (["simulate", "--trace", "math", "--no-progress", "-o", "out"], "out/steps.parquet"),
    (["trace", "generate", "--requests", "20000", "-o", "t.jsonl"], "t.jsonl"),
])
def test_disk_full_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, command, target):
    """A 64 KiB tmpfs fills up mid-write: exit 1, one line naming the file and the cause, and no
    file (whole, half or temporary) left on it (issue 15, 2 and 9)."""
    check = ("import os, sys; from sparksched.cli import main; sys.argv = ['sparksched'] + sys.argv[1:]; "
             "r = 0\ntry: main()\nexcept SystemExit as e: r = e.code\n"
             "left = [os.path.join(d, f) for d, _, fs in os.walk('.') for f in fs] + "
             "[os.path.join(d, x) for d, xs, _ in os.walk('.') for x in xs]\n"
             "print('LEFT', sorted(left), file=sys.stderr); sys.exit(r)")
    r = _in_small_tmpfs(tmp_path, 64, sys.executable, "-c", check, *command)
    lines = [line for line in r.stderr.splitlines() if not line.startswith(("LEFT", "warning:"))]
    assert r.returncode == 1, r.stderr
    assert lines == [f"Error: cannot write {target}: No space left on device"], r.stderr
    assert "LEFT []" in r.stderr, r.stderr


# ------------------------------------------------------------------------------------------ every output kind
@pytest.fixture
def strict_umask():
    """A umask that would leave new files 0600: outputs must still come out 0644 (FILE_MODE)."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def _modes(folder: Path) -> dict[str, str]:
    return {p.name: oct(p.stat().st_mode & 0o777) for p in sorted(folder.iterdir()) if p.is_file()}


def test_every_kind_of_output_is_0644_whatever_the_umask(tmp_path, strict_umask):
    """Parquet tables, summary.json, result.json, scenario.toml, the PNGs and report.html of a run, a
    trace, a profile and a timeline: each written by the command or function users call."""
    from click.testing import CliRunner

    from profiler.run import write_profile
    from sparksched.cli import main
    from sparksched.profile import resolve_profile

    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["simulate", "--trace", "math", "--max-requests", "6", "--timeline", "-q",
                                    "-o", str(run)])
    assert res.exit_code == 0, res.output
    kinds = {".parquet", ".json", ".png", ".html", ".toml"}
    assert {p.suffix for p in run.iterdir()} == kinds
    assert {"summary.json", "result.json", "report.html", "requests.parquet", "timeline.json"} <= set(_modes(run))
    trace = tmp_path / "gen.jsonl"
    res = CliRunner().invoke(main, ["trace", "generate", "--domain", "code", "--rate", "2", "--duration", "5",
                                    "-o", str(trace)])
    assert res.exit_code == 0, res.output
    prof = json.loads(Path(resolve_profile("h100-qwen3-8b-roofline")).read_text())
    write_profile(prof, tmp_path / "profile.json")
    modes = {**{f"run/{k}": v for k, v in _modes(run).items()}, **_modes(tmp_path)}
    assert set(modes.values()) == {oct(FILE_MODE)}, modes
    assert oct(run.stat().st_mode & 0o777) == "0o755"


def test_negative_control_a_plain_write_under_the_same_umask_is_not_0644(tmp_path, strict_umask):
    (tmp_path / "plain.json").write_text("{}")
    assert _modes(tmp_path) == {"plain.json": "0o600"}
