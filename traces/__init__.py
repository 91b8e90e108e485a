"""Bundled request traces (JSON Lines; the schema is in README.md here).

`BUNDLED_DIR` is the directory holding `chat.jsonl`, `code.jsonl`, `math.jsonl` and `mixed.jsonl`;
`simulator.trace.resolve_trace("chat")` finds them by bare name. Regenerate them with
`sparksched trace bundle` (or `python -m simulator.generate --bundle`).
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR: Path = Path(__file__).resolve().parent

__all__ = ["BUNDLED_DIR"]
