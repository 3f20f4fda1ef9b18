"""An experiment's life cycle: rename, tag and annotate it, archive it, clone it, give it more budget
(a done experiment resumes), and delete it with its runs and files (409 while a worker trains one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.helpers import error_code, external_spec, fake_losses, wait_for


def _run_to_done(api: Any, auth: dict[str, str], base: str) -> None:
    while (asked := api.post(f"{base}/ask", params={"wait": 30}, headers=auth)).status_code == 200:
        run, token = asked.json()["run"], asked.json()["lease_token"]
        body = {"lease_token": token, "losses": fake_losses(run["weights"])}
        assert api.post(f"{base}/runs/{run['id']}/result", json=body, headers=auth).status_code == 200
    assert error_code(asked) == "budget_spent"
    wait_for(lambda: api.get(base, headers=auth).json()["status"] == "done", "the experiment to finish")


def test_patch_archive_and_list_filters(api: Any, auth: dict[str, str]) -> None:
    exp = api.post("/api/v1/experiments", json=external_spec(name="first"), headers=auth).json()
    api.post("/api/v1/experiments", json=external_spec(name="second"), headers=auth)
    base = f"/api/v1/experiments/{exp['id']}"
    patched = api.patch(
        base, json={"name": "web-vs-code", "tags": ["ablation", "v2"], "notes": "a note"}, headers=auth
    )
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["tags"], patched.json()["notes"]) == (
        "web-vs-code",
        ["ablation", "v2"],
        "a note",
    )
    assert api.patch(base, json={"tags": ["bad tag!"]}, headers=auth).status_code == 422
    assert api.patch(base, json={"notes": None}, headers=auth).json()["tags"] == ["ablation", "v2"]

    def names(**params: Any) -> list[str]:
        return [
            e["name"] for e in api.get("/api/v1/experiments", params=params, headers=auth).json()["items"]
        ]

    assert names(tag="ablation") == ["web-vs-code"] and names(name="SEC") == ["second"]
    assert names(status="draft") == ["second", "web-vs-code"]
    assert api.post(f"{base}/archive", headers=auth).json()["archived_at"] is not None
    assert names() == ["second"] and names(archived=True) == ["web-vs-code"]
    assert api.get(base, headers=auth).status_code == 200  # archived, still readable
    api.post(f"{base}/unarchive", headers=auth)
    assert names() == ["second", "web-vs-code"]


def test_extend_resumes_a_done_experiment_and_clone_starts_fresh(api: Any, auth: dict[str, str]) -> None:
    exp = api.post("/api/v1/experiments", json=external_spec(budget=2, seed=7), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    api.post(f"{base}/start", headers=auth)
    _run_to_done(api, auth, base)
    extended = api.post(f"{base}/extend", json={"budget": 2}, headers=auth).json()
    assert extended["status"] == "running" and extended["budget"] == 4
    _run_to_done(api, auth, base)
    assert api.get(base, headers=auth).json()["run_counts"]["succeeded"] > 2

    clone = api.post(f"{base}/clone", json={"name": "again"}, headers=auth)
    assert clone.status_code == 201
    copy = clone.json()
    assert (copy["name"], copy["status"], copy["seed"], copy["budget"]) == ("again", "draft", 8, 4)
    assert copy["target"] == exp["target"] and [d["name"] for d in copy["domains"]] == ["web", "code", "law"]
    assert copy["run_counts"] == {}
    assert api.post(f"{base}/extend", json={"budget": 0}, headers=auth).status_code == 422
    api.patch(base, json={"name": "n" * 200}, headers=auth)  # the longest name: its clone's still fits
    long_clone = api.post(f"{base}/clone", headers=auth)
    assert long_clone.status_code == 201 and long_clone.json()["name"].endswith(" (clone)")


def test_delete_removes_rows_and_files_but_not_shared_corpora(
    api: Any, auth: dict[str, str], tmp_path: Path
) -> None:
    from app.core.config import get_settings

    spec = {"name": "w", "domains": [{"name": "web"}, {"name": "code"}]}
    exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    for d, text in (("web", b"the web\n"), ("code", b"def f(): pass\n")):
        put = api.put(f"{base}/domains/{d}/corpus", params={"filename": "a.txt"}, content=text, headers=auth)
        assert put.status_code == 200
    copy = api.post(f"{base}/clone", headers=auth).json()
    corpora = sorted((get_settings().storage_dir / "corpora").glob("*.jsonl"))
    assert len(corpora) == 2

    assert api.delete(base, headers=auth).status_code == 204
    assert api.get(base, headers=auth).status_code == 404
    assert all(p.exists() for p in corpora)  # the clone still uses them
    assert api.delete(f"/api/v1/experiments/{copy['id']}", headers=auth).status_code == 204
    assert not any(p.exists() for p in corpora)


def test_delete_waits_for_workers_unless_forced(api: Any, auth: dict[str, str]) -> None:
    from sqlalchemy import update

    from app.core.db import session_scope
    from app.models import Run

    exp = api.post("/api/v1/experiments", json=external_spec(), headers=auth).json()
    base = f"/api/v1/experiments/{exp['id']}"
    api.post(f"{base}/start", headers=auth)
    run_id = api.post(f"{base}/ask", params={"wait": 30}, headers=auth).json()["run"]["id"]
    with session_scope() as session:  # as if a worker had claimed it
        session.execute(update(Run).where(Run.id == run_id).values(origin="worker"))
    busy = api.delete(base, headers=auth)
    assert busy.status_code == 409 and error_code(busy) == "worker_owns_runs"
    assert api.get(base, headers=auth).status_code == 200
    assert api.delete(base, params={"force": True}, headers=auth).status_code == 204
    assert api.get(f"{base}/runs/{run_id}", headers=auth).status_code == 404
