"""Clustering an unlabeled pile: code vs prose, pruning, merge threshold, labels, cache, determinism.

The encoder runs once for the whole file (60 short documents, module-scoped); the rest reuse the vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.services import clustering
from proxy_models import corpora

N_PER_SOURCE = 30


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], np.ndarray]:
    """30 stdlib modules and 30 sports articles, interleaved and cut short to keep the encoder quick;
    truth 0 = code, 1 = sports."""
    code = [clustering.truncate(d, 512) for d in corpora.take(corpora.python_code(), N_PER_SOURCE)]
    sports = [clustering.truncate(d, 512) for d in corpora.take(corpora.bbc("sports"), N_PER_SOURCE)]
    docs = [d for pair in zip(code, sports, strict=True) for d in pair]
    return docs, np.tile([0, 1], N_PER_SOURCE)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def vectors(corpus, cache_dir) -> np.ndarray:
    docs, _ = corpus
    return clustering.embed(docs, cache_dir=cache_dir)


def test_embeddings_are_unit_vectors_one_per_document(corpus, vectors) -> None:
    assert vectors.shape == (len(corpus[0]), clustering.EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_cache_hit_returns_identical_vectors_without_the_encoder(corpus, vectors, cache_dir, monkeypatch):
    def no_encoder(*_a, **_k):
        raise AssertionError("the encoder ran although every document was cached")

    monkeypatch.setattr(clustering, "load_encoder", no_encoder)
    progress: list[tuple[int, int]] = []
    again = clustering.embed(corpus[0], cache_dir=cache_dir, on_progress=lambda d, t: progress.append((d, t)))
    np.testing.assert_array_equal(again, vectors)
    assert progress[-1] == (len(corpus[0]), len(corpus[0]))
    with pytest.raises(AssertionError, match="encoder ran"):
        clustering.embed(["a document nobody has embedded yet"], cache_dir=cache_dir)


def test_code_and_prose_land_in_different_clusters(corpus, cache_dir) -> None:
    docs, truth = corpus
    result = clustering.cluster_documents(docs, cache_dir=cache_dir)  # end to end, through the cache
    assert len(result.clusters) >= 2
    for c in result.clusters:
        share = np.bincount(truth[list(c.doc_indices)], minlength=2) / c.size
        assert share.max() >= 0.9, (c.label, share)
    code_cluster = result.clusters[int(np.bincount(result.assignments[truth == 0]).argmax())]
    assert {"def", "self", "import", "return", "class"} & set(code_cluster.top_terms), code_cluster.top_terms
    members = [docs[i] for i in code_cluster.doc_indices]
    assert all(any(d.startswith(s) for d in members) for s in code_cluster.samples)


def test_clusters_partition_the_documents_largest_first(corpus, vectors) -> None:
    docs, _ = corpus
    result = clustering.cluster_documents(docs, embeddings=vectors, initial_k=8, merge_threshold=0.0)
    indices = sorted(i for c in result.clusters for i in c.doc_indices)
    assert indices == list(range(len(docs)))
    for k, c in enumerate(result.clusters):
        assert c.size == len(c.doc_indices) and np.all(result.assignments[list(c.doc_indices)] == k)
        assert c.label and 1 <= len(c.samples) <= 3
    assert [c.size for c in result.clusters] == sorted((c.size for c in result.clusters), reverse=True)


def test_threshold_zero_merges_nothing_and_a_huge_one_merges_everything(corpus, vectors) -> None:
    docs, _ = corpus
    kept = clustering.cluster_documents(
        docs, embeddings=vectors, initial_k=8, merge_threshold=0.0, min_cluster_frac=0.0
    )
    assert kept.n_initial == 8 and kept.n_after_merge == 8 and len(kept.clusters) == 8
    one = clustering.cluster_documents(docs, embeddings=vectors, initial_k=8, merge_threshold=2.5)
    assert one.n_after_merge == 1 and len(one.clusters) == 1 and one.clusters[0].size == len(docs)


def test_pruning_dissolves_small_clusters(corpus, vectors) -> None:
    docs, _ = corpus
    result = clustering.cluster_documents(
        docs, embeddings=vectors, initial_k=12, merge_threshold=0.0, min_cluster_frac=0.15
    )
    assert result.n_after_merge == 12 and len(result.clusters) < 12
    assert min(c.size for c in result.clusters) >= 0.15 * len(docs)


def test_same_seed_same_clusters(corpus, vectors) -> None:
    docs, _ = corpus
    a = clustering.cluster_documents(docs, embeddings=vectors, initial_k=10, seed=3)
    b = clustering.cluster_documents(docs, embeddings=vectors, initial_k=10, seed=3)
    np.testing.assert_array_equal(a.assignments, b.assignments)
    assert [c.label for c in a.clusters] == [c.label for c in b.clusters]


def test_long_documents_are_cut_to_head_and_middle() -> None:
    doc = "H" * 1000 + "M" * 1000 + "T" * 1000
    cut = clustering.truncate(doc, 400)
    assert cut.startswith("H" * 200) and "M" * 200 in cut and "T" not in cut and len(cut) <= 410
    assert clustering.truncate("short", 400) == "short"
    assert clustering.doc_key("x", 400) != clustering.doc_key("x", 800)


def test_empty_corpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        clustering.cluster_documents([])
