"""Scale prediction: a done experiment trains a ladder (presets × token budgets) for its recommended,
natural and uniform mixtures through the normal run queue, fits a law per mixture and reports the loss
at the target scale on the recommendation. Real proxy training at tiny budgets; the task bodies are the
ones Celery and the embedded worker run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import error_code, external_spec, upload_corpora, wait_for

# 4k–16k tokens: a few steps each. target_tokens here, not on the experiment: there it would also cap the
# recommendation by the (tiny) corpora's epochs.
TINY_LADDER = {"presets": ["xs", "s"], "token_scales": [0.004, 0.008], "target_tokens": 2_000_000_000}


def _train_queued(api: Any, base: str, auth: dict[str, str]) -> int:
    from workers.execution import execute_run

    queued = api.get(f"{base}/runs", params={"status": "queued", "limit": 100}, headers=auth).json()["items"]
    for run in queued:
        assert execute_run(run["id"]).status == "succeeded"
    return len(queued)


@pytest.fixture
def done_experiment(api: Any, auth: dict[str, str], tmp_path: Path) -> str:
    """A worker experiment over two real domains, searched to the end with tiny xs runs."""
    from workers.execution import prepare_experiment

    spec = {
        "name": "ladder",
        "domains": [{"name": "code"}, {"name": "legal"}],
        "strategy": "random",
        "fidelities": [{"preset": "xs", "tokens": 4096}],
        "budget": 2,
        "parallelism": 2,
        "target_params": 100_000_000,
    }
    exp = api.post("/api/v1/experiments", json=spec, headers=auth)
    assert exp.status_code == 201, exp.text
    base = f"/api/v1/experiments/{exp.json()['id']}"
    upload_corpora(api, base, auth, tmp_path, max_chars=40_000)
    assert api.post(f"{base}/start", headers=auth).status_code == 200
    assert prepare_experiment(exp.json()["id"]).status == "succeeded"

    def searched() -> bool:
        _train_queued(api, base, auth)
        exp = api.get(base, headers=auth).json()
        assert exp["status"] in ("running", "done"), exp["error"]
        return exp["status"] == "done"

    wait_for(searched, "the search to finish", timeout=120, every=0.2)
    return base


def test_ladder_runs_through_the_queue_and_the_recommendation_carries_the_predicted_loss(
    api: Any, auth: dict[str, str], done_experiment: str
) -> None:
    base = done_experiment
    before = api.get(base, headers=auth).json()
    recs_before = api.get(f"{base}/recommendations", headers=auth).json()["items"]
    started = api.post(f"{base}/scale-prediction", json=TINY_LADDER, headers=auth)
    assert started.status_code == 202, started.text
    pred = started.json()
    assert pred["status"] == "running" and set(pred["mixtures"]) == {"recommended", "natural", "uniform"}
    assert [(r["preset"], r["tokens"]) for r in pred["rungs"]] == [
        ("xs", 4096),
        ("xs", 8192),
        ("s", 8192),
        ("s", 16384),
    ]
    assert pred["runs"] == {"queued": 12} and pred["cost_units"] > 0
    assert pred["predictions"] == {}
    assert api.get(base, headers=auth).json()["spent"] == pytest.approx(before["spent"] + pred["cost_units"])
    again = api.post(f"{base}/scale-prediction", json=TINY_LADDER, headers=auth)
    assert again.status_code == 409 and error_code(again) == "scale_prediction_running"
    assert api.get(f"{base}/recommendation", headers=auth).json()["predicted_target_loss"] is None
    assert api.get(f"{base}/dashboard", headers=auth).json()["experiment"]["live"] is True  # ladder trains

    assert _train_queued(api, base, auth) == 12
    done = api.get(f"{base}/scale-prediction", headers=auth).json()
    assert done["status"] == "done", done
    assert done["runs"] == {"succeeded": 12} and len(done["points"]) == 12
    assert done["exponents"] in ("shared", "separate") and set(done["laws"]) == set(done["mixtures"])
    assert done["form"] in ("additive", "joint")  # two token budgets per preset: no plateau form,
    assert done["warnings"] == []  # and no bend to warn of
    assert done["backtest_rel_err"] > 0  # four rungs: the top one is predicted from the other three
    for p in done["predictions"].values():
        assert p["low"] <= p["loss"] <= p["high"] and p["params"] == 100_000_000
    # The larger rungs learn more: the law sees the loss fall with tokens.
    recommended = sorted((p["cost"], p["loss"]) for p in done["points"] if p["mixture"] == "recommended")
    assert recommended[-1][1] < recommended[0][1]

    plot = api.get(f"{base}/dashboard/scale", headers=auth).json()
    assert plot["status"] == "done" and plot["runs_done"] == plot["runs_total"] == 12
    assert plot["backtest_rel_err"] == done["backtest_rel_err"]
    for series in plot["series"]:
        assert len(series["compute"]) == 4 and len(series["curve_loss"]) > 10
        assert series["curve_compute"][-1] == pytest.approx(series["target_compute"])
        assert series["curve_loss"][-1] == pytest.approx(series["predicted"])
        assert series["low"] <= series["predicted"] <= series["high"]
    summary = api.get(f"{base}/dashboard", headers=auth).json()["experiment"]
    assert summary["live"] is False

    rec = api.get(f"{base}/recommendation", headers=auth).json()
    assert rec["predicted_target_loss"] == {
        **done["predictions"]["recommended"],
        "tokens": 2_000_000_000,
        "scale_prediction_id": done["id"],
    }
    after = api.get(base, headers=auth).json()
    assert after["status"] == "done"  # the ladder never reopens the search
    assert after["best_loss"] == before["best_loss"]  # ladder runs are not search results
    assert api.get(f"{base}/recommendations", headers=auth).json()["items"] == recs_before  # no refits


def test_bad_ladders_are_refused_and_nothing_is_stored(
    api: Any, auth: dict[str, str], done_experiment: str
) -> None:
    base = done_experiment
    for body, status, code in [
        ({**TINY_LADDER, "target_tokens": None}, 422, "target_scale_unknown"),
        ({**TINY_LADDER, "presets": ["xs", "xs"]}, 422, "ladder_too_short"),
        ({**TINY_LADDER, "presets": ["xs", "giant"]}, 422, "unknown_preset"),
        ({**TINY_LADDER, "token_scales": [0.5]}, 422, "invalid_input"),
        ({**TINY_LADDER, "token_scales": [50, 100]}, 422, "epoch_cap"),
        ({**TINY_LADDER, "seeds": 0}, 422, "invalid_input"),
        ({**TINY_LADDER, "surprise": 1}, 422, "invalid_input"),
    ]:
        resp = api.post(f"{base}/scale-prediction", json=body, headers=auth)
        assert (resp.status_code, error_code(resp)) == (status, code), (body, resp.text)
    missing = api.get(f"{base}/scale-prediction", headers=auth)
    assert missing.status_code == 404 and error_code(missing) == "no_scale_prediction"
    assert api.get(f"{base}/dashboard/scale", headers=auth).json() is None
    assert api.get(f"{base}/runs", params={"status": "queued"}, headers=auth).json()["items"] == []

    started = api.post(f"{base}/scale-prediction", json=TINY_LADDER, headers=auth).json()
    cancelled = api.post(f"{base}/scale-prediction/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["runs"] == {"cancelled": 12} and started["id"] == cancelled.json()["id"]
    twice = api.post(f"{base}/scale-prediction/cancel", headers=auth)
    assert twice.status_code == 409 and error_code(twice) == "bad_status"

    cancelled_runs = api.get(f"{base}/runs", params={"status": "cancelled"}, headers=auth).json()["items"]
    assert {r["fidelity"].split(":")[0] for r in cancelled_runs} == {"ladder"}
    retried = api.post(f"{base}/runs/{cancelled_runs[0]['id']}/retry", headers=auth)
    assert retried.status_code == 200, retried.text
    assert api.get(f"{base}/scale-prediction", headers=auth).json()["status"] == "running"
    assert api.get(base, headers=auth).json()["status"] == "done"  # a rung's retry leaves the search be


def test_only_done_worker_experiments_can_predict(api: Any, auth: dict[str, str]) -> None:
    external = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
    resp = api.post(f"/api/v1/experiments/{external['id']}/scale-prediction", json=TINY_LADDER, headers=auth)
    assert resp.status_code == 409 and error_code(resp) == "bad_executor"
    draft = api.post(
        "/api/v1/experiments",
        json={"name": "d", "domains": [{"name": "code"}, {"name": "legal"}]},
        headers=auth,
    ).json()
    resp = api.post(f"/api/v1/experiments/{draft['id']}/scale-prediction", headers=auth)
    assert resp.status_code == 409 and error_code(resp) == "bad_status"
