"""Does clustering recover real domains? BBC topics + stdlib code + licence texts, labels hidden.

Seven true sources (business, entertainment, politics, sports, tech, code, legal) are pooled and shuffled;
``cluster_documents`` sees only the texts. Prints the adjusted Rand index of the discovered domains against
the true sources, documents embedded per second with a cold cache, and how many clusters survive merging.
``--sweep`` also prints ARI over a grid of (initial K, merge threshold), reusing the same embeddings; that
kind of grid, on this corpus, is how the defaults in ``app/services/clustering.py`` were chosen.

    .venv/bin/python bench/clustering.py [--quick] [--per-source N] [--sweep]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.services import clustering  # noqa: E402
from proxy_models import corpora  # noqa: E402


def sample_corpus(per_source: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``per_source`` documents drawn at random from each source (not the first ones, which share a prefix
    of file names), pooled and shuffled; returns texts and true source ids."""
    rng = np.random.default_rng(seed)
    docs: list[str] = []
    truth: list[int] = []
    for s, source in enumerate(corpora.SOURCES):
        pool = list(corpora.documents(source))
        pick = rng.choice(len(pool), size=min(per_source, len(pool)), replace=False)
        docs += [pool[i] for i in pick]
        truth += [s] * len(pick)
    order = rng.permutation(len(docs))
    return [docs[i] for i in order], np.asarray(truth)[order]


def sweep(docs: list[str], truth: np.ndarray, x: np.ndarray) -> None:
    print("\nARI over (initial K, merge threshold), same embeddings; columns = threshold")
    thresholds = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9)
    print("   K  " + "".join(f"{t:>12.2f}" for t in thresholds))
    for k in (16, 32, 64, 128):
        cells = []
        for t in thresholds:
            r = clustering.cluster_documents(docs, initial_k=k, merge_threshold=t, embeddings=x)
            cells.append(f"{adjusted_rand_score(truth, r.assignments):>7.3f} ({len(r.clusters):>2})")
        print(f"{k:>4}  " + "".join(f"{c:>12}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30 documents per source (< 60 s)")
    ap.add_argument("--per-source", type=int, default=None, help="documents per source (default 200)")
    ap.add_argument("--sweep", action="store_true", help="also print ARI over a grid of settings")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    per_source = args.per_source or (30 if args.quick else 200)

    docs, truth = sample_corpus(per_source, args.seed)
    print(f"corpus: {len(docs)} documents, {per_source} from each of {', '.join(corpora.SOURCES)}")
    t = time.perf_counter()
    clustering.load_encoder()
    print(f"encoder loaded in {time.perf_counter() - t:.1f} s (not counted in docs/s)")

    with tempfile.TemporaryDirectory() as cache_dir:  # cold cache: every document goes through the encoder
        result = clustering.cluster_documents(docs, seed=args.seed, cache_dir=cache_dir)
        t = time.perf_counter()
        x = clustering.embed(docs, cache_dir=cache_dir)
        warm_s = time.perf_counter() - t
    ari = adjusted_rand_score(truth, result.assignments)
    print(
        f"embedding: {result.embed_docs_per_s:.1f} docs/s cold; warm cache {len(docs) / warm_s:.0f} docs/s "
        f"({len(docs) / warm_s / result.embed_docs_per_s:.0f}x)"
    )
    print(
        f"clusters: {result.n_initial} initial → {result.n_after_merge} after merging → "
        f"{len(result.clusters)} after pruning"
    )
    print(f"\n{'size':>5}  {'majority source':<16} {'purity':>6}  label")
    for c in result.clusters:
        counts = np.bincount(truth[list(c.doc_indices)], minlength=len(corpora.SOURCES))
        print(
            f"{c.size:>5}  {corpora.SOURCES[int(np.argmax(counts))]:<16} {counts.max() / c.size:>6.2f}  "
            f"{c.label}"
        )
    print(f"\nadjusted Rand index vs the {len(corpora.SOURCES)} true sources: {ari:.3f}")
    if args.sweep:
        sweep(docs, truth, x)
    print(f"RESULT ari={ari:.3f} docs_per_s={result.embed_docs_per_s:.1f} clusters={len(result.clusters)}")


if __name__ == "__main__":
    main()
