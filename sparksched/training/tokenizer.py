"""Byte-level BPE tokenizer for the bundled small target, trained here with the `tokenizers` package.

Byte-level, so every string round-trips (no unknown tokens). Token 0 is `<|endoftext|>`, the
document separator.
"""

from __future__ import annotations

from collections.abc import Iterable

EOT = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2):
    """A `tokenizers.Tokenizer` (byte-level BPE, `vocab_size` tokens, EOT = id 0) trained on `texts`.

    Deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def load_tokenizer(path: str):
    """The tokenizer saved at `path` (tokenizer.json)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def encode_docs(tok, docs: list[str]) -> list[list[int]]:
    """Token ids of each document (batched through the Rust encoder)."""
    return [e.ids for e in tok.encode_batch(docs)]
