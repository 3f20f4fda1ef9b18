"""Corpus uploads: streamed to disk under a size limit, checked, and stored as canonical JSONL.

Accepted: ``.txt`` (documents separated by blank lines), ``.jsonl`` (one ``{"text": ...}`` per line), and
``.gz`` of either. Everything is strict UTF-8. Files are content-addressed by the SHA-256 of the canonical
JSONL, so re-uploading the same text costs nothing. A rejected upload leaves no file and no row behind.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.errors import InvalidInput, TooLarge

FORMATS = (".txt", ".jsonl")


@dataclass(frozen=True)
class Limits:
    """What one upload may hold once decompressed (``Settings.max_corpus_bytes`` and friends)."""

    corpus_bytes: int
    line_bytes: int
    document_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_corpus_bytes, settings.max_line_bytes, settings.max_document_bytes)


@dataclass(frozen=True)
class StoredCorpus:
    path: Path
    sha256: str
    bytes: int
    documents: int


def corpus_format(filename: str) -> tuple[str, bool]:
    """(``.txt`` | ``.jsonl``, gzipped?) from a file name."""
    name = filename.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for ext in FORMATS:
        if name.endswith(ext):
            return ext, gz
    raise InvalidInput(
        f"cannot tell the format of {filename!r}: use .txt, .jsonl, .txt.gz or .jsonl.gz", code="bad_format"
    )


async def receive(chunks: AsyncIterator[bytes], dest: Path, limit: int) -> int:
    """Stream ``chunks`` into ``dest``, stopping with 413 as soon as ``limit`` bytes are passed."""
    size = 0
    with dest.open("wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"upload exceeds the limit of {limit} bytes (MIXLAB_MAX_UPLOAD_BYTES)")
            fh.write(chunk)
    if size == 0:
        raise InvalidInput("the upload is empty", code="empty_corpus")
    return size


def _decoded_lines(raw: Path, gz: bool, limits: Limits) -> Iterator[tuple[int, str]]:
    """Lines, streamed and decompressed in bounded reads: a gzip bomb or a line with no end stops at its
    limit (413 / 422) without ever being held in memory."""
    opener = gzip.open if gz else open
    try:
        with opener(raw, "rb") as fh:  # type: ignore[operator]
            total = 0
            for lineno in itertools.count(1):
                line = fh.readline(limits.line_bytes + 1)
                if not line:
                    return
                total += len(line)
                if total > limits.corpus_bytes:
                    raise TooLarge(
                        f"the decompressed corpus exceeds {limits.corpus_bytes} bytes "
                        "(MIXLAB_MAX_CORPUS_BYTES)"
                    )
                if len(line) > limits.line_bytes:
                    raise InvalidInput(
                        f"line {lineno} is longer than {limits.line_bytes} bytes (MIXLAB_MAX_LINE_BYTES)",
                        code="line_too_long",
                    )
                try:
                    yield lineno, line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InvalidInput(
                        f"line {lineno} is not valid UTF-8 (byte {e.start}); re-encode the file as UTF-8",
                        code="not_utf8",
                    ) from e
    except (OSError, EOFError) as e:
        if isinstance(e, gzip.BadGzipFile) or gz:
            raise InvalidInput(f"not a readable gzip file: {e}", code="bad_gzip") from e
        raise


def documents(raw: Path, fmt: str, gz: bool, limits: Limits) -> Iterator[str]:
    """The documents of an upload, validated as they stream by; linear time in the upload's size."""
    lines = _decoded_lines(raw, gz, limits)
    if fmt == ".jsonl":
        for lineno, line in lines:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"line {lineno} is not valid JSON: {e.msg}", code="bad_jsonl") from e
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise InvalidInput(f'line {lineno} needs a string field "text"', code="bad_jsonl")
            if obj["text"].strip():
                yield obj["text"]
        return
    block: list[str] = []
    size = 0
    for lineno, line in lines:
        if line.strip():
            block.append(line)
            size += len(line)
            if size > limits.document_bytes:
                raise InvalidInput(
                    f"the document ending at line {lineno} is longer than {limits.document_bytes} bytes "
                    "(MIXLAB_MAX_DOCUMENT_BYTES); separate documents with a blank line",
                    code="document_too_long",
                )
        elif block:
            yield "".join(block).strip()
            block, size = [], 0
    if block:
        yield "".join(block).strip()


def store_upload(raw: Path, filename: str, storage_dir: Path, limits: Limits) -> StoredCorpus:
    """Validate ``raw`` and move its canonical JSONL into the content-addressed store."""
    fmt, gz = corpus_format(filename)
    corpora = storage_dir / "corpora"
    corpora.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    n_docs = 0
    fd, tmp_name = tempfile.mkstemp(dir=corpora, suffix=".partial")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for doc in documents(raw, fmt, gz, limits):
                line = (json.dumps({"text": doc}, ensure_ascii=False) + "\n").encode()
                digest.update(line)
                out.write(line)
                n_docs += 1
        if n_docs == 0:
            raise InvalidInput("the corpus holds no non-empty documents", code="empty_corpus")
        sha = digest.hexdigest()
        final = corpora / f"{sha}.jsonl"
        size = tmp.stat().st_size
        os.replace(tmp, final)
        return StoredCorpus(final, sha, size, n_docs)
    finally:
        tmp.unlink(missing_ok=True)
