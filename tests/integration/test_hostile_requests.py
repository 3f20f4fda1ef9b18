"""Hostile and buggy requests: each gets its documented status and error code, and stores nothing.

One table, run against a live app on both backends with small limits (so a gzip bomb or an oversized body
costs the test milliseconds). "Nothing stored" compares a snapshot of every table that a request could
write (row counts and the mutable columns of runs and sessions) and the corpus store, before and after.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import error_code, expire_and_reap, external_spec

LIMITS = {
    "MIXLAB_MAX_JSON_BYTES": "200000",
    "MIXLAB_MAX_UPLOAD_BYTES": "50000",
    "MIXLAB_MAX_CORPUS_BYTES": "100000",
    "MIXLAB_MAX_LINE_BYTES": "5000",
    "MIXLAB_MAX_DOCUMENT_BYTES": "20000",
    "MIXLAB_RATE_LIMIT": "",
}


@pytest.fixture
def hostile(
    settings_env: dict[str, str], key: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """A live app with small limits; a running external experiment with one leased run whose lease was
    handed out again (so the first token is stale), an online session, and a worker draft for uploads."""
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    for k, v in LIMITS.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        auth = {"Authorization": f"Bearer {key}"}
        exp = api.post("/api/v1/experiments", json=external_spec(budget=20), headers=auth).json()
        base = f"/api/v1/experiments/{exp['id']}"
        assert api.post(f"{base}/start", headers=auth).status_code == 200
        stale = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
        expire_and_reap(stale["run"]["id"])
        live = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()
        assert live["run"]["id"] == stale["run"]["id"]
        online = api.post(f"{base}/online-sessions", json={}, headers=auth).json()
        spec = {"name": "w", "domains": [{"name": "web"}, {"name": "code"}]}
        draft = api.post("/api/v1/experiments", json=spec, headers=auth).json()
        yield {
            "api": api,
            "auth": auth,
            "key": key,
            "base": base,
            "run": f"{base}/runs/{live['run']['id']}",
            "stale": stale["lease_token"],
            "token": live["lease_token"],
            "online": f"{base}/online-sessions/{online['id']}",
            "draft": f"/api/v1/experiments/{draft['id']}",
        }


def _snapshot(storage: Path) -> tuple[Any, ...]:
    from sqlalchemy import func, select

    from app.core.db import session_scope
    from app.models import ApiKey, Domain, Experiment, OnlineSession, Project, Recommendation, Run

    with session_scope() as session:
        counts = tuple(
            session.scalar(select(func.count()).select_from(t))
            for t in (Project, ApiKey, Experiment, Domain, Run, OnlineSession)
        )
        runs = session.execute(
            select(Run.id, Run.status, Run.losses, Run.progress, Run.claim_token, Run.error).order_by(Run.id)
        ).all()
        sessions = session.execute(select(OnlineSession.id, OnlineSession.step)).all()
        domains = session.execute(select(Domain.id, Domain.path, Domain.sha256)).all()
        recommendations = session.scalar(select(func.count()).select_from(Recommendation))
    files = sorted(p.name for p in storage.rglob("*") if p.is_file()) if storage.exists() else []
    # recommendations may appear as the planner works: only their count going *down* would be a change
    return counts, tuple(runs), tuple(sessions), tuple(domains), tuple(files), recommendations


OK_LOSSES = {"web": 2.0, "code": 2.0}
NAN, INF = float("nan"), float("inf")
TOO_LARGE = (413, "upload_too_large")

EXP = "/api/v1/experiments"
INVALID = (422, "invalid_input")
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = []


def case(name: str, method: str, path: str, expect: tuple[int, str], says: str = "", **request: Any) -> None:
    """One row: the request (path and values may name fixture values in braces), its status and code,
    and a phrase its message must hold (the offending field, the limit's setting)."""
    CASES.append((name, method, path, {**request, "says": says}, *expect))


def spec(**over: Any) -> dict[str, Any]:
    return {"json": {**external_spec(), **over}}


# -- creating experiments: every number bounded, every name known
case("target off the simplex", "POST", EXP, INVALID, **spec(target={"web": 0.9, "code": 0.9}))
case("target names an unknown domain", "POST", EXP, INVALID, **spec(target={"web": 0.5, "books": 0.5}))
case("target weight NaN", "POST", EXP, INVALID, raw=json.dumps({**external_spec(), "target": {"web": NAN}}))
case("seed 2^40", "POST", EXP, INVALID, says="seed", **spec(seed=2**40))
case("seed 2^70", "POST", EXP, INVALID, **spec(seed=2**70))
case("negative seed", "POST", EXP, INVALID, **spec(seed=-1))
case("budget 1e12", "POST", EXP, INVALID, **spec(budget=1e12))
case("budget Infinity", "POST", EXP, INVALID, raw=json.dumps({**external_spec(), "budget": INF}))
case("parallelism 0", "POST", EXP, INVALID, **spec(parallelism=0))
case("an external fidelity without cost", "POST", EXP, (422, "missing_cost"), says="cost",
     **spec(fidelities=[{"name": "f", "tokens": 10**6}]))  # fmt: skip
case(
    "domain tokens 2^70",
    "POST",
    EXP,
    INVALID,
    **spec(domains=[{"name": "web", "tokens": 2**70}, {"name": "c"}]),
)
case(
    "fidelity tokens 2^70",
    "POST",
    EXP,
    INVALID,
    **spec(fidelities=[{"name": "f", "tokens": 2**70, "cost": 1}]),
)
case(
    "fidelity cost 1e300",
    "POST",
    EXP,
    INVALID,
    **spec(fidelities=[{"name": "f", "tokens": 10, "cost": 1e300}]),
)
case(
    "duplicate domains", "POST", EXP, INVALID, **spec(domains=[{"name": "web"}, {"name": "web"}], target=None)
)
case(
    "300 domains", "POST", EXP, INVALID, **spec(domains=[{"name": f"d{i}"} for i in range(300)], target=None)
)
case(
    "a domain name with a slash",
    "POST",
    EXP,
    INVALID,
    **spec(domains=[{"name": "../x"}, {"name": "c"}], target=None),
)
case("an unknown field", "POST", EXP, INVALID, **spec(admin=True))
case("a JSON list, not an object", "POST", EXP, INVALID, json=[external_spec()])
case("malformed JSON", "POST", EXP, (400, "malformed_json"), raw='{"name": "x",')
case(
    "body over MIXLAB_MAX_JSON_BYTES",
    "POST",
    EXP,
    (413, "payload_too_large"),
    says="MIXLAB_MAX_JSON_BYTES",
    **spec(name="x" * 300_000),
)
# -- ids beyond any row, keys that are not keys, cookies that may not write
case("experiment id 2^31", "GET", f"{EXP}/{2**31}", (404, "experiment_not_found"))
case("experiment id 2^70", "GET", f"{EXP}/{2**70}", (404, "experiment_not_found"))
case("experiment id -1", "GET", f"{EXP}/-1", (404, "experiment_not_found"))
case("experiment id not a number", "GET", f"{EXP}/abc", INVALID)
case("run id 2^64", "GET", "{base}/runs/" + str(2**64), (404, "run_not_found"))
case("tell on run id 2^64", "POST", "{base}/runs/" + str(2**64) + "/result", (404, "run_not_found"),
     json={"lease_token": "0" * 32, "losses": OK_LOSSES})  # fmt: skip
case("session id 2^70", "GET", "{base}/online-sessions/" + str(2**70), (404, "session_not_found"))
case("run id not a number", "GET", "{base}/runs/import", (405, "method_not_allowed"))
case("a NUL in a name", "POST", EXP, INVALID, says="name", **spec(name="a\x00b"))
case("an unpaired surrogate in a name", "POST", EXP, INVALID, raw='{"name": "x\\udc80", "domains": []}')
case("page cursor 2^70", "GET", "{base}/runs", INVALID, params={"after": 2**70})
case("page size 10^6", "GET", "{base}/runs", INVALID, params={"limit": 10**6})
case(
    "a NUL in a runs filter (CSV)",
    "GET",
    "{base}/runs",
    INVALID,
    params={"fidelity": "a\x00", "format": "csv"},
)
case("a NUL in an experiments filter", "GET", EXP, INVALID, params={"name": "a\x00"})
case("no key", "POST", EXP, (401, "unauthorized"), auth=None, **spec())
case("a made-up key", "POST", EXP, (401, "unauthorized"), auth={"Authorization": "Bearer mlx_no"}, **spec())
case("the dashboard cookie on a write", "POST", EXP, (403, "cookie_read_only"), auth="cookie", **spec())
case("unknown path", "GET", "/api/v1/nothing-here", (404, "not_found"))
case("wrong method", "DELETE", EXP, (405, "method_not_allowed"))
# -- results: fenced by the lease, losses plausible
LOST = (409, "lease_lost")
case("tell without a lease token", "POST", "{run}/result", INVALID, json={"losses": OK_LOSSES})
case(
    "tell with a stale lease",
    "POST",
    "{run}/result",
    LOST,
    json={"lease_token": "{stale}", "losses": OK_LOSSES},
)
case("heartbeat with a stale lease", "POST", "{run}/heartbeat", LOST, json={"lease_token": "{stale}"})
case("fail with a stale lease", "POST", "{run}/fail", LOST, json={"lease_token": "{stale}", "error": "x"})
case(
    "loss 1e308",
    "POST",
    "{run}/result",
    INVALID,
    says="losses['web']",
    json={"lease_token": "{token}", "losses": {"web": 1e308}},
)
case("loss 0", "POST", "{run}/result", INVALID, json={"lease_token": "{token}", "losses": {"web": 0}})
case(
    "negative loss",
    "POST",
    "{run}/result",
    INVALID,
    json={"lease_token": "{token}", "losses": {"web": -2.45}},
)
case("loss NaN", "POST", "{run}/result", INVALID, raw='{"lease_token": "{token}", "losses": {"web": NaN}}')
case("loss for an unknown domain", "POST", "{run}/result", (422, "unknown_domain"),
     json={"lease_token": "{token}", "losses": {**OK_LOSSES, "books": 2.0}})  # fmt: skip
case("negative cost", "POST", "{run}/result", INVALID,
     json={"lease_token": "{token}", "losses": OK_LOSSES, "cost": -1})  # fmt: skip
case("a 150 KB progress payload", "POST", "{run}/heartbeat", INVALID, says="progress",
     json={"lease_token": "{token}", "progress": {"log": "x" * 150_000}})  # fmt: skip
case("import weights off the simplex", "POST", "{base}/runs/import", INVALID,
     json={"runs": [{"weights": {"web": 0.5, "code": 0.6}, "losses": OK_LOSSES}]})  # fmt: skip
case("import a loss of 0", "POST", "{base}/runs/import", INVALID,
     json={"runs": [{"weights": {"web": 1.0}, "losses": {"web": 0.0, "code": 1.0}}]})  # fmt: skip
case("import no runs", "POST", "{base}/runs/import", INVALID, json={"runs": []})
case("online step 2^40", "POST", "{online}/update", INVALID, json={"step": 2**40, "losses": OK_LOSSES})
case("online session seed 2^40", "POST", "{base}/online-sessions", INVALID, json={"seed": 2**40})
# -- corpus uploads: bounded, strict UTF-8, raw bodies only
WEB = "{draft}/domains/web/corpus"
TXT, GZ = {"filename": "a.txt"}, {"filename": "a.txt.gz"}
case("an empty upload", "PUT", WEB, (422, "empty_corpus"), params=TXT, content=b"")
case("upload over MIXLAB_MAX_UPLOAD_BYTES", "PUT", WEB, TOO_LARGE, params=TXT, content=b"word " * 20_000)
case(
    "a gzip bomb",
    "PUT",
    WEB,
    TOO_LARGE,
    params=GZ,
    content=gzip.compress(b"all work and no play\n\n" * 20_000),
)
case("a line with no end", "PUT", WEB, (422, "line_too_long"), params=TXT, content=b"x" * 9_000)
case(
    "a document with no blank line",
    "PUT",
    WEB,
    (422, "document_too_long"),
    params=TXT,
    content=b"w\n" * 15_000,
)
case("non-UTF-8 text", "PUT", WEB, (422, "not_utf8"), params=TXT, content="caf\xe9".encode("latin-1"))
case("not gzip at all", "PUT", WEB, (422, "bad_gzip"), params=GZ, content=b"plain text")
case(
    "an unknown file format",
    "PUT",
    WEB,
    INVALID,
    says="filename",
    params={"filename": "a.exe"},
    content=b"MZ",
)
case(
    "a multipart form", "PUT", WEB, (415, "unsupported_media_type"), params=TXT, files={"f": ("a.txt", b"hi")}
)
case("a corpus for an unknown domain", "PUT", "{draft}/domains/books/corpus", (404, "unknown_domain"),
     params=TXT, content=b"hello")  # fmt: skip


def _fill(value: Any, ctx: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for k, v in ctx.items():
            if isinstance(v, str):
                value = value.replace("{" + k + "}", v)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ctx) for k, v in value.items()}
    return value


def test_the_table_has_forty_cases() -> None:
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("name", "method", "path", "kwargs", "status", "code"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_request(
    hostile: dict[str, Any], name: str, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    from app.core.config import get_settings

    api, kw = hostile["api"], dict(kwargs)
    says = kw.pop("says")
    headers = dict(hostile["auth"])
    auth = kw.pop("auth", "bearer")
    if auth is None:
        headers = {}
    elif auth == "cookie":
        headers, kw["cookies"] = {}, {"mixlab_key": hostile["key"]}
    elif isinstance(auth, dict):
        headers = auth
    if "raw" in kw:
        kw["content"] = _fill(kw.pop("raw"), hostile).encode()
        headers["Content-Type"] = "application/json"
    if "json" in kw:
        kw["json"] = _fill(kw["json"], hostile)
    if "cookies" in kw:
        api.cookies.update(kw.pop("cookies"))
    storage = get_settings().storage_dir
    before = _snapshot(storage)
    try:
        resp = api.request(method, _fill(path, hostile), headers=headers, **kw)
    finally:
        api.cookies.clear()
    assert (resp.status_code, error_code(resp)) == (status, code), resp.text[:500]
    assert says in resp.json()["error"]["message"], resp.json()["error"]["message"]
    after = _snapshot(storage)
    assert after[:5] == before[:5] and after[5] >= before[5], f"{name} changed stored state"


def test_rate_limit_answers_429_with_retry_after(
    settings_env: dict[str, str], key: str, other_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.main import create_app

    monkeypatch.setenv("MIXLAB_RATE_LIMIT", "5/minute")
    get_settings.cache_clear()
    with TestClient(create_app(), raise_server_exceptions=False) as api:
        mine = {"Authorization": f"Bearer {key}"}
        other = {"Authorization": f"Bearer {other_key}"}
        codes = [api.get("/api/v1/experiments", headers=mine).status_code for _ in range(7)]
        assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
        limited = api.get("/api/v1/experiments", headers=mine)
        assert error_code(limited) == "rate_limited" and int(limited.headers["Retry-After"]) >= 1
        assert api.get("/api/v1/experiments", headers=other).status_code == 200  # per key
        assert api.get("/healthz").status_code == 200  # the health probe is not an API call


def test_options_answers_allow_and_pages_carry_security_headers(api: Any, auth: dict[str, str]) -> None:
    opts = api.options("/api/v1/experiments")
    assert opts.status_code == 204 and set(opts.headers["Allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert api.options("/api/v1/nothing").status_code == 404
    page = api.get("/ui/login")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Content-Security-Policy" not in api.get("/docs").headers  # Swagger UI loads from its CDN
    assert api.get("/api/v1/experiments", headers=auth).headers["X-Content-Type-Options"] == "nosniff"


def test_a_corpus_of_blank_lines_is_an_empty_corpus(hostile: dict[str, Any]) -> None:
    """300 KB of newlines once held a request thread for minutes; it is just an empty corpus."""
    api, url = hostile["api"], f"{hostile['draft']}/domains/web/corpus"
    blank = api.put(url, params={"filename": "a.txt"}, content=b"\n" * 45_000, headers=hostile["auth"])
    assert blank.status_code == 422 and error_code(blank) == "empty_corpus"
    ok = api.put(url, params={"filename": "a.txt"}, content=b"hello world\n", headers=hostile["auth"])
    assert ok.status_code == 200 and ok.json()["documents"] == 1
