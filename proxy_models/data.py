"""Corpus preparation: one tokenizer for all domains, then one memory-mapped token file per domain and split.

``prepare`` streams each domain's JSONL, so corpora larger than memory are fine. A document whose
text (whitespace aside) appeared earlier, in its own domain or another, is dropped: with a copy on
each side of the split, validation would reward memorising the copy it trained on (the bundled BBC
topics hold such copies; ``bench/transfer.py`` prints how many it drops). Random documents of each
domain (fixed by ``seed``) make up its validation slice, ``val_fraction`` of its tokens at most
``max_val_tokens``, which the sampler never reads. Everything lands in ``out_dir`` with
``meta.json`` written last: a directory with a matching ``meta.json`` is a finished preparation and is
returned as-is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from proxy_models.tokenizer import cached_tokenizer, eot_id

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE = "meta.json"
TOKENIZER_SAMPLE_CHARS = 8_000_000  # all domains together; split evenly between them
ENCODE_CHUNK_DOCS = 512


@dataclass(frozen=True)
class PreparedData:
    """A prepared corpus: token files per domain, their sizes, and the tokenizer that made them."""

    dir: Path
    domains: tuple[str, ...]
    vocab_size: int
    train_tokens: dict[str, int]
    val_tokens: dict[str, int]
    documents: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)  # documents dropped as copies of earlier ones
    key: str = ""
    dtype: str = "uint16"
    tokenizer_file: str = "tokenizer.json"

    @classmethod
    def load(cls, dir: Path) -> PreparedData:
        meta = json.loads((Path(dir) / META_FILE).read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{dir} holds a preparation of format {meta.get('format')}; expected {FORMAT_VERSION}"
            )
        fields = {k: v for k, v in meta.items() if k != "format"}
        fields["domains"] = tuple(fields["domains"])
        return cls(dir=Path(dir), **fields)

    def token_file(self, domain: str, split: str) -> Path:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        return self.dir / f"{self.domains.index(domain):03d}.{split}.bin"

    def tokens(self, domain: str, split: str = "train") -> np.ndarray:
        """The domain's token ids, memory-mapped (read-only)."""
        n = self.train_tokens[domain] if split == "train" else self.val_tokens[domain]
        if n == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.token_file(domain, split), dtype=self.dtype, mode="r", shape=(n,))

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / self.tokenizer_file


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_documents(path: Path) -> Iterator[str]:
    """Texts of a JSONL file with one ``{"text": ...}`` object per line; blank lines are skipped."""
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{lineno}: expected a JSON object with a 'text' field ({exc})"
                ) from exc
            if not isinstance(text, str):
                raise ValueError(f"{path}:{lineno}: 'text' must be a string, not {type(text).__name__}")
            yield text


def _tokenizer_sample(path: Path, chars: int) -> list[str]:
    """About ``chars`` characters from the whole file: a prefix of every document, sized to its share."""
    share = min(1.0, chars / max(1, path.stat().st_size))
    sample, budget = [], chars
    for text in iter_documents(path):
        if budget <= 0:
            break
        piece = text[: min(budget, math.ceil(len(text) * share))]
        sample.append(piece)
        budget -= len(piece)
    return sample


def _split_spans(lengths: np.ndarray, target: int, rng: np.random.Generator) -> list[tuple[int, int, bool]]:
    """(start, stop, is_val) token spans: random whole documents go to validation until ``target`` tokens.

    The last document picked is cut at the target, its rest trains, so validation is never much more
    than ``target`` and a single-document domain still gets a validation slice.
    """
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    val_head = np.zeros(len(lengths), dtype=np.int64)  # tokens of each document held out (from its start)
    need = target
    for doc in rng.permutation(len(lengths)):
        if need <= 0:
            break
        val_head[doc] = min(need, lengths[doc])
        need -= val_head[doc]
    spans = []
    for start, length, head in zip(starts.tolist(), lengths.tolist(), val_head.tolist(), strict=True):
        if head:
            spans.append((start, start + head, True))
        if head < length:
            spans.append((start + head, start + length, False))
    return spans


def _tokenize_domain(
    path: Path,
    index: int,
    tok: Tokenizer,
    dtype: np.dtype,
    out_dir: Path,
    val_fraction: float,
    max_val_tokens: int,
    seed: int,
    seen: set[bytes],
) -> tuple[int, int, int, int]:
    """Write ``<index>.train.bin`` and ``<index>.val.bin``, skipping documents whose digest is in ``seen``
    (and adding the rest); returns (train tokens, val tokens, documents, duplicates dropped)."""
    eot = eot_id(tok)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # a concurrent preparation of the same dir writes elsewhere
    all_path = out_dir / f"{index:03d}.all.{tag}.tmp"
    lengths: list[int] = []
    dropped = 0
    with all_path.open("wb") as fh:
        docs = iter_documents(path)
        while chunk := list(itertools.islice(docs, ENCODE_CHUNK_DOCS)):
            fresh = []
            for text in chunk:
                digest = hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).digest()
                if digest in seen:
                    dropped += 1
                else:
                    seen.add(digest)
                    fresh.append(text)
            for enc in tok.encode_batch_fast(fresh, add_special_tokens=False):
                ids = np.asarray([*enc.ids, eot], dtype=dtype)
                fh.write(ids.tobytes())
                lengths.append(len(ids))
    total = sum(lengths)
    if total == 0:
        copies = f" ({dropped} documents were copies of earlier ones)" if dropped else ""
        raise ValueError(f"{path} holds no text{copies}")
    target = min(max_val_tokens, int(total * val_fraction))
    spans = _split_spans(np.asarray(lengths, dtype=np.int64), target, np.random.default_rng([seed, index]))
    tokens = np.memmap(all_path, dtype=dtype, mode="r", shape=(total,))
    counts = {}
    for split, is_val in (("train", False), ("val", True)):
        part = out_dir / f"{index:03d}.{split}.{tag}.tmp"
        with part.open("wb") as fh:
            for start, stop, in_val in spans:
                if in_val == is_val:
                    fh.write(tokens[start:stop].tobytes())
            counts[split] = fh.tell() // dtype.itemsize
        part.replace(out_dir / f"{index:03d}.{split}.bin")
    del tokens
    all_path.unlink()
    return counts["train"], counts["val"], len(lengths), dropped


def preparation_key(hashes: Mapping[str, str], **settings: object) -> str:
    files = [[name, sha] for name, sha in hashes.items()]  # a list: domain order is part of the result
    blob = json.dumps({"format": FORMAT_VERSION, "files": files, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def prepare(
    domains: Mapping[str, Path],
    out_dir: Path,
    *,
    vocab_size: int = 4096,
    val_fraction: float = 0.1,
    max_val_tokens: int = 50_000,
    seed: int = 0,
) -> PreparedData:
    """Tokenize every domain into ``out_dir``; reuse ``out_dir`` when it already holds these exact inputs.

    ``domains`` maps a name to a JSONL file with one ``{"text": ...}`` per line; the order of the
    mapping is the order of ``PreparedData.domains``.
    """
    if len(domains) < 1:
        raise ValueError("prepare needs at least one domain")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out_dir = Path(out_dir)
    hashes = {name: file_sha256(Path(p)) for name, p in domains.items()}
    key = preparation_key(
        hashes,
        vocab_size=vocab_size,
        val_fraction=val_fraction,
        max_val_tokens=max_val_tokens,
        seed=seed,
        drop_copies=True,
    )
    if (out_dir / META_FILE).exists():
        try:
            existing = PreparedData.load(out_dir)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            logger.warning("ignoring unreadable preparation in %s: %s", out_dir, exc)
        else:
            if existing.key == key:
                logger.info("reusing preparation %s in %s", key, out_dir)
                return existing
        (out_dir / META_FILE).unlink()

    out_dir.mkdir(parents=True, exist_ok=True)
    per_domain_chars = TOKENIZER_SAMPLE_CHARS // len(domains)
    sample = [text for p in domains.values() for text in _tokenizer_sample(Path(p), per_domain_chars)]
    tok, tok_path = cached_tokenizer(out_dir, sample, vocab_size)
    vocab = tok.get_vocab_size()
    dtype = np.dtype(np.uint16 if vocab <= 1 << 16 else np.uint32)

    train, val, docs, copies = {}, {}, {}, {}
    seen: set[bytes] = set()
    for index, (name, path) in enumerate(domains.items()):
        train[name], val[name], docs[name], copies[name] = _tokenize_domain(
            Path(path), index, tok, dtype, out_dir, val_fraction, max_val_tokens, seed, seen
        )
        logger.info(
            "domain %s: %d documents (%d copies dropped), %d train / %d val tokens",
            name,
            docs[name],
            copies[name],
            train[name],
            val[name],
        )
    data = PreparedData(
        dir=out_dir,
        domains=tuple(domains),
        vocab_size=vocab,
        train_tokens=train,
        val_tokens=val,
        documents=docs,
        duplicates=copies,
        key=key,
        dtype=dtype.name,
        tokenizer_file=tok_path.name,
    )
    meta = {"format": FORMAT_VERSION, **{k: v for k, v in asdict(data).items() if k != "dir"}}
    tmp = out_dir / f"{META_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out_dir / META_FILE)
    return data
