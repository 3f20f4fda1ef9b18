"""Runs at any scale: filter by status, fidelity and origin; sort by loss or finish time; page; export
every match as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from tests.integration.helpers import external_spec, fake_losses


def _experiment(api: Any, auth: dict[str, str]) -> str:
    exp = api.post("/api/v1/experiments", json=external_spec(budget=3, parallelism=1), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    runs = []
    for i in range(30):
        w = {"web": (i + 1) / 31, "code": (30 - i) / 31}
        runs.append({"weights": w, "losses": fake_losses(w), "fidelity": "small" if i % 3 else "big"})
    assert api.post(f"{base}/runs/import", json={"runs": runs}, headers=auth).status_code == 201
    return base


def test_filters_sorts_and_pages(api: Any, auth: dict[str, str]) -> None:
    base = _experiment(api, auth)
    small = api.get(f"{base}/runs", params={"fidelity": "small", "limit": 500}, headers=auth).json()["items"]
    assert len(small) == 20 and {r["fidelity"] for r in small} == {"small"}
    imported = api.get(f"{base}/runs", params={"origin": "import", "limit": 500}, headers=auth).json()
    assert len(imported["items"]) == 30

    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"sort": "target_loss", "order": "asc", "limit": 7}
    while True:
        page = api.get(f"{base}/runs", params=params, headers=auth).json()
        seen += page["items"]
        if page["next_offset"] is None:
            break
        params["offset"] = page["next_offset"]
    losses = [r["target_loss"] for r in seen]
    assert len(seen) == 30 and losses == sorted(losses) and len({r["id"] for r in seen}) == 30

    # ids need not be consecutive: a planner pass may insert a run while the import's rows take theirs
    every = [
        r["id"]
        for r in api.get(
            f"{base}/runs", params={"origin": "import", "order": "desc", "limit": 500}, headers=auth
        ).json()["items"]
    ]
    newest = api.get(
        f"{base}/runs", params={"origin": "import", "order": "desc", "limit": 5}, headers=auth
    ).json()
    ids = [r["id"] for r in newest["items"]]
    assert len(every) == 30 and every == sorted(every, reverse=True)
    assert ids == every[:5] and newest["next_after"] == ids[-1]
    older = api.get(
        f"{base}/runs",
        params={"origin": "import", "order": "desc", "limit": 5, "after": ids[-1]},
        headers=auth,
    ).json()
    assert [r["id"] for r in older["items"]] == every[5:10]
    bad = api.get(f"{base}/runs", params={"sort": "weights"}, headers=auth)
    assert bad.status_code == 422


def test_csv_export_holds_every_matching_run(api: Any, auth: dict[str, str]) -> None:
    base = _experiment(api, auth)
    resp = api.get(f"{base}/runs", params={"format": "csv", "fidelity": "big"}, headers=auth)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    assert "attachment" in resp.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert len(rows) == 10 and {r["fidelity"] for r in rows} == {"big"}
    first = rows[0]
    weights = {d: float(first[f"weight_{d}"]) for d in ("web", "code", "law")}
    assert abs(sum(weights.values()) - 1) < 1e-9
    assert float(first["loss_web"]) == fake_losses({"web": weights["web"]})["web"]


def test_imports_are_free_unless_they_count_towards_the_budget(api: Any, auth: dict[str, str]) -> None:
    exp = api.post("/api/v1/experiments", json=external_spec(budget=10), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    w = {"web": 0.5, "code": 0.5}
    run = {"weights": w, "losses": fake_losses(w), "fidelity": "big"}
    api.post(f"{base}/runs/import", json={"runs": [run, run]}, headers=auth)
    assert api.get(base, headers=auth).json()["spent"] == 0
    charged = api.post(f"{base}/runs/import", json={"runs": [run, run], "count_budget": True}, headers=auth)
    assert charged.status_code == 201
    assert api.get(base, headers=auth).json()["spent"] == 2  # two target-fidelity runs
