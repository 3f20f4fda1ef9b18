"""External pipelines: ask → train elsewhere → tell, leases, failures, retries, bulk import."""

from __future__ import annotations

import pytest

from tests.integration.helpers import error_code, expire_and_reap, external_spec, fake_losses, wait_for


def _start(api, auth, **over):  # type: ignore[no-untyped-def]
    exp = api.post("/api/v1/experiments", json=external_spec(**over), headers=auth).json()
    assert api.post(f"/api/v1/experiments/{exp['id']}/start", headers=auth).json()["status"] == "running"
    return f"/api/v1/experiments/{exp['id']}"


def test_ask_tell_until_budget_then_final_recommendation(api, auth) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth, budget=5, parallelism=2)
    told = 0
    while True:
        resp = api.post(f"{base}/ask", params={"wait": 30}, headers=auth)
        if resp.status_code == 409:
            assert error_code(resp) == "budget_spent"
            break
        trial, token = resp.json()["run"], resp.json()["lease_token"]
        assert abs(sum(trial["weights"].values()) - 1) < 1e-9 and trial["fidelity"] == "big"
        body = {"lease_token": token, "losses": fake_losses(trial["weights"])}
        out = api.post(f"{base}/runs/{trial['id']}/result", json=body, headers=auth)
        assert out.status_code == 200 and out.json()["status"] == "succeeded"
        told += 1
    assert told == 5
    exp = api.get(base, headers=auth).json()
    assert exp["status"] == "done" and exp["run_counts"] == {"succeeded": 5} and exp["spent"] == 5
    rec = api.get(f"{base}/recommendation", headers=auth).json()
    assert rec["final"] and rec["n_runs"] == 5 and abs(sum(rec["weights"].values()) - 1) < 1e-6
    best = min(r["target_loss"] for r in api.get(f"{base}/runs", headers=auth).json()["items"])
    assert rec["predicted_loss"] == best  # random search recommends its best observed mixture


def test_admire_spends_on_both_fidelities_and_learns_the_cheap_runs_offset(api, auth) -> None:  # type: ignore[no-untyped-def]
    """Multi-fidelity BO through ask/tell: the small proxy reads 0.3 higher on every domain."""
    base = _start(api, auth, strategy="admire", budget=6, parallelism=2)
    asked = []
    while (resp := api.post(f"{base}/ask", params={"wait": 30}, headers=auth)).status_code != 409:
        trial, token = resp.json()["run"], resp.json()["lease_token"]
        shift = 0.3 if trial["fidelity"] == "small" else 0.0
        losses = {d: v + shift for d, v in fake_losses(trial["weights"]).items()}
        body = {"lease_token": token, "losses": losses}
        assert api.post(f"{base}/runs/{trial['id']}/result", json=body, headers=auth).is_success
        asked.append(trial["fidelity"])
    assert error_code(resp) == "budget_spent"
    assert len(asked) > 8 and {"small", "big"} == set(asked)  # past the 8-run first design, both sizes
    rec = api.get(f"{base}/recommendation", headers=auth).json()
    assert rec["strategy"] == "admire" and rec["final"] and rec["std"] is not None
    assert rec["diagnostics"]["offset_small"] == pytest.approx(0.3, abs=0.05)
    assert rec["weights"]["law"] < 0.1  # the target is web + code: law only dilutes it


def test_parallel_asks_get_distinct_runs_and_wait_when_all_taken(api, auth) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth, budget=10, parallelism=2)
    a = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()["run"]["id"]
    b = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()["run"]["id"]
    assert a != b
    busy = api.post(f"{base}/ask", headers=auth)
    assert busy.status_code == 409 and error_code(busy) == "no_run_ready" and "Retry-After" in busy.headers


def test_bad_results_are_rejected_and_nothing_changes(api, auth) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth)
    asked = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    run, token = asked["run"], asked["lease_token"]
    url = f"{base}/runs/{run['id']}/result"
    cases = [
        ({"losses": {"web": 2.0, "code": 2.0, "books": 1.0}}, 422, "unknown_domain"),
        ({"losses": {"web": 2.0}}, 422, "missing_losses"),
        ({"losses": {"web": "NaN", "code": 2.0}}, 422, "invalid_input"),
        ({"losses": {"web": 2.0, "code": 2.0}, "extra": 1}, 422, "invalid_input"),
        ({"losses": {"web": 2.0, "code": 1e308}}, 422, "invalid_input"),
        ({"losses": {"web": 2.0, "code": 0.0}}, 422, "invalid_input"),
        ({"losses": {"web": 2.0, "code": -1.0}}, 422, "invalid_input"),
    ]
    for body, status, code in cases:
        resp = api.post(url, json={"lease_token": token, **body}, headers=auth)
        assert (resp.status_code, error_code(resp)) == (status, code), resp.text
    no_token = api.post(url, json={"losses": {"web": 2.0, "code": 2.5}}, headers=auth)
    assert no_token.status_code == 422 and "lease_token" in no_token.json()["error"]["message"]
    assert api.get(f"{base}/runs/{run['id']}", headers=auth).json()["status"] == "running"
    ok = api.post(url, json={"lease_token": token, "losses": {"web": 2.0, "code": 2.5}}, headers=auth)
    assert ok.status_code == 200
    again = api.post(url, json={"lease_token": token, "losses": {"web": 2.0, "code": 2.5}}, headers=auth)
    assert again.status_code == 409 and error_code(again) == "bad_status"


def test_expired_lease_returns_run_to_pool(api, auth, settings_env) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth)
    asked = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    run_id, token = asked["run"]["id"], asked["lease_token"]
    beat = api.post(
        f"{base}/runs/{run_id}/heartbeat", json={"lease_token": token, "progress": {"step": 10}}, headers=auth
    ).json()
    assert beat["progress"] == {"step": 10}
    expire_and_reap(run_id)
    run = api.get(f"{base}/runs/{run_id}", headers=auth).json()
    assert run["status"] == "queued" and run["error"].startswith("lost")
    again = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    assert again["run"]["id"] == run_id and again["run"]["attempts"] == 2
    assert again["lease_token"] != token


def test_a_stale_lease_is_fenced_off_and_the_new_lessee_wins(api, auth, settings_env) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth)
    first = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    run_id = first["run"]["id"]
    expire_and_reap(run_id)
    second = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    assert second["run"]["id"] == run_id
    url = f"{base}/runs/{run_id}"
    losses = fake_losses(first["run"]["weights"])
    for path, body in [
        ("heartbeat", {"progress": {"step": 1}}),
        ("fail", {"error": "stale"}),
        ("result", {"losses": losses}),
    ]:
        stale = api.post(f"{url}/{path}", json={"lease_token": first["lease_token"], **body}, headers=auth)
        assert stale.status_code == 409 and error_code(stale) == "lease_lost", (path, stale.text)
    assert api.get(url, headers=auth).json()["status"] == "running"  # the stale calls changed nothing
    told = api.post(
        f"{url}/result", json={"lease_token": second["lease_token"], "losses": losses}, headers=auth
    )
    assert told.status_code == 200 and told.json()["status"] == "succeeded"
    late = api.post(
        f"{url}/result", json={"lease_token": first["lease_token"], "losses": losses}, headers=auth
    )
    assert late.status_code == 409 and error_code(late) == "lease_lost"


def test_failed_run_can_be_retried(api, auth) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth)
    asked = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    run_id = asked["run"]["id"]
    failed = api.post(
        f"{base}/runs/{run_id}/fail",
        json={"lease_token": asked["lease_token"], "error": "CUDA OOM"},
        headers=auth,
    ).json()
    assert failed["status"] == "failed" and failed["error"] == "CUDA OOM"
    retried = api.post(f"{base}/runs/{run_id}/retry", headers=auth).json()
    assert retried["status"] == "queued" and retried["error"] is None
    assert api.post(f"{base}/runs/{run_id}/retry", headers=auth).status_code == 409


def test_import_runs_feeds_the_strategy_and_costs_no_budget(api, auth) -> None:  # type: ignore[no-untyped-def]
    base = _start(api, auth, strategy="regmix", budget=1, parallelism=1)
    runs = []
    for i in range(12):
        w = {"web": (i + 1) / 13, "code": (12 - i) / 26, "law": (12 - i) / 26}
        runs.append({"weights": w, "losses": fake_losses(w)})
    out = api.post(f"{base}/runs/import", json={"runs": runs}, headers=auth)
    assert out.status_code == 201 and out.json()["imported"] == 12
    spent = api.get(base, headers=auth).json()["spent"]  # the planner may propose meanwhile: read it first
    items = api.get(f"{base}/runs", params={"limit": 100}, headers=auth).json()["items"]
    proposed = [r for r in items if r["origin"] != "import"]  # at most the budget's one run
    assert len(items) - len(proposed) == 12 and spent <= len(proposed) <= 1
    bad = api.post(
        f"{base}/runs/import",
        json={"runs": [{"weights": {"web": 0.5, "code": 0.6}, "losses": {}}]},
        headers=auth,
    )
    assert bad.status_code == 422 and "sum to 1.1" in bad.json()["error"]["message"]
    unknown = [{"weights": {"web": 0.5, "xyz": 0.5}, "losses": {"web": 1.0, "code": 1.0}}]
    assert (
        error_code(api.post(f"{base}/runs/import", json={"runs": unknown}, headers=auth)) == "unknown_domain"
    )
    imported = api.get(f"{base}/runs", params={"limit": 100}, headers=auth).json()["items"]
    assert sum(r["origin"] == "import" for r in imported) == 12


def test_ask_on_worker_experiment_is_rejected(api, auth) -> None:  # type: ignore[no-untyped-def]
    spec = external_spec(executor="worker", fidelities=[{"preset": "xs"}])
    exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
    resp = api.post(f"/api/v1/experiments/{exp['id']}/ask", headers=auth)
    assert resp.status_code == 409 and error_code(resp) == "bad_executor"
    start = api.post(f"/api/v1/experiments/{exp['id']}/start", headers=auth)
    assert start.status_code == 409 and error_code(start) == "missing_corpus"


def test_remembered_experiments_lease_and_store_in_one_statement_as_the_general_path_does(  # type: ignore[no-untyped-def]
    api, auth, settings_env
) -> None:
    """An experiment's first ask goes the general (ORM) way and teaches the process what never changes
    about it; later asks and tells take one statement each and answer the same, errors included: a
    wrong key still gets 401 before any loss is judged (no domain names leak), a stale lease 409."""
    from app.services.ask_tell import _remembered

    spec = external_spec(budget=6, parallelism=3)
    base = _start(api, auth, **spec)
    experiment_id = int(base.rsplit("/", 1)[1])
    first = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    facts = _remembered.get(experiment_id)
    assert facts is not None and facts.names == ("web", "code", "law")
    second = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()  # one statement
    assert second["run"].keys() == first["run"].keys() and second["run"]["status"] == "running"
    assert second["run"]["id"] != first["run"]["id"] and second["lease_token"] != first["lease_token"]
    assert second["run"]["weights"].keys() == first["run"]["weights"].keys()

    url = f"{base}/runs/{second['run']['id']}/result"
    wrong = {"Authorization": "Bearer mlx_not-a-key"}
    bad_domain = {"lease_token": second["lease_token"], "losses": {"nope": 1.0}}
    resp = api.post(url, json=bad_domain, headers=wrong)
    assert resp.status_code == 401 and "web" not in resp.text
    resp = api.post(url, json=bad_domain, headers=auth)
    assert resp.status_code == 422 and error_code(resp) == "unknown_domain"
    good = {"lease_token": second["lease_token"], "losses": fake_losses(second["run"]["weights"])}
    resp = api.post(url, json={**good, "lease_token": first["lease_token"]}, headers=auth)
    assert resp.status_code == 409 and error_code(resp) == "lease_lost"
    assert api.post(url, json=good, headers=wrong).status_code == 401
    told = api.post(url, json=good, headers=auth)
    assert told.status_code == 200 and told.json()["status"] == "succeeded"
    costs = {f["name"]: f["cost"] for f in spec["fidelities"]}
    assert told.json()["cost"] == costs[second["run"]["fidelity"]]  # computed in the statement
    assert told.json()["target_loss"] == pytest.approx(
        sum(w * good["losses"][d] for d, w in spec["target"].items())
    )
    again = api.post(url, json=good, headers=auth)
    assert again.status_code == 409 and error_code(again) == "bad_status"
    stored = api.get(f"{base}/runs/{second['run']['id']}", headers=auth).json()
    assert stored["losses"] == good["losses"] and stored["status"] == "succeeded"


def test_a_new_experiment_that_reuses_a_deleted_ones_id_is_not_taken_for_it(  # type: ignore[no-untyped-def]
    api, auth, settings_env
) -> None:
    """SQLite hands a deleted experiment's id to the next one: what the process remembered of the old
    experiment (its domains) must not shape the new one's answers."""
    if not settings_env["MIXLAB_DATABASE_URL"].startswith("sqlite"):
        pytest.skip("PostgreSQL never reuses an id")
    old = _start(api, auth)
    api.post(f"{old}/ask", params={"wait": 30}, headers=auth).raise_for_status()  # remembered now
    assert api.post(f"{old}/cancel", headers=auth).is_success
    assert api.delete(old, headers=auth).status_code == 204
    domains = [{"name": n, "tokens": 10**9} for n in ("news", "forum", "web", "code")]
    new = _start(api, auth, domains=domains, target={"news": 1.0})
    assert new == old  # the id came back

    def queued() -> list[object]:  # so that the first ask leases at once, through what was remembered
        return list(api.get(f"{new}/runs", params={"status": "queued"}, headers=auth).json()["items"])

    wait_for(queued, "a proposed run of the new experiment")
    asked = api.post(f"{new}/ask", params={"wait": 30}, headers=auth)
    assert asked.status_code == 200 and set(asked.json()["run"]["weights"]) == {d["name"] for d in domains}
    again = api.post(f"{new}/ask", params={"wait": 30}, headers=auth)  # now from the new experiment's facts
    assert again.status_code == 200 and set(again.json()["run"]["weights"]) == {d["name"] for d in domains}
