"""Dashboard JSON (what every plot draws), exports, and the pages' cookie login, on both DB backends."""

from __future__ import annotations

import sys
import types
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr

from tests.integration.helpers import error_code, external_spec, fake_losses, planner_idle, wait_for

DOMAINS = ("web", "code", "law")
ONLINE_STEPS = (10, 20, 30)
OOM = "RuntimeError: CUDA out of memory"


def populate(
    client: Any,
    auth: dict[str, str],
    *,
    n_big: int = 30,
    n_small: int = 8,
    seed: int = 0,
    finish: bool = False,
    **spec: Any,
) -> dict[str, Any]:
    """An external experiment with imported runs at two fidelities, a failed run, a told run and an online
    session, through any client with `post` and `get` (a TestClient here and in the browser tests)."""
    exp = client.post("/api/v1/experiments", json=external_spec(**spec), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    rng = np.random.default_rng(seed)
    runs = []
    for fidelity, n in (("small", n_small), ("big", n_big)):
        for w in rng.dirichlet(np.ones(len(DOMAINS)), n):
            weights = dict(zip(DOMAINS, map(float, w), strict=True))
            losses = {
                d: v + 0.5 * (fidelity == "small") + rng.normal(0, 0.02)
                for d, v in fake_losses(weights).items()
            }
            runs.append({"weights": weights, "losses": losses, "fidelity": fidelity})
    imported = client.post(f"{base}/runs/import", json={"runs": runs}, headers=auth)
    assert imported.status_code == 201, imported.text
    assert client.post(f"{base}/start", headers=auth).status_code == 200  # imports first: ids in order
    leased = client.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    failed = leased["run"]["id"]
    client.post(
        f"{base}/runs/{failed}/fail", json={"lease_token": leased["lease_token"], "error": OOM}, headers=auth
    )
    told = None
    while True:
        asked = client.post(f"{base}/ask", params={"wait": 30}, headers=auth)
        if asked.status_code != 200:
            break
        run = asked.json()["run"]
        told = told or run["id"]
        client.post(
            f"{base}/runs/{run['id']}/result",
            json={
                "lease_token": asked.json()["lease_token"],
                "losses": fake_losses(run["weights"]),
                "wall_s": 12.5,
            },
            headers=auth,
        )
        if not finish:
            break
    wait_for(
        lambda: (
            client.get(f"{base}/recommendation", headers=auth).status_code == 200 and planner_idle(exp["id"])
        ),
        "a refit and its fit plot",
    )
    online = f"{base}/online-sessions"
    sid = client.post(online, json={"strategy": "doremi"}, headers=auth).json()["id"]
    for step in ONLINE_STEPS:
        losses = {"web": 3.0 - step / 100, "code": 2.0, "law": 2.2}
        client.post(
            f"{online}/{sid}/update",
            headers=auth,
            json={"step": step, "losses": losses, "reference_losses": {d: 2.0 for d in DOMAINS}},
        )
    return {"id": exp["id"], "base": base, "runs": runs, "failed": failed, "told": told}


def test_dashboard_draws_every_plot_from_the_runs(api, auth) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth)
    d = api.get(f"{exp['base']}/dashboard", headers=auth).json()
    assert d["domains"] == list(DOMAINS) and d["experiment"]["status"] == "running"
    assert d["experiment"]["live"] and d["experiment"]["runs_done"] == 8 + 30 + 1 == d["runs_used"]
    assert d["experiment"]["run_counts"]["failed"] == 1

    history = d["history"]
    assert history["target_fidelity"] == "big"
    assert [s["fidelity"] for s in history["series"]] == ["small", "big"]
    orders = sorted(o for s in history["series"] for o in s["order"])
    assert orders == list(range(1, 40))  # every succeeded run once, in creation order
    big = history["series"][1]
    imported_big = [r for r in exp["runs"] if r["fidelity"] == "big"]
    expected = [0.5 * r["losses"]["web"] + 0.5 * r["losses"]["code"] for r in imported_big]
    assert big["target_loss"][:30] == pytest.approx(expected)
    assert history["best_order"][-1] == big["order"][-1]  # the best-so-far line is drawn by its corners
    corner = np.searchsorted(history["best_order"], big["order"], side="right") - 1
    best_at = np.asarray(history["best_loss"])[corner]
    assert best_at.tolist() == pytest.approx(np.minimum.accumulate(big["target_loss"]).tolist())
    assert d["runs_finished"] == d["runs_used"]  # no sampling below MAX_PLOT_RUNS

    mix = d["mixture"]
    rec = api.get(f"{exp['base']}/recommendation", headers=auth).json()
    assert mix["recommended"] == pytest.approx([rec["weights"][n] for n in DOMAINS])
    assert mix["natural"] == pytest.approx([10 / 12, 1 / 12, 1 / 12])
    assert mix["uniform"] == pytest.approx([1 / 3] * 3)
    assert mix["predicted_loss"] == rec["predicted_loss"] and mix["recommendation_id"] == rec["id"]

    fit = d["fit"]
    assert fit["note"] is None and fit["model"] == "lightgbm" and fit["folds"] == 5
    n = len(fit["run_ids"])  # the latest refit's history: refits follow results, not GETs
    assert n in (30, 31) and fit["run_ids"] == big["run_ids"][:n] and len(fit["predicted"]) == n
    assert fit["actual"] == pytest.approx(big["target_loss"][:n])
    assert fit["spearman"] == pytest.approx(spearmanr(fit["actual"], fit["predicted"])[0])
    assert fit["spearman"] > 0.5  # the loss is linear in the weights plus a little noise

    w = d["weights"]
    assert w["fidelity"] == "big" and w["run_ids"] == big["run_ids"]
    assert np.allclose(np.asarray(w["columns"]).sum(axis=0), 1.0)
    assert w["target_loss"] == big["target_loss"]

    heat = d["heatmap"]
    assert len(heat["run_ids"]) == len(heat["losses"]) == 39 and all(len(row) == 3 for row in heat["losses"])
    first = exp["runs"][0]["losses"]
    assert heat["losses"][0] == pytest.approx([first[n] for n in DOMAINS])
    assert heat["labels"][0] == f"#{heat['run_ids'][0]} · small"

    (session,) = d["online"]
    assert session["strategy"] == "doremi" and session["steps"] == [0, *ONLINE_STEPS]
    assert np.allclose(np.asarray(session["columns"]).sum(axis=0), 1.0)
    assert session["columns"][0][-1] > session["columns"][0][0]  # web has the excess loss: it gains weight


def test_fit_is_out_of_fold_and_waits_for_enough_runs(api, auth) -> None:  # type: ignore[no-untyped-def]
    few = populate(api, auth, n_big=2, n_small=0)
    fit = api.get(f"{few['base']}/dashboard", headers=auth).json()["fit"]
    assert fit["model"] is None and "needs 5 succeeded runs" in fit["note"] and fit["actual"] == []

    small = populate(api, auth, n_big=12, n_small=0, seed=1)
    fit = api.get(f"{small['base']}/dashboard", headers=auth).json()["fit"]
    assert fit["model"] == "linear"  # too few runs for boosted trees
    X = np.asarray([[r["weights"][n] for n in DOMAINS] for r in small["runs"]])
    y = np.asarray(fit["actual"][:12])
    design = np.c_[X, np.ones(12)]
    in_sample = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    oof_error = np.mean(np.abs(np.asarray(fit["predicted"][:12]) - y))
    assert oof_error > np.mean(np.abs(in_sample - y))  # held-out predictions are honestly worse
    assert fit["mae"] == pytest.approx(np.mean(np.abs(np.asarray(fit["predicted"]) - fit["actual"])))


def _planner_settled(experiment_id: int) -> bool:
    """No planning pass requested or under way: the experiment's runs stay as they are until the next tell."""
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.models import PlannerJob

    with session_scope() as session:
        jobs = session.scalars(select(PlannerJob).where(PlannerJob.experiment_id == experiment_id)).all()
        return all(j.requested == j.done and j.lease_token is None for j in jobs)


def test_runs_table_and_run_detail(api, auth) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth, n_big=6, n_small=2)
    wait_for(
        lambda: _planner_settled(exp["id"]), "the planner to settle"
    )  # else a proposal may land between reads
    table = api.get(f"{exp['base']}/dashboard/runs", headers=auth).json()
    ids = [r["id"] for r in table["rows"]]
    assert ids == sorted(ids, reverse=True) and table["total"] == len(ids)
    by_id = {r["id"]: r for r in table["rows"]}
    failed = by_id[exp["failed"]]
    assert failed["status"] == "failed" and failed["error"] == OOM
    assert failed["attempts"] == 1 and failed["duration_s"] is not None and failed["duration_s"] >= 0
    assert by_id[exp["told"]]["status"] == "succeeded" and by_id[exp["told"]]["target_loss"] is not None
    limited = api.get(f"{exp['base']}/dashboard/runs?limit=3", headers=auth).json()
    assert [r["id"] for r in limited["rows"]] == ids[:3] and limited["total"] == len(ids)
    assert table["live"] == []  # nothing is training

    detail = api.get(f"{exp['base']}/dashboard/runs/{exp['told']}", headers=auth).json()
    assert detail["run"]["id"] == exp["told"] and detail["domains"] == list(DOMAINS)
    assert set(detail["run"]["losses"]) == set(DOMAINS) and detail["trajectory"] is None
    from app.core.db import session_scope
    from app.models import Run

    with session_scope() as session:  # what the trainer stores for a worker run: (step, weights) pairs
        session.get(Run, exp["told"]).extra = {
            "trajectory": [[0, {"web": 0.5, "code": 0.5}], [50, {"web": 0.2, "code": 0.3, "law": 0.5}]]
        }
    traj = api.get(f"{exp['base']}/dashboard/runs/{exp['told']}", headers=auth).json()["trajectory"]
    assert traj == {"steps": [0, 50], "columns": [[0.5, 0.2], [0.5, 0.3], [0.0, 0.5]]}
    missing = api.get(f"{exp['base']}/dashboard/runs/999999", headers=auth)
    assert missing.status_code == 404 and error_code(missing) == "run_not_found"


def test_runs_table_pages_sorts_and_filters_in_sql(api, auth) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth, n_big=12, n_small=5)
    table = f"{exp['base']}/dashboard/runs"
    done = {"status": "succeeded"}  # a set the planner does not grow meanwhile (it proposes queued runs)
    everything = api.get(f"{exp['base']}/runs", params={**done, "limit": 500}, headers=auth).json()["items"]
    pages, offset = [], 0
    while True:
        page = api.get(table, params={**done, "limit": 5, "offset": offset}, headers=auth).json()
        assert page["total"] == len(everything) and page["offset"] == offset
        if not page["rows"]:
            break
        pages += [r["id"] for r in page["rows"]]
        offset += 5
    assert pages == sorted((r["id"] for r in everything), reverse=True)  # newest first, each run once

    by_loss = api.get(table, params={"sort": "target_loss", "order": "asc", "limit": 4}, headers=auth).json()
    losses = sorted(r["target_loss"] for r in everything if r["target_loss"] is not None)
    assert [r["target_loss"] for r in by_loss["rows"]] == losses[:4]
    small = api.get(table, params={"fidelity": "small", "origin": "import"}, headers=auth).json()
    assert small["total"] == 5 and {r["fidelity"] for r in small["rows"]} == {"small"}
    failed = api.get(table, params={"status": "failed"}, headers=auth).json()
    assert failed["total"] == 1 and failed["rows"][0]["id"] == exp["failed"]
    bad = api.get(table, params={"sort": "weights"}, headers=auth)
    assert bad.status_code == 422 and "sort" in bad.text


def test_plots_sample_evenly_and_say_so(api, auth, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.services import dashboard

    exp = populate(api, auth, n_big=30, n_small=8)
    full = api.get(f"{exp['base']}/dashboard", headers=auth).json()
    monkeypatch.setattr(dashboard, "MAX_PLOT_RUNS", 10)
    d = api.get(f"{exp['base']}/dashboard", headers=auth).json()
    assert d["runs_finished"] == full["runs_finished"] == 39
    assert d["runs_used"] == len(d["heatmap"]["run_ids"]) <= 10
    orders = sorted(o for s in d["history"]["series"] for o in s["order"])
    assert orders[0] == 1 and orders[-1] == 39  # spread over the whole history, not the latest runs
    assert max(np.diff(orders)) <= 2 * 38 / 9 + 1
    big = full["history"]["series"][1]
    best_id = big["run_ids"][int(np.argmin(big["target_loss"]))]
    assert best_id in d["weights"]["run_ids"]  # the best run is always drawn
    assert d["history"]["best_order"] == full["history"]["best_order"]  # the line uses every run
    assert d["history"]["best_loss"] == full["history"]["best_loss"]


def test_a_cached_dashboard_follows_every_change(api, auth) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth, n_big=8, n_small=0)
    url = f"{exp['base']}/dashboard"
    first = api.get(url, headers=auth).json()
    again = api.get(url, headers=auth).json()
    assert {**again, "experiment": None} == {**first, "experiment": None}  # no run finished: the same plots
    asked = api.post(f"{exp['base']}/ask", params={"wait": 30}, headers=auth).json()
    body = {"lease_token": asked["lease_token"], "losses": fake_losses(asked["run"]["weights"])}
    assert api.post(f"{exp['base']}/runs/{asked['run']['id']}/result", json=body, headers=auth).is_success
    told = api.get(url, headers=auth).json()
    assert told["runs_used"] == first["runs_used"] + 1
    assert asked["run"]["id"] in told["history"]["series"][-1]["run_ids"]
    online = f"{exp['base']}/online-sessions"
    sid = api.get(online, headers=auth).json()[0]["id"]
    update = {"step": 40, "losses": {d: 2.0 for d in DOMAINS}, "reference_losses": {d: 2.0 for d in DOMAINS}}
    assert api.post(f"{online}/{sid}/update", json=update, headers=auth).is_success
    assert api.get(url, headers=auth).json()["online"][0]["steps"][-1] == 40
    renamed = api.patch(exp["base"], json={"name": "renamed"}, headers=auth)
    assert renamed.is_success and api.get(url, headers=auth).json()["experiment"]["name"] == "renamed"


def test_recommendations_carry_their_warnings_to_the_api_and_dashboard(api, auth) -> None:  # type: ignore[no-untyped-def]
    few = populate(api, auth, n_big=5, n_small=0)  # 6 runs for 3 domains: too few to trust
    rec = api.get(f"{few['base']}/recommendation", headers=auth).json()
    codes = [w["code"] for w in rec["warnings"]]
    assert "few_runs" in codes and all(w["message"] for w in rec["warnings"])
    mix = api.get(f"{few['base']}/dashboard", headers=auth).json()["mixture"]
    assert mix["warnings"] == [w["message"] for w in rec["warnings"]]
    many = populate(api, auth, n_big=40, n_small=0, seed=3)
    assert api.get(f"{many['base']}/recommendation", headers=auth).json()["warnings"] == []


def test_exports_match_the_recommendation(api, auth, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth, n_big=6, n_small=0)
    rec = api.get(f"{exp['base']}/recommendation", headers=auth).json()
    as_json = api.get(f"{exp['base']}/dashboard/export?format=json", headers=auth)
    assert as_json.headers["content-disposition"].startswith("attachment;")
    assert as_json.json()["weights"] == pytest.approx(rec["weights"])
    as_yaml = api.get(f"{exp['base']}/dashboard/export?format=yaml", headers=auth)
    assert yaml.safe_load(as_yaml.text)["weights"] == pytest.approx(rec["weights"])

    snippet = api.get(f"{exp['base']}/dashboard/export?format=hf", headers=auth).text
    calls: dict[str, Any] = {}
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda kind, data_files, split, streaming: data_files  # type: ignore[attr-defined]
    fake.interleave_datasets = lambda parts, **kw: calls.update(parts=parts, **kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    exec(compile(snippet, "snippet.py", "exec"), {})
    used = {n: w for n, w in rec["weights"].items() if w > 0}
    assert calls["parts"] == [f"{n}.jsonl" for n in used]
    assert calls["probabilities"] == pytest.approx(list(used.values())) and sum(calls["probabilities"]) == 1

    bad = api.get(f"{exp['base']}/dashboard/export?format=csv", headers=auth)
    assert bad.status_code == 422
    draft = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
    none_yet = api.get(f"/api/v1/experiments/{draft['id']}/dashboard/export", headers=auth)
    assert none_yet.status_code == 404 and error_code(none_yet) == "no_recommendation"
    empty = api.get(f"/api/v1/experiments/{draft['id']}/dashboard", headers=auth).json()
    assert empty["mixture"] is None and empty["history"]["series"] == [] and empty["heatmap"]["run_ids"] == []


def test_other_projects_see_nothing(api, auth, other_key) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth, n_big=6, n_small=0)
    other = {"Authorization": f"Bearer {other_key}"}
    for path in ("dashboard", "dashboard/runs", f"dashboard/runs/{exp['told']}", "dashboard/export"):
        resp = api.get(f"{exp['base']}/{path}", headers=other)
        assert resp.status_code == 404 and error_code(resp) == "experiment_not_found", path
        assert api.get(f"{exp['base']}/{path}").status_code == 401
    api.cookies.set("mixlab_key", other_key)
    page = api.get(f"/ui/experiments/{exp['id']}", follow_redirects=False)
    assert page.status_code == 404 and "not found in this project" in page.text
    assert api.get(f"/ui/experiments/{exp['id']}/runs/{exp['told']}").status_code == 404


def test_key_form_sets_a_safe_cookie_and_pages_need_it(api, auth, key) -> None:  # type: ignore[no-untyped-def]
    exp = populate(api, auth, n_big=6, n_small=0)
    page = f"/ui/experiments/{exp['id']}"
    assert api.get("/", follow_redirects=False).headers["location"] == "/ui"
    gate = api.get(page, follow_redirects=False)
    assert gate.status_code == 303 and gate.headers["location"] == f"/ui/login?next={page}"
    wrong = api.post("/ui/login", data={"key": "nope", "next": page}, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers
    ok = api.post("/ui/login", data={"key": key, "next": page}, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == page
    cookie = ok.headers["set-cookie"].lower()
    assert cookie.startswith("mixlab_key=") and "httponly" in cookie and "samesite=lax" in cookie
    assert api.get(page).status_code == 200
    listing = api.get("/ui")
    assert listing.status_code == 200 and f'href="/ui/experiments/{exp["id"]}"' in listing.text
    assert api.get(f"{exp['base']}/dashboard").status_code == 200  # the API takes the cookie too
    away = api.post("/ui/login", data={"key": key, "next": "//evil.example/x"}, follow_redirects=False)
    assert away.headers["location"] == "/ui"  # no open redirect
    api.post("/ui/logout", follow_redirects=False)
    assert api.get(page, follow_redirects=False).status_code == 303


def test_plotly_is_served_locally(api) -> None:  # type: ignore[no-untyped-def]
    js = api.get("/ui/static/plotly.min.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert len(js.content) > 1_000_000  # the real bundle, not a stub
    assert api.get("/ui/static/experiment.js").status_code == 200
    assert api.get("/ui/static/..%2Froutes.py").status_code == 404
