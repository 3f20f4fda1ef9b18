"""10,000 runs in one experiment: listing and refitting issue O(1) queries (no per-row I/O), and the
planner's history cache reads only what is new."""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import event

from tests.integration.helpers import external_spec, fake_losses


class QueryCounter:
    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        """``engine``: an Engine (every connection's statements) or one Connection (its own only)."""
        self.engine, self.n = engine, 0

    def __enter__(self) -> QueryCounter:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)

    def _count(self, *args: object) -> None:
        if not threading.current_thread().name.startswith("mixlab-"):  # the embedded worker's own polls
            self.n += 1


def test_ten_thousand_runs(api, auth, settings_env) -> None:  # type: ignore[no-untyped-def]
    from app.core.db import get_engine, session_scope
    from app.models import Experiment
    from app.services.planning import HistoryCache, history

    exp = api.post("/api/v1/experiments", json=external_spec(strategy="random"), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    rng = np.random.default_rng(0)
    runs = []
    for w in rng.dirichlet(np.ones(3), size=10_000):
        weights = dict(zip(["web", "code", "law"], map(float, w), strict=True))
        runs.append({"weights": weights, "losses": fake_losses(weights)})
    assert api.post(f"{base}/runs/import", json={"runs": runs}, headers=auth).json()["imported"] == 10_000

    engine = get_engine(settings_env["MIXLAB_DATABASE_URL"])
    with QueryCounter(engine) as first:
        page = api.get(f"{base}/runs", params={"limit": 500}, headers=auth).json()
    deep_after = page["next_after"] + 9_000
    with QueryCounter(engine) as deep:
        deep_page = api.get(f"{base}/runs", params={"limit": 500, "after": deep_after}, headers=auth).json()
    assert len(page["items"]) == 500 and len(deep_page["items"]) == 500
    assert deep_page["items"][0]["id"] == deep_after + 1
    assert first.n == deep.n <= 6  # auth, experiment, runs page: independent of page depth and size

    with session_scope() as session:
        experiment = session.get(Experiment, exp["id"])
        with QueryCounter(engine) as fit:
            hist = history(session, experiment)
    assert len(hist) == 10_000 and fit.n == 1

    cache = HistoryCache()  # counted on this session's connection: the embedded planner runs meanwhile
    with session_scope() as session:
        experiment = session.get(Experiment, exp["id"])
        with QueryCounter(session.connection()) as first_read:
            assert cache.read(session, experiment) == hist
        with QueryCounter(session.connection()) as unchanged:
            assert cache.read(session, experiment) == hist
    assert first_read.n == 2 and unchanged.n == 1  # the ids, then only the rows it has not seen
    told = {"weights": runs[0]["weights"], "losses": {"web": 1.0, "code": 1.0, "law": 1.0}}
    api.post(f"{base}/runs/import", json={"runs": [told]}, headers=auth).raise_for_status()
    with session_scope() as session:
        experiment = session.get(Experiment, exp["id"])
        with QueryCounter(session.connection()) as grown:
            cached = cache.read(session, experiment)
        assert cached == history(session, experiment) and len(cached) == 10_001
    assert grown.n == 2
    with QueryCounter(engine) as listing:
        api.get("/api/v1/experiments", headers=auth)
    for i in range(4):
        api.post("/api/v1/experiments", json=external_spec(name=f"more-{i}"), headers=auth)
    with QueryCounter(engine) as longer_listing:
        assert len(api.get("/api/v1/experiments", headers=auth).json()["items"]) == 5
    assert listing.n == longer_listing.n <= 8  # no query per experiment
