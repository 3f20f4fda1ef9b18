"""Experiments over HTTP: create, list, read; bad input gets a clear 4xx and stores nothing; auth scoping."""

from __future__ import annotations

import json
import math

import pytest

from tests.integration.helpers import error_code, external_spec


def _count(api, auth) -> int:  # type: ignore[no-untyped-def]
    return len(api.get("/api/v1/experiments", headers=auth).json()["items"])


def test_health_and_openapi(api) -> None:  # type: ignore[no-untyped-def]
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    paths = api.get("/openapi.json").json()["paths"]
    assert "/api/v1/experiments/{experiment_id}/ask" in paths


def test_create_get_and_paginate(api, auth) -> None:  # type: ignore[no-untyped-def]
    ids = [
        api.post("/api/v1/experiments", json=external_spec(name=f"e{i}"), headers=auth).json()["id"]
        for i in range(5)
    ]
    one = api.get(f"/api/v1/experiments/{ids[0]}", headers=auth).json()
    assert one["status"] == "draft" and [d["name"] for d in one["domains"]] == ["web", "code", "law"]
    assert [f["name"] for f in one["fidelities"]] == ["small", "big"]
    seen, after = [], None
    while True:
        page = api.get(
            "/api/v1/experiments", params={"limit": 2, **({"after": after} if after else {})}, headers=auth
        ).json()
        seen += [e["id"] for e in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(ids, reverse=True)


BAD_SPECS = [
    ({"target": {"web": 0.7, "code": 0.4}}, "sum to 1.1"),
    ({"target": {"web": math.nan, "code": 1.0}}, "finite"),
    ({"target": {"web": -0.5, "code": 1.5}}, ">= 0"),
    ({"target": {"web": 0.5, "books": 0.5}}, "unknown domains ['books']"),
    ({"domains": [{"name": "web", "tokens": 5}, {"name": "web", "tokens": 5}]}, "duplicate domain names"),
    ({"domains": [{"name": "web", "tokens": 5}]}, "at least two domains"),
    ({"strategy": "nope"}, "unknown strategy 'nope'"),
    ({"strategy": "temperature", "strategy_params": {"tau": -1}}, "tau must be > 0"),
    ({"budget": 0}, "budget"),
    ({"domains": [{"name": "a b", "tokens": 5}, {"name": "c", "tokens": 5}]}, "domains.0.name"),
]


@pytest.mark.parametrize(("override", "message"), BAD_SPECS)
def test_bad_specs_are_rejected_and_nothing_is_stored(api, auth, override, message) -> None:  # type: ignore[no-untyped-def]
    spec = external_spec(**override)
    if "target" not in override and "domains" in override:
        spec["target"] = None
    body = json.dumps(spec)  # allow_nan: NaN travels as the JavaScript literal many clients send
    resp = api.post("/api/v1/experiments", content=body, headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 422, resp.text
    body = resp.json()["error"]
    assert message in body["message"] and body["code"]
    assert _count(api, auth) == 0


def test_malformed_json_is_400(api, auth) -> None:  # type: ignore[no-untyped-def]
    resp = api.post(
        "/api/v1/experiments", content=b'{"name": "x", ', headers={**auth, "Content-Type": "application/json"}
    )
    assert resp.status_code == 400 and error_code(resp) == "malformed_json"
    assert _count(api, auth) == 0


def test_keys_are_required_and_scoped(api, auth, other_key) -> None:  # type: ignore[no-untyped-def]
    assert error_code(api.get("/api/v1/experiments")) == "unauthorized"
    assert api.get("/api/v1/experiments", headers={"Authorization": "Bearer mlx_wrong"}).status_code == 401
    exp_id = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()["id"]
    other = {"Authorization": f"Bearer {other_key}"}
    assert api.get(f"/api/v1/experiments/{exp_id}", headers=other).status_code == 404
    assert api.post(f"/api/v1/experiments/{exp_id}/start", headers=other).status_code == 404
    assert api.get(f"/api/v1/experiments/{exp_id}/runs", headers=other).status_code == 404
    assert api.get("/api/v1/experiments", headers=other).json()["items"] == []


def test_keys_are_stored_hashed(settings_env, key) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.models import ApiKey

    with session_scope() as session:
        stored = list(session.scalars(select(ApiKey.key_hash)))
    assert key not in stored and all(len(h) == 64 for h in stored)


def test_unknown_experiment_is_404_with_code(api, auth) -> None:  # type: ignore[no-untyped-def]
    resp = api.get("/api/v1/experiments/999999", headers=auth)
    assert resp.status_code == 404 and error_code(resp) == "experiment_not_found"
