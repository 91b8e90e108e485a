"""Files at the edges: the one atomic writer, result sets that appear whole or not at all, guarded readers.

Every file sparksched writes goes through `atomic_write` (or a helper on top of it): the bytes go
to a hidden temporary file beside the target (`.<name>.<pid>.partial-*`), are flushed to disk, get
mode 0644 (FILE_MODE, whatever the umask), and are renamed over the target. A failure (disk full,
read-only folder, a kill) never leaves a half-written target; a write error becomes one
`OutputError` line naming the file and the cause.

A run that writes several files (`sparksched simulate -o DIR`, `sparksched pareto -o DIR`) writes
them as a `ResultSet`: into a hidden staging folder beside DIR (`.<DIR name>.<pid>.partial-*`), with
`manifest.json` last (file names, sizes, SHA-256, what produced them), then renames the folder into
place. DIR therefore holds one complete run or nothing: never new files beside an older run's, never
stale files from an earlier run. An existing DIR is refused unless `overwrite=True`, and even then
only a folder that holds results of an earlier run (its manifest, or only names a result set
writes) is replaced. Readers call `check_result_set(DIR)` to refuse incomplete sets.

Staging files and folders of processes that died (SIGKILL) are removed by the next writer of the
same target. Readers: `check_input_file` refuses what is not a regular file (a FIFO or /dev/zero
would be read forever) and files above a size cap; `read_lines` caps each line (MAX_LINE_BYTES) and
names the file and line of undecodable text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o644  # every output file: owner read/write, everyone read
DIR_MODE = 0o755  # every output folder
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
MAX_LINE_BYTES = 1 << 20  # a JSON Lines record longer than 1 MiB is certainly corrupt
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?:partial|old)-[A-Za-z0-9_]+$")

__all__ = ["DIR_MODE", "FILE_MODE", "MANIFEST", "MAX_LINE_BYTES", "OutputError", "ResultSet", "atomic_write",
           "check_input_file", "check_result_set", "load_json", "read_lines", "read_text", "replace_file", "save_figure",
           "write_bytes", "write_json", "write_lines", "write_npz", "write_parquet", "write_text"]


class OutputError(ValueError):
    """A file or folder could not be written: one line naming it and the cause."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | str) -> None:
        self.path = Path(path)
        self.cause = cause
        super().__init__(f"cannot write {path}: {_cause(cause)}")


def _cause(exc: BaseException | str) -> str:
    """The reason of an OS or library error in a few words (no errno prefix, no file name)."""
    if isinstance(exc, str):
        return exc
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    code = re.search(r"os error (\d+)", text)  # polars (Rust) wraps the OS error in its own words
    if code:
        return os.strerror(int(code.group(1)))
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


def _is_write_failure(exc: BaseException) -> bool:
    """OS errors, and the errors polars and matplotlib raise when the disk or folder fails them."""
    if isinstance(exc, OSError):
        return True
    mod = type(exc).__module__
    return mod.startswith("polars") or (isinstance(exc, RuntimeError) and "os error" in str(exc).lower())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _sweep_dead_partials(folder: Path, name: str) -> None:
    """Remove staging files and folders for `name` left by processes that no longer exist."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m and m.group("name") == name and not _pid_alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(folder, exc) from None
    if not folder.is_dir():
        raise OutputError(folder, "not a folder")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write `path` all or nothing: `write(tmp)` fills a temporary file beside it, then a rename.

    Args:
        path: the target file; its folder is created when missing.
        write: called with the temporary file's path (it exists, empty); it may open it by name
            (polars, matplotlib, torch.save) and must write the whole content.

    Returns:
        `path` as a Path. Raises OutputError (a ValueError) naming the file when the system fails
        the write (disk full, permissions, a read-only folder); other exceptions from `write`
        (e.g. a validation ValueError) pass through. In every failure the target is untouched
        and the temporary file removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    _make_folder(folder)
    _sweep_dead_partials(folder, path.name)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.partial-", dir=folder)
    except OSError as exc:
        raise OutputError(path, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if _is_write_failure(exc):
            raise OutputError(path, exc) from None
        raise
    _fsync_dir(folder)
    return path


def replace_file(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the complete file `src` (written by this module, in the same folder) over `path`: one
    rename, mode FILE_MODE; OutputError naming `path` when the system refuses."""
    path = Path(path)
    try:
        os.chmod(src, FILE_MODE)
        os.replace(src, path)
    except OSError as exc:
        raise OutputError(path, exc) from None
    _fsync_dir(path.parent if str(path.parent) else Path("."))
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`data` to `path`, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 `text` to `path`, atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """`json.dumps(obj, **dumps)` plus a newline to `path`, atomically (serialised before any file exists)."""
    return write_text(path, json.dumps(obj, **dumps) + "\n")


def write_parquet(path: str | os.PathLike, df: Any) -> Path:
    """A polars DataFrame to `path` as Parquet, atomically."""
    return atomic_write(path, lambda tmp: df.write_parquet(tmp))


def save_figure(path: str | os.PathLike, fig: Any, **savefig: Any) -> Path:
    """A matplotlib figure to `path` (PNG unless `format` says otherwise), atomically; closes the figure."""
    import matplotlib.pyplot as plt

    savefig.setdefault("format", "png")
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig))
    finally:
        plt.close(fig)


def write_npz(path: str | os.PathLike, arrays: dict[str, Any]) -> Path:
    """Named numpy arrays to `path` as one compressed .npz, atomically (the name is kept as given:
    numpy would append ".npz" to a file name without it)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object, so numpy writes exactly this file
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def write_lines(path: str | os.PathLike, lines: Iterable[str], compress: bool | None = None) -> int:
    """Each string of `lines` plus a newline, UTF-8, atomically (gzip when `compress`, default: a
    `.gz` suffix); returns the line count. `lines` may be a generator that raises midway (nothing
    is written then)."""
    import gzip

    path = Path(path)
    gz = path.suffix == ".gz" if compress is None else compress
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "wb") as raw:
            sink: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if gz else raw  # type: ignore[assignment]
            for text in lines:
                sink.write(text.encode("utf-8"))
                sink.write(b"\n")
                count += 1
            if sink is not raw:
                sink.close()

    atomic_write(path, write)
    return count


# ------------------------------------------------------------------------------------------ result sets
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replaceable(folder: Path, names: Iterable[str]) -> str | None:
    """None when `folder` may be replaced by a new result set, else the name of a foreign entry.

    A folder is replaceable when it holds our manifest, or only entries a result set writes
    (folders written before manifests existed)."""
    entries = [e.name for e in folder.iterdir()]
    if MANIFEST in entries:
        return None
    known = set(names) | {MANIFEST}
    foreign = sorted(e for e in entries if e not in known)
    return foreign[0] if foreign else None


class ResultSet:
    """A folder of result files published whole: stage, write, then `commit` (or the `with` block's end).

        with ResultSet("runs/chat-dspark", overwrite=False, names=NAMES, about={...}) as rs:
            write_parquet(rs.path("requests.parquet"), df)
            write_json(rs.path("summary.json"), doc)
        # runs/chat-dspark now holds both files and manifest.json, or (after an error) is unchanged

    Args:
        directory: the target folder.
        overwrite: replace an existing folder of earlier results; without it an existing non-empty
            folder is refused (OutputError).
        names: the file names this kind of result set writes (lets `overwrite` recognise folders
            written before manifests existed; other folders are never replaced).
        about: JSON-ready facts recorded in the manifest (command, seed, policy, ...).
    """

    def __init__(self, directory: str | os.PathLike, *, overwrite: bool = False, names: Iterable[str] = (),
                 about: dict[str, Any] | None = None) -> None:
        self.target = Path(directory)
        self.overwrite = overwrite
        self.names = tuple(names)
        self.about = dict(about or {})
        self.staging: Path | None = None

    # ------------------------------------------------------------------ checks
    @staticmethod
    def check(directory: str | os.PathLike, overwrite: bool = False, names: Iterable[str] = ()) -> Path:
        """Refuse early (before any work): an existing folder without `overwrite`, a folder that is
        not earlier results, a file in the way, or a parent folder that cannot be written."""
        target = Path(directory)
        if target.exists() or target.is_symlink():
            if not target.is_dir():
                raise OutputError(target, "a file is in the way (the results are a folder)")
            if any(target.iterdir()):
                if not overwrite:
                    raise OutputError(target, "the folder already holds results of an earlier run; pass "
                                              "--overwrite to replace them, or choose another folder")
                foreign = _replaceable(target, names)
                if foreign is not None:
                    raise OutputError(target, f"holds {foreign!r}, which no sparksched run wrote; not "
                                              "replacing it (choose another folder)")
        parent = target.parent if str(target.parent) else Path(".")
        _make_folder(parent)
        try:  # the only sure test of writability (permissions, read-only mounts, ACLs)
            probe = tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.partial-", dir=parent)
        except OSError as exc:
            raise OutputError(target, exc) from None
        os.rmdir(probe)
        return target

    # ------------------------------------------------------------------ staging
    def __enter__(self) -> ResultSet:
        self.check(self.target, self.overwrite, self.names)
        parent = self.target.parent if str(self.target.parent) else Path(".")
        _sweep_dead_partials(parent, self.target.name)
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.{os.getpid()}.partial-",
                                                 dir=parent))
        except OSError as exc:
            raise OutputError(self.target, exc) from None
        return self

    @property
    def folder(self) -> Path:
        """The staging folder: write the set's files into it (plain names, no subfolders)."""
        if self.staging is None:
            raise RuntimeError("ResultSet.folder outside its `with` block")
        return self.staging

    def path(self, name: str) -> Path:
        """Where to write result file `name` (a plain file name) while the set is staged."""
        if self.staging is None:
            raise RuntimeError("ResultSet.path() outside its `with` block")
        if not name or "/" in name or name.startswith(".") or name == MANIFEST:
            raise ValueError(f"result file name {name!r}: a plain file name other than {MANIFEST}")
        return self.staging / name

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
            return
        staging = self.staging
        self.discard()
        if isinstance(exc, OutputError) and staging is not None:
            self._name_target(exc, staging)

    def discard(self) -> None:
        """Remove the staging folder (the target stays as it was)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None

    def commit(self) -> Path:
        """Write the manifest last, then publish the staged folder as the target."""
        if self.staging is None:
            raise RuntimeError("ResultSet.commit() outside its `with` block")
        staging = self.staging
        try:
            files = {}
            for entry in sorted(staging.iterdir()):
                if not entry.is_file() or entry.name.startswith("."):
                    continue  # helpers' own temporary files, if a write was interrupted
                os.chmod(entry, FILE_MODE)
                files[entry.name] = {"bytes": entry.stat().st_size, "sha256": _sha256(entry)}
            manifest = {"schema": MANIFEST_SCHEMA, "complete": True,
                        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "files": files, "about": self.about}
            write_json(staging / MANIFEST, manifest, indent=1, sort_keys=True, default=str)
            os.chmod(staging, DIR_MODE)
            self._publish(staging)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OutputError):
                self._name_target(exc, staging)
            if _is_write_failure(exc):
                raise OutputError(self.target, exc) from None
            raise
        self.staging = None
        return self.target

    def _name_target(self, exc: OutputError, staging: Path) -> None:
        """Re-raise a write error on a staged file as an error on the file the caller asked for."""
        if exc.path.parent == staging:
            raise OutputError(self.target / exc.path.name, exc.cause) from None
        raise exc

    def _publish(self, staging: Path) -> None:
        target = self.target
        parent = target.parent if str(target.parent) else Path(".")
        old: Path | None = None
        if target.exists():
            self.check(target, self.overwrite, self.names)  # the folder may have changed meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.old-", dir=parent))
            os.rename(target, old / "set")  # the previous set, kept until the new one is in place
        try:
            os.rename(staging, target)
        except BaseException:
            if old is not None:
                os.rename(old / "set", target)  # put the previous set back
                shutil.rmtree(old, ignore_errors=True)
            raise
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def check_result_set(directory: str | os.PathLike, need: Iterable[str] = ()) -> dict[str, Any]:
    """The manifest of a complete result set, or ValueError naming what is wrong.

    Checks that manifest.json exists and is complete, that every file it lists is present with its
    size, and that every name in `need` is among them.
    """
    folder = Path(directory)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such results folder")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder}: not a complete result set (no {MANIFEST}: written by an interrupted "
                         "run, or by a sparksched without manifests; rerun it)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable manifest ({_cause(exc)})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("complete") is not True:
        raise ValueError(f"{path}: not a complete result set")
    for name, facts in files.items():
        f = folder / name
        if not f.is_file():
            raise ValueError(f"{folder}: incomplete result set: {name} is missing")
        if isinstance(facts, dict) and facts.get("bytes") != f.stat().st_size:
            raise ValueError(f"{f}: size differs from the manifest (changed after the run wrote it)")
    for name in need:
        if name not in files:
            raise ValueError(f"{folder}: the result set has no {name}")
    return manifest


# ------------------------------------------------------------------------------------------ inputs
def check_input_file(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> Path:
    """`path` if it is a regular file (at most `max_bytes`), else ValueError naming it.

    Devices, FIFOs and sockets are refused: reading /dev/zero or a pipe would never end.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot open {what}: {_cause(exc)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file (a device, pipe or socket cannot be a {what})")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{path}: {st.st_size:,} bytes is too large for a {what} (limit {max_bytes:,})")
    return path


def read_lines(stream: IO[bytes], where: str, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """(line number, text) of a binary stream, decoded as UTF-8, each line at most `max_bytes`.

    A longer line, undecodable bytes or an unreadable stream (corrupt gzip) stop with a one-line
    ValueError "<where>: line <n>: ...".
    """
    line = 0
    while True:
        try:
            raw = stream.readline(max_bytes + 1)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{where}: line {line + 1}: field '<line>': unreadable ({_cause(exc)})") from None
        if not raw:
            return
        line += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            raise ValueError(f"{where}: line {line}: field '<line>': longer than {max_bytes:,} bytes "
                             "(not a record of this format)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = repr(raw[:40]) + ("..." if len(raw) > 40 else "")
            raise ValueError(f"{where}: line {line}: field '<line>': is not valid UTF-8 (got {shown})") from None
        yield line, text


def read_text(path: str | os.PathLike, what: str, max_bytes: int | None = 64 << 20) -> str:
    """The UTF-8 text of a regular file of at most `max_bytes`, or a ValueError naming the file
    (and the line of undecodable bytes)."""
    path = check_input_file(path, what, max_bytes)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read {what}: {_cause(exc)}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not valid UTF-8 (not a {what})") from None


def load_json(text: str, where: str) -> Any:
    """json.loads(text), or a one-line ValueError "<where>: line <n>: not valid JSON: ..." (syntax,
    nesting too deep, integers of more than 4300 digits)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        m = re.search(r"\d{4300,}", text) if not isinstance(exc, RecursionError) else None
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        raise ValueError(f"{where}: line {line}: not valid JSON: {json_error(exc)[len('bad JSON: '):]}") from None


def json_error(exc: Exception) -> str:
    """What is wrong with a JSON text, in a few words (json.loads's errors, and Python's limits)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"bad JSON: {exc.msg}"
    if isinstance(exc, RecursionError):
        return "bad JSON: nested too deeply"
    if "digits" in str(exc):  # int() refuses more than sys.get_int_max_str_digits() digits
        return "bad JSON: an integer with more than 4300 digits"
    return f"bad JSON: {_cause(exc)}"
