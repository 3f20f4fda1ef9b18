"""Learning curves and ETAs: an external pipeline reports points with its heartbeats; the run, the
runs table's live section and the run page's data show them."""

from __future__ import annotations

from tests.integration.helpers import error_code, external_spec, fake_losses


def _leased(api, auth):  # type: ignore[no-untyped-def]
    exp = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    assert api.post(f"{base}/start", headers=auth).status_code == 200
    asked = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
    return base, asked["run"]["id"], asked["lease_token"]


def test_heartbeat_points_build_the_curve_and_the_eta(api, auth) -> None:  # type: ignore[no-untyped-def]
    base, run_id, token = _leased(api, auth)
    beat = f"{base}/runs/{run_id}/heartbeat"
    first = [{"step": 10, "train_loss": 5.0, "tokens": 10_240}, {"step": 20, "train_loss": 4.2}]
    body = {"lease_token": token, "progress": {"total_steps": 100}, "points": first}
    out = api.post(beat, json=body, headers=auth)
    assert out.status_code == 200, out.text
    assert out.json()["progress"] == {"total_steps": 100, "step": 20}  # the last point moves the ETA
    assert out.json()["eta_s"] is not None and out.json()["eta_s"] >= 0
    again = {**body, "points": [*first, {"step": 30, "train_loss": 3.9, "eval_losses": {"web": 3.5}}]}
    assert api.post(beat, json=again, headers=auth).status_code == 200  # a retry resends old points

    run = api.get(f"{base}/runs/{run_id}", headers=auth).json()
    assert [p["step"] for p in run["curve"]] == [10, 20, 30]  # each point once
    assert run["curve"][0] == {"step": 10, "train_loss": 5.0, "tokens": 10_240, "eval_losses": None}
    assert run["curve"][2]["eval_losses"] == {"web": 3.5}
    listed = api.get(f"{base}/runs", headers=auth).json()["items"][0]
    assert "curve" not in listed and listed["eta_s"] is not None  # lists stay light

    table = api.get(f"{base}/dashboard/runs", headers=auth).json()
    (live,) = table["live"]
    assert live["id"] == run_id and live["done_fraction"] == 0.3
    curve = {"steps": [10, 20, 30], "tokens": [10_240, None, None], "train_loss": [5.0, 4.2, 3.9]}
    assert live["curve"] == curve
    (row,) = [r for r in table["rows"] if r["id"] == run_id]
    assert row["done_fraction"] == 0.3 and row["eta_s"] is not None
    detail = api.get(f"{base}/dashboard/runs/{run_id}", headers=auth).json()
    assert detail["curve"]["steps"] == [10, 20, 30]

    told = {"lease_token": token, "losses": fake_losses(run["weights"])}
    done = api.post(f"{base}/runs/{run_id}/result", json=told, headers=auth).json()
    assert done["eta_s"] is None  # only running runs have one
    assert api.get(f"{base}/dashboard/runs", headers=auth).json()["live"] == []
    assert len(api.get(f"{base}/runs/{run_id}", headers=auth).json()["curve"]) == 3  # the curve stays


def test_bad_points_are_refused_and_nothing_is_stored(api, auth) -> None:  # type: ignore[no-untyped-def]
    base, run_id, token = _leased(api, auth)
    beat = f"{base}/runs/{run_id}/heartbeat"
    bad_points = [
        ([{"step": 1, "train_loss": 2.0, "eval_losses": {"nope": 2.0}}], "unknown_domain"),
        ([{"step": 1, "train_loss": -1.0}], "invalid_input"),
        ([{"step": -1, "train_loss": 2.0}], "invalid_input"),
        ([{"step": 1}], "invalid_input"),
        ([{"step": 1, "train_loss": 2.0, "lr": 0.1}], "invalid_input"),
        ([{"step": i, "train_loss": 2.0} for i in range(1001)], "invalid_input"),
    ]
    for points, code in bad_points:
        resp = api.post(beat, json={"lease_token": token, "points": points}, headers=auth)
        assert resp.status_code == 422 and error_code(resp) == code, (points[:1], resp.text)
    run = api.get(f"{base}/runs/{run_id}", headers=auth).json()
    assert run["curve"] == [] and run["progress"] == {}
