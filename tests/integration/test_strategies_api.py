"""Strategies are discoverable: each with its parameters as JSON Schema, and a wrong parameter is a 422
that names it and the allowed ones (not a Python TypeError about __init__)."""

from __future__ import annotations

from typing import Any

from tests.integration.helpers import error_code, external_spec


def test_every_strategy_is_listed_with_its_parameters(api: Any) -> None:
    listed = {s["name"]: s for s in api.get("/api/v1/strategies").json()}
    assert {"uniform", "natural", "temperature", "random", "regmix", "admire", "climb"} <= set(listed)
    assert {"aioli", "dga", "doremi"} <= {n for n, s in listed.items() if s["kind"] == "online"}
    regmix = listed["regmix"]["parameters"]["properties"]
    assert regmix["n_search"]["type"] == "integer" and regmix["n_search"]["default"] == 20000
    assert regmix["n_search"]["description"] == "prior samples scored when recommending"
    assert listed["temperature"]["parameters"]["properties"]["tau"]["type"] == "number"
    assert listed["uniform"]["parameters"]["properties"] == {}


def test_bad_strategy_parameters_name_the_parameter(api: Any, auth: dict[str, str]) -> None:
    cases = [
        ({"n_serch": 10}, ["strategy_params.n_serch", "no such parameter", "n_search"]),
        ({"n_search": "many"}, ["strategy_params.n_search", "integer"]),
        ({"min_weight": 0.9}, ["min_weight must be in [0, 0.5)"]),  # the constructor's own range check
    ]
    for params, phrases in cases:
        spec = external_spec(strategy="regmix", strategy_params=params)
        resp = api.post("/api/v1/experiments", json=spec, headers=auth)
        assert resp.status_code == 422 and error_code(resp) == "bad_strategy_params", resp.text
        assert all(p in resp.json()["error"]["message"] for p in phrases), resp.json()["error"]["message"]
        assert "__init__" not in resp.json()["error"]["message"]
    assert api.get("/api/v1/experiments", headers=auth).json()["items"] == []
