"""Byte-level BPE tokenizer trained once per experiment on a sample of every domain.

The caller (``data.prepare``) hands in an even sample of all domains, so a large domain does not own
the vocabulary and per-domain losses stay comparable across mixtures. The trained tokenizer is stored
under a name derived from the sample's hash, so preparing the same corpus again reuses it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

logger = logging.getLogger(__name__)

EOT = "<|endoftext|>"  # document separator; always id 0


def sample_hash(sample: Iterable[str], vocab_size: int) -> str:
    h = hashlib.sha256(f"bpe-v1|{vocab_size}|".encode())
    for text in sample:
        h.update(text.encode("utf-8", errors="replace"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def train_tokenizer(sample: Sequence[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with ``vocab_size`` entries (256 byte tokens, EOT, merges)."""
    if vocab_size < 512:
        raise ValueError(f"vocab_size={vocab_size} is too small for a byte-level BPE; use at least 512")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def batches() -> Iterator[list[str]]:
        for i in range(0, len(sample), 256):
            yield list(sample[i : i + 256])

    tok.train_from_iterator(batches(), trainer=trainer, length=len(sample))
    logger.info("trained byte-level BPE: %d tokens from %d texts", tok.get_vocab_size(), len(sample))
    return tok


def cached_tokenizer(cache_dir: Path, sample: Sequence[str], vocab_size: int) -> tuple[Tokenizer, Path]:
    """The tokenizer for ``sample``: loaded from ``cache_dir`` if this exact sample was trained before."""
    path = cache_dir / f"tokenizer-{sample_hash(sample, vocab_size)}.json"
    if path.exists():
        logger.info("reusing tokenizer %s", path.name)
        return Tokenizer.from_file(str(path)), path
    tok = train_tokenizer(sample, vocab_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return tok, path


def load_tokenizer(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def eot_id(tok: Tokenizer) -> int:
    token_id = tok.token_to_id(EOT)
    if token_id is None:
        raise ValueError("tokenizer has no end-of-text token")
    return token_id
