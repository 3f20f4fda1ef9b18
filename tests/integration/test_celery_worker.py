"""Service mode for real: PostgreSQL + Redis + `celery worker` subprocesses training real proxy LMs.

The fault test SIGKILLs the worker in the middle of a run; the reaper (`mixlab beat`, its own process) puts
the run back in the queue, and the experiment still finishes with every run succeeded and nothing stuck.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.helpers import MixlabProcess, upload_corpora, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def service_settings() -> dict[str, str]:
    """A lost run is noticed, reaped and retried within seconds."""
    return {"MIXLAB_STALE_AFTER_S": "6", "MIXLAB_REAP_EVERY_S": "2", "MIXLAB_RETRY_BACKOFF_S": "0.5"}


def test_worker_survives_sigkill_mid_run(service_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.core.db import session_scope
    from app.main import create_app
    from app.services.projects import create_project

    with session_scope() as session:
        _, key = create_project(session=session, name="svc")
    auth = {"Authorization": f"Bearer {key}"}
    log = tmp_path / "worker.log"
    beat = MixlabProcess(["beat"], service_env, tmp_path / "beat.log")  # the reaper, apart from workers
    worker = MixlabProcess(["worker"], service_env, log)
    try:
        with TestClient(create_app()) as api:
            spec = {
                "name": "svc",
                "domains": [{"name": "sports"}, {"name": "code"}],
                "strategy": "random",
                "fidelities": [{"preset": "xs", "tokens": 120_000}],
                "budget": 3,
                "parallelism": 1,
            }
            exp = api.post("/api/v1/experiments", json=spec, headers=auth).json()
            base = f"/api/v1/experiments/{exp['id']}"
            upload_corpora(api, base, auth, tmp_path, max_chars=150_000)
            assert api.post(f"{base}/start", headers=auth).json()["status"] == "preparing"

            def running_with_progress():  # type: ignore[no-untyped-def]
                items = api.get(f"{base}/runs", params={"status": "running"}, headers=auth).json()["items"]
                return items[0] if items and items[0]["progress"].get("step") else None

            victim = wait_for(running_with_progress, "a run to make progress", 240, 0.5, [log])
            worker.kill()
            worker = MixlabProcess(["worker"], service_env, log)

            def finished():  # type: ignore[no-untyped-def]
                data = api.get(base, headers=auth).json()
                return data if data["status"] in ("done", "failed") else None

            final = wait_for(finished, "the experiment to finish", 300, 0.5, [log])
            assert final["status"] == "done", final["error"]
            runs = api.get(f"{base}/runs", headers=auth).json()["items"]
            assert [r["status"] for r in runs] == ["succeeded"] * 3
            again = next(r for r in runs if r["id"] == victim["id"])
            assert again["attempts"] >= 2 and set(again["losses"]) == {"sports", "code"}
            rec = api.get(f"{base}/recommendation", headers=auth).json()
            assert rec["final"] and rec["n_runs"] == 3
    finally:
        worker.stop()
        beat.stop()


def test_a_worker_that_only_proposes_keeps_serving_priority(service_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`mixlab worker --queues mixlab-plan` runs its tasks at our priority; a training/refit worker's
    pool runs niced, and so does its session's scheduling group where the kernel has one."""
    env = {**service_env, "MIXLAB_BACKGROUND_NICE": "7"}
    base = os.getpriority(os.PRIO_PROCESS, 0)
    workers = {
        queues: MixlabProcess(["worker", "--queues", queues], env, tmp_path / f"{queues}.log")
        for queues in ("mixlab-plan", "mixlab,mixlab-refit")
    }
    try:
        for w in workers.values():
            wait_for(w.ready, "the worker to start", timeout=60)
        for queues, w in workers.items():
            expected = base if queues == "mixlab-plan" else min(19, base + 7)
            pool = [p for p in _group(w.proc.pid) if p != w.proc.pid]
            assert pool, "the worker's pool process"
            assert {os.getpriority(os.PRIO_PROCESS, p) for p in pool} == {expected}, queues
            group = Path(f"/proc/{w.proc.pid}/autogroup")
            if group.exists() and group.read_text().strip():
                assert group.read_text().split()[-1] == ("0" if queues == "mixlab-plan" else "7"), queues
    finally:
        for w in workers.values():
            w.stop()


def _group(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid``."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids
