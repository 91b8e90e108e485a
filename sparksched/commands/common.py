"""What every command shares: library errors as one line, warnings as stderr lines.

A command body runs under `one_line_errors()`: a ValueError (bad input, `sparksched.io.OutputError`
for a failed write) or an OSError becomes a `click.ClickException` (exit 1) whose message is one
line naming the file; nothing else is printed. Warnings the library raises while it runs (e.g. a
profile without drafter timings) are printed to stderr as `warning: ...` lines by `surface_warnings()`.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def one_line(exc: BaseException) -> str:
    """The error as one line; an OSError names its file when it knows it."""
    if isinstance(exc, OSError) and not isinstance(exc, ValueError):
        name = exc.filename or ""
        cause = exc.strerror or str(exc) or type(exc).__name__
        return f"{name}: {cause}" if name else cause
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn ValueError and OSError into a one-line ClickException (exit 1)."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise click.ClickException(one_line(exc)) from None


def cli_errors(fn: F) -> F:
    """Decorator form of `one_line_errors` (warnings surfaced as well)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with surface_warnings(), one_line_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def surface_warnings() -> Iterator[None]:
    """Print each distinct warning raised inside the block to stderr as one `warning: ...` line."""
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
