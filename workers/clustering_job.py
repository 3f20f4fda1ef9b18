"""The clustering step of a preparation: one unlabeled upload → domains of the experiment.

Runs outside any long transaction (embedding takes minutes on a CPU): progress and the liveness heartbeat
are written in short transactions, and the domains appear in one final commit — or not at all.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from pathlib import Path

from app.core.config import get_settings
from app.core.db import session_scope
from app.errors import InvalidInput
from app.models import Domain, Experiment, utcnow
from app.services.corpora import Limits
from app.services.corpora import documents as read_documents


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "cluster"


def split_into_domains(experiment_id: int) -> None:
    """Cluster the experiment's unlabeled corpus and store each cluster as a domain with its label."""
    from app.services.clustering import cluster_documents

    settings = get_settings()
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None and experiment.cluster is not None
        spec = dict(experiment.cluster)
        seed = experiment.seed
    stored = read_documents(Path(spec["path"]), ".jsonl", False, Limits.of(settings))
    docs = list(itertools.islice(stored, int(spec["max_documents"])))
    if len(docs) < 2:
        raise InvalidInput("clustering needs at least two documents", code="too_few_documents")
    last = [0.0]

    def on_progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] < 2.0 and done < total:
            return
        last[0] = time.monotonic()
        with session_scope() as s:
            exp = s.get(Experiment, experiment_id)
            if exp is not None:
                exp.cluster = {**(exp.cluster or {}), "progress": {"embedded": done, "total": total}}
                exp.heartbeat_at = utcnow()

    result = cluster_documents(
        docs,
        initial_k=min(int(spec["initial_k"]), len(docs)),
        min_cluster_frac=float(spec["min_cluster_frac"]),
        merge_threshold=float(spec["merge_threshold"]),
        seed=seed,
        cache_dir=settings.storage_dir / "embeddings",
        on_progress=on_progress,
    )
    out_dir = settings.storage_dir / "clusters" / f"experiment-{experiment_id}"
    out_dir.mkdir(parents=True, exist_ok=True)
    domains = []
    for i, cluster in enumerate(result.clusters):
        lines = [json.dumps({"text": docs[j]}, ensure_ascii=False) + "\n" for j in cluster.doc_indices]
        blob = "".join(lines).encode()
        path = out_dir / f"cluster-{i}.jsonl"
        path.write_bytes(blob)
        domains.append(
            Domain(
                name=f"c{i}-{_slug(cluster.label)}",
                position=i,
                path=str(path),
                sha256=hashlib.sha256(blob).hexdigest(),
                bytes=len(blob),
                documents=cluster.size,
                info={
                    "label": cluster.label,
                    "top_terms": list(cluster.top_terms),
                    "samples": list(cluster.samples),
                },
            )
        )
    with session_scope() as session:
        experiment = session.get(Experiment, experiment_id)
        assert experiment is not None
        experiment.domains = domains
        total = sum(d.bytes or 0 for d in domains)
        # An unlabeled pile's natural goal: loss on data like the pile itself, i.e. clusters by share of text.
        experiment.target = experiment.target or {d.name: (d.bytes or 0) / total for d in domains}
        experiment.cluster = {
            **(experiment.cluster or {}),
            "n_initial": result.n_initial,
            "n_clusters": len(domains),
            "embed_docs_per_s": result.embed_docs_per_s,
        }
