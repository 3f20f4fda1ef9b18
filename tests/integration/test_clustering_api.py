"""An unlabeled corpus uploaded with `cluster` becomes labelled domains during preparation."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import wait_for

pytestmark = pytest.mark.slow


def test_unlabeled_corpus_is_split_into_domains(api, auth, settings_env) -> None:  # type: ignore[no-untyped-def]
    from proxy_models.corpora import documents, take
    from workers.execution import prepare_experiment

    docs = [d[:600] for d in take(documents("code"), max_docs=25) + take(documents("sports"), max_docs=25)]
    body = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode()
    spec = {
        "name": "pile",
        "cluster": {"initial_k": 8},
        "strategy": "climb",
        "fidelities": [{"preset": "xs", "tokens": 8000}],
    }
    exp = api.post("/api/v1/experiments", json=spec, headers=auth)
    assert exp.status_code == 201, exp.text
    base = f"/api/v1/experiments/{exp.json()['id']}"
    no_corpus = api.post(f"{base}/start", headers=auth)
    assert no_corpus.status_code == 409 and "unlabeled corpus" in no_corpus.json()["error"]["message"]
    wrong = api.put(f"{base}/domains/x/corpus", params={"filename": "a.jsonl"}, content=body, headers=auth)
    assert wrong.status_code == 404
    up = api.put(f"{base}/corpus", params={"filename": "pile.jsonl"}, content=body, headers=auth)
    assert up.status_code == 200 and up.json()["cluster"]["documents"] == 50
    assert api.post(f"{base}/start", headers=auth).json()["status"] == "preparing"

    outcome = prepare_experiment(exp.json()["id"])  # the task body the workers run
    assert outcome.status == "succeeded", api.get(base, headers=auth).json()["error"]

    data = api.get(base, headers=auth).json()
    assert data["status"] == "running" and data["cluster"]["n_clusters"] == len(data["domains"]) >= 2
    assert sum(d["documents"] for d in data["domains"]) == 50
    assert all(d["info"]["label"] and d["tokens"] > 0 for d in data["domains"])
    assert abs(sum(data["target"].values()) - 1) < 1e-9
    # the app's planner proposes climb's first round over the clusters
    wait_for(lambda: api.get(base, headers=auth).json()["run_counts"].get("queued", 0) > 0, "proposals")
    api.post(f"{base}/cancel", headers=auth)
