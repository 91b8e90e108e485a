"""Training corpora found on every machine: code, prose and math (one list of documents per domain).

- code: the Python standard library's own source files (`sysconfig.get_paths()['stdlib']`).
- prose: English text extracted from the same tree: docstrings (through `ast`), runs of comment
  lines (through `tokenize`) and the pydoc topic help texts (`pydoc_data/topics.py`).
- math: arithmetic word problems with worked answers, generated from templates (seeded).

Train / held-out split: a source file goes to held-out when crc32(relative path) % 10 == 0, so the
split is stable across runs and machines with the same Python version; math uses disjoint seeds.
Different Python versions ship different stdlib sources, so the corpus (and thus a retrained
target) depends on the Python that builds it; the bundled checkpoints record that version.
"""

from __future__ import annotations

import ast
import io
import os
import random
import sysconfig
import tokenize
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

DOMAINS = ("code", "prose", "math")

_SKIP_DIRS = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "ensurepip",
              "tkinter", "turtledemo")


@dataclass(frozen=True)
class Corpus:
    """Documents per domain. train / heldout: {domain: [text, ...]}."""

    train: dict[str, list[str]]
    heldout: dict[str, list[str]]
    source: str  # where the text came from (stdlib path and Python version)

    def chars(self) -> dict[str, tuple[int, int]]:
        """{domain: (train chars, held-out chars)}."""
        return {d: (sum(map(len, self.train[d])), sum(map(len, self.heldout[d]))) for d in self.train}


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_files(root: str | None = None) -> list[str]:
    """Sorted relative paths of the stdlib's .py files (tests, site-packages and GUI demos left out)."""
    root = root or stdlib_root()
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        parts = [] if rel == "." else rel.split(os.sep)
        if any(p in _SKIP_DIRS or p.startswith("config-") for p in parts):
            dirnames[:] = []
            continue
        dirnames.sort()
        out.extend(os.path.normpath(os.path.join(rel, f)) for f in sorted(filenames) if f.endswith(".py"))
    return sorted(out)


def is_heldout(rel_path: str) -> bool:
    return zlib.crc32(rel_path.replace(os.sep, "/").encode()) % 10 == 0


def docstrings(source: str) -> list[str]:
    """Module, class and function docstrings of a Python source (empty when it does not parse)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:
                out.append(doc)
    return out


def comment_blocks(source: str) -> list[str]:
    """Runs of consecutive comment lines joined into paragraphs ('#' stripped; short ones dropped)."""
    blocks: list[list[str]] = []
    last_line = -2
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                text = tok.string.lstrip("#").strip()
                if not text or text.startswith("!") or set(text) <= set("-=*#~"):
                    continue
                if tok.start[0] == last_line + 1 and blocks:
                    blocks[-1].append(text)
                else:
                    blocks.append([text])
                last_line = tok.start[0]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return [" ".join(b) for b in blocks if sum(map(len, b)) >= 60]


def pydoc_topics(root: str) -> list[str]:
    """The help texts of `pydoc_data/topics.py` (documentation prose), or [] when absent."""
    path = os.path.join(root, "pydoc_data", "topics.py")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            return [v.value for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


# ------------------------------------------------------------------------------------------ math
_NAMES = ["Alice", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam",
          "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara"]
_ITEMS = ["apples", "books", "marbles", "pencils", "stickers", "cookies", "coins", "cards", "shells", "stamps",
          "oranges", "tickets", "bottles", "boxes", "flowers"]


def _problem(rng: random.Random) -> str:
    a, b = rng.sample(_NAMES, 2)
    item = rng.choice(_ITEMS)
    kind = rng.randrange(6)
    if kind == 0:
        x, y, z = rng.randint(5, 90), rng.randint(2, 50), rng.randint(1, 30)
        z = min(z, x + y)
        return (f"Question: {a} has {x} {item}. {b} gives {a} {y} more, and then {a} gives away {z}. "
                f"How many {item} does {a} have now?\nAnswer: {a} starts with {x}. After receiving {y}, "
                f"{a} has {x} + {y} = {x + y}. After giving away {z}, {a} has {x + y} - {z} = {x + y - z}. "
                f"The answer is {x + y - z}.")
    if kind == 1:
        n, p = rng.randint(2, 12), rng.randint(2, 25)
        return (f"Question: {a} buys {n} packs of {item}. Each pack costs {p} dollars. How much does {a} "
                f"spend?\nAnswer: {a} buys {n} packs at {p} dollars each, so {a} spends {n} * {p} = {n * p} "
                f"dollars. The answer is {n * p}.")
    if kind == 2:
        k, q = rng.randint(2, 9), rng.randint(2, 15)
        total = k * q
        return (f"Question: {a} shares {total} {item} equally among {k} friends. How many {item} does each "
                f"friend get?\nAnswer: Each friend gets {total} / {k} = {q} {item}. The answer is {q}.")
    if kind == 3:
        x, y = rng.randint(10, 99), rng.randint(10, 99)
        return (f"Question: {a} has {x} {item} and {b} has {y} {item}. How many {item} do they have "
                f"together?\nAnswer: Together they have {x} + {y} = {x + y} {item}. The answer is {x + y}.")
    if kind == 4:
        x, m = rng.randint(2, 30), rng.randint(2, 6)
        d = rng.randint(1, x * m)
        return (f"Question: {b} has {x} {item}. {a} has {m} times as many {item} as {b}, then loses {d}. "
                f"How many {item} does {a} have?\nAnswer: {a} has {m} * {x} = {m * x} {item}. After losing "
                f"{d}, {a} has {m * x} - {d} = {m * x - d}. The answer is {m * x - d}.")
    w, h = rng.randint(2, 40), rng.randint(2, 40)
    return (f"Question: A garden is {w} meters long and {h} meters wide. What is its area and its "
            f"perimeter?\nAnswer: The area is {w} * {h} = {w * h} square meters. The perimeter is "
            f"2 * ({w} + {h}) = 2 * {w + h} = {2 * (w + h)} meters. The answer is {w * h} and {2 * (w + h)}.")


def math_problems(count: int, seed: int) -> list[str]:
    """`count` generated arithmetic word problems with worked answers (seeded)."""
    rng = random.Random(seed)
    return [_problem(rng) for _ in range(count)]


# ------------------------------------------------------------------------------------------ build
def _read(root: str, rel: str) -> str | None:
    try:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _cap(docs: Iterator[str] | list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d)
        total += len(d)
    return out


def build_corpus(max_chars: int = 3_000_000, seed: int = 0, root: str | None = None) -> Corpus:
    """Documents per domain; train capped at `max_chars` per domain, held-out at max_chars / 10.

    Deterministic for a given stdlib and seed (files in sorted order; math from `seed`).
    """
    import sys

    root = root or stdlib_root()
    files = stdlib_files(root)
    code: dict[bool, list[str]] = {False: [], True: []}
    prose: dict[bool, list[str]] = {False: [], True: []}
    for rel in files:
        src = _read(root, rel)
        if not src or len(src) < 200:
            continue
        held = is_heldout(rel)
        code[held].append(src[:40_000])
        prose[held].extend(docstrings(src))
        prose[held].extend(comment_blocks(src))
    topics = pydoc_topics(root)
    for i, t in enumerate(topics):
        prose[i % 10 == 0].append(t)
    # shuffle deterministically so a cap keeps a mixture of modules and sources
    random.Random(seed + 2).shuffle(code[False])
    random.Random(seed + 3).shuffle(code[True])
    random.Random(seed).shuffle(prose[False])
    random.Random(seed + 1).shuffle(prose[True])
    n_math = max(1, max_chars // 230)
    train = {"code": _cap(code[False], max_chars), "prose": _cap(prose[False], max_chars),
             "math": math_problems(n_math, seed=seed * 2 + 1000)}
    heldout = {"code": _cap(code[True], max_chars // 10), "prose": _cap(prose[True], max_chars // 10),
               "math": math_problems(max(1, n_math // 10), seed=seed * 2 + 1001)}
    return Corpus(train, heldout, f"{root} (Python {sys.version.split()[0]})")
