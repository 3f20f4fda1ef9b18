"""Online sessions over HTTP: weights on the simplex, trajectory stored, state survives an API restart."""

from __future__ import annotations

from tests.integration.helpers import error_code, external_spec


def test_session_updates_and_survives_restart(api, auth, settings_env) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    exp = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}/online-sessions"
    created = api.post(base, json={"strategy": "doremi", "params": {}}, headers=auth)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    w0 = created.json()["weights"]
    assert abs(sum(w0.values()) - 1) < 1e-9
    losses = {"web": 3.0, "code": 2.0, "law": 2.0}
    ref = {"web": 2.0, "code": 2.0, "law": 2.0}  # web has the largest excess loss
    w1 = api.post(
        f"{base}/{sid}/update", json={"step": 10, "losses": losses, "reference_losses": ref}, headers=auth
    ).json()["weights"]
    assert w1["web"] > w0["web"]
    with TestClient(create_app()) as restarted:  # a fresh app: nothing kept in memory
        after = restarted.get(f"{base}/{sid}", headers=auth).json()
        assert after["weights"] == w1 and [t["step"] for t in after["trajectory"]] == [0, 10]
        w2 = restarted.post(
            f"{base}/{sid}/update", json={"step": 20, "losses": losses, "reference_losses": ref}, headers=auth
        ).json()["weights"]
    assert w2["web"] > w1["web"]


def test_bad_online_requests(api, auth) -> None:  # type: ignore[no-untyped-def]
    exp = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}/online-sessions"
    assert error_code(api.post(base, json={"strategy": "nope"}, headers=auth)) == "bad_strategy"
    sid = api.post(base, json={"strategy": "aioli"}, headers=auth).json()["id"]
    bad = api.post(f"{base}/{sid}/update", json={"step": 1, "losses": {"web": 1.0, "zzz": 1.0}}, headers=auth)
    assert bad.status_code == 422 and error_code(bad) == "unknown_domain"
    assert api.get(f"{base}/999999", headers=auth).status_code == 404
