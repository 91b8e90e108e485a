"""Token streams per domain (train / held-out) and random training windows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparksched.training.corpus import Corpus
from sparksched.training.tokenizer import encode_docs


@dataclass(frozen=True)
class TokenData:
    """One int64 token stream per domain; documents joined by the EOT token (id `eot`)."""

    train: dict[str, np.ndarray]
    heldout: dict[str, np.ndarray]
    eot: int = 0

    @property
    def domains(self) -> list[str]:
        return list(self.train)


def tokenize_corpus(corpus: Corpus, tok, eot: int = 0) -> TokenData:
    """Encode every document and join each domain's documents with EOT."""

    def stream(docs: list[str]) -> np.ndarray:
        parts = []
        for ids in encode_docs(tok, docs):
            parts.append(np.asarray(ids, dtype=np.int64))
            parts.append(np.asarray([eot], dtype=np.int64))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    return TokenData({d: stream(v) for d, v in corpus.train.items()},
                     {d: stream(v) for d, v in corpus.heldout.items()}, eot)


def sample_windows(streams: dict[str, np.ndarray], batch: int, length: int, rng: np.random.Generator) -> torch.Tensor:
    """[batch, length] windows drawn uniformly at random, domains in equal shares (round robin)."""
    names = list(streams)
    rows = []
    for b in range(batch):
        s = streams[names[b % len(names)]]
        start = int(rng.integers(0, max(1, s.size - length)))
        rows.append(s[start:start + length])
    return torch.from_numpy(np.stack(rows))


def fixed_windows(stream: np.ndarray, length: int, count: int) -> torch.Tensor:
    """Up to `count` non-overlapping windows [m, length] evenly spread over `stream` (evaluation)."""
    total = stream.size // length
    if total == 0:
        return torch.zeros(0, length, dtype=torch.long)
    idx = np.linspace(0, total - 1, min(count, total)).astype(np.int64)
    return torch.from_numpy(np.stack([stream[i * length:(i + 1) * length] for i in idx]))
