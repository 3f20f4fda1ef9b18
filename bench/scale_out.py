"""Worker-mode throughput with k = 1, 2, 4 Celery workers on PostgreSQL + Redis: does it scale out?

Runs are synthetic (``MIXLAB_SYNTHETIC_TRAIN_S``): a worker claims its run, sleeps ``--train-seconds``
while heartbeating, and reports losses from a fixed mixing law instead of training a proxy model. So
what is measured is the service's own overhead around a run of known length: the Celery message, the
claim, storing the result, the planning request, the planner pass (a real strategy, ``random`` unless
``--strategy`` says otherwise, on its own queue) and the dispatch of the next run. Everything else is
the production path: real ``mixlab worker`` and ``mixlab beat`` processes, a fresh PostgreSQL database
and a flushed Redis database for every k.

The experiment is created through the API (in this process, on the same database and broker) with three
tiny corpora (~30 kB each, from ``proxy_models.corpora``), and preparation runs for real on a worker
(about a second): that is how domains get their token counts, and it happens before the first run, so
it is outside the measured window.

For each k: ``parallelism = k``, ``budget = k * runs_per_worker``. Throughput is runs / (last run's
``finished_at`` - first run's ``started_at``); ``eff_k = runs_per_s(k) / (k * runs_per_s(1))``; the
target is eff_k >= 0.9. Sleeping runs make the 2-core machine no obstacle to k = 4. The table also
splits each worker's idle time between runs into planning (a run finishing → the next run proposed) and
dispatch (proposed → claimed by a worker). Worker experiments keep exactly ``parallelism`` runs proposed
(no look-ahead), so a run finishing waits for one propose pass before the next starts: with ``random``
that pass takes tens of milliseconds; ``--strategy regmix`` shows what a fitting strategy costs.

    PYTHONPATH=. .venv/bin/python bench/scale_out.py [--quick] [--train-seconds 2] [--runs-per-worker 12]
        [--workers 1,2,4] [--strategy random] [--verbose] [--workdir DIR]

Needs PostgreSQL (``MIXLAB_BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432/test``, used to
create and drop databases) and Redis (``MIXLAB_BENCH_REDIS``, default ``redis://127.0.0.1:6379/14``;
that database is flushed).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("MIXLAB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MIXLAB_BENCH_REDIS", "redis://127.0.0.1:6379/14")
DOMAINS = ("sports", "code", "legal")


@dataclass(frozen=True)
class Figures:
    workers: int
    runs: int
    window_s: float
    runs_per_s: float
    planning_s: float  # mean: a run finishing → the next run proposed (runs after the first k)
    dispatch_s: float  # mean: proposed → claimed (runs after the first k)
    first_claim_s: float  # mean: proposed → claimed for the first k runs (a fresh worker's first task)
    ramp_s: float  # the first run's start → the k-th run's start (until every worker is busy)
    idle_s: float  # mean per-worker gap between finishing one run and starting the next
    overhead_s: float  # mean per run: k * window / runs - train_s
    status: str
    planner_passes: dict[str, int]


# --------------------------------------------------------------------------------------- processes


class Proc:
    """A subprocess in its own process group (a stop takes its children too), logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log_path.name} exited early:\n{self.tail()}")
        return b" ready." in self.log_path.read_bytes()

    def kill(self) -> None:
        """SIGKILL the process group: a worker dies mid-task, as with an OOM kill or a lost machine."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        except ProcessLookupError:
            pass
        finally:
            self.log.close()


@contextmanager
def processes(k: int, env: dict[str, str], logs: Path) -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    try:
        for i in range(k):
            procs.append(Proc(["worker", "--concurrency", "1"], env, logs / f"worker-{i}.log"))
        procs.append(Proc(["beat"], env, logs / "beat.log"))
        yield procs
    finally:
        for p in procs:
            p.stop()


@contextmanager
def fresh_database() -> Iterator[str]:
    import psycopg

    name = f"mixlab_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{base}/{name}"
    try:
        yield url
    finally:
        from app.core.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _wait(pred, timeout: float, what: str, procs: list[Proc]):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.2)
    logs = "\n".join(f"--- {p.log_path.name}\n{p.tail()}" for p in procs)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


# --------------------------------------------------------------------------------------- one k


def measure(k: int, args: argparse.Namespace, workdir: Path) -> Figures:
    import redis
    from fastapi.testclient import TestClient

    from app.core.config import get_settings
    from app.core.db import session_scope
    from app.core.migrate import upgrade
    from app.main import create_app
    from app.services.projects import create_project
    from proxy_models.corpora import documents, take, write_jsonl

    runs_total = k * args.runs_per_worker
    with fresh_database() as url:
        upgrade(url)
        redis.Redis.from_url(REDIS_URL).flushdb()
        env = {
            "MIXLAB_DATABASE_URL": url,
            "MIXLAB_BROKER_URL": REDIS_URL,
            "MIXLAB_EXECUTOR": "celery",
            "MIXLAB_STORAGE_DIR": str(workdir / f"k{k}" / "storage"),
            "MIXLAB_SYNTHETIC_TRAIN_S": str(args.train_seconds),
        }
        os.environ.update(env)  # this process creates the experiment and sends the first messages
        get_settings.cache_clear()
        logs = workdir / f"k{k}" / "logs"
        logs.mkdir(parents=True)
        child_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        with processes(k, child_env, logs) as procs:
            _wait(lambda: all(p.ready() for p in procs[:k]), 120, f"{k} workers to be ready", procs)
            with session_scope() as session:
                _, key = create_project(session=session, name=f"bench-k{k}")
            auth = {"Authorization": f"Bearer {key}"}
            with TestClient(create_app()) as api:
                spec = {
                    "name": f"scale-out k={k}",
                    "domains": [{"name": d} for d in DOMAINS],
                    "strategy": args.strategy,
                    "fidelities": [{"preset": "xs", "tokens": 20_000}],
                    "max_epochs": 100,
                    "budget": runs_total,
                    "parallelism": k,
                }
                resp = api.post("/api/v1/experiments", json=spec, headers=auth)
                assert resp.status_code == 201, resp.text
                base = f"/api/v1/experiments/{resp.json()['id']}"
                for d in DOMAINS:
                    path = write_jsonl(workdir / f"k{k}" / f"{d}.jsonl", take(documents(d), max_chars=30_000))
                    resp = api.put(
                        f"{base}/domains/{d}/corpus",
                        params={"filename": path.name},
                        content=path.read_bytes(),
                        headers=auth,
                    )
                    assert resp.status_code == 200, resp.text
                assert api.post(f"{base}/start", headers=auth).json()["status"] == "preparing"

                def finished():  # type: ignore[no-untyped-def]
                    data = api.get(base, headers=auth).json()
                    return data if data["status"] in ("done", "failed", "cancelled") else None

                timeout = 90 + 3 * args.runs_per_worker * (args.train_seconds + 1.0)
                final = _wait(finished, timeout, f"k={k} to finish", procs)
                if final["status"] != "done":
                    raise RuntimeError(f"k={k}: experiment {final['status']}: {final['error']}")
            return figures(k, int(base.rsplit("/", 1)[1]), args.train_seconds, final["status"], args.verbose)


def figures(k: int, experiment_id: int, train_s: float, status: str, verbose: bool = False) -> Figures:
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.models import PlannerJob, Run

    with session_scope() as session:
        rows = session.execute(
            select(Run.worker, Run.created_at, Run.started_at, Run.finished_at, Run.status)
            .where(Run.experiment_id == experiment_id)
            .order_by(Run.id)
        ).all()
        passes = dict(
            session.execute(
                select(PlannerJob.job, PlannerJob.passes).where(PlannerJob.experiment_id == experiment_id)
            ).all()
        )
    runs = [r for r in rows if r.status == "succeeded"]
    assert len(runs) == len(rows), [r.status for r in rows]
    start = min(r.started_at for r in runs)
    end = max(r.finished_at for r in runs)
    window = (end - start).total_seconds()
    finishes = sorted(r.finished_at for r in runs)
    planning = []
    for r in runs[k:]:  # the first k are proposed together, before any run finished
        before = [f for f in finishes if f <= r.created_at]
        if before:
            planning.append((r.created_at - before[-1]).total_seconds())
    dispatch = [(r.started_at - r.created_at).total_seconds() for r in runs]
    starts = sorted(r.started_at for r in runs)
    if verbose:
        print(f"k={k} timeline (s from the first start): worker, proposed, started, finished")
        for r in runs:
            at = [(t - start).total_seconds() for t in (r.created_at, r.started_at, r.finished_at)]
            print(f"  {r.worker:>24} {at[0]:7.3f} {at[1]:7.3f} {at[2]:7.3f}")
    idle = []
    by_worker: dict[str, list] = {}
    for r in runs:
        by_worker.setdefault(r.worker, []).append(r)
    for own in by_worker.values():
        own.sort(key=lambda r: r.started_at)
        idle += [(b.started_at - a.finished_at).total_seconds() for a, b in zip(own, own[1:], strict=False)]
    return Figures(
        workers=k,
        runs=len(runs),
        window_s=window,
        runs_per_s=len(runs) / window,
        planning_s=statistics.fmean(planning) if planning else 0.0,
        dispatch_s=statistics.fmean(dispatch[k:]),
        first_claim_s=statistics.fmean(dispatch[:k]),
        ramp_s=(starts[k - 1] - starts[0]).total_seconds(),
        idle_s=statistics.fmean(idle) if idle else 0.0,
        overhead_s=k * window / len(runs) - train_s,
        status=status,
        planner_passes={str(j): int(n) for j, n in passes.items()},
    )


# --------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, few per worker (< 60 s)")
    parser.add_argument("--train-seconds", type=float, default=None, help="synthetic run length (2.0)")
    parser.add_argument("--runs-per-worker", type=int, default=None, help="runs per worker (12)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts (1,2,4)")
    parser.add_argument("--verbose", action="store_true", help="print every run's timeline")
    parser.add_argument(
        "--strategy", default="random", help="random (default: planning costs ~nothing) or one that fits"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep storage and worker logs here (default: a temp dir)"
    )
    args = parser.parse_args()
    if args.train_seconds is None:
        args.train_seconds = 0.5 if args.quick else 2.0
    if args.runs_per_worker is None:
        args.runs_per_worker = 4 if args.quick else 12
    ks = [int(x) for x in args.workers.split(",")]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(ROOT))

    results: dict[int, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="mixlab-scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        for k in ks:
            t0 = time.monotonic()
            results[k] = measure(k, args, workdir)
            f = results[k]
            print(
                f"k={k}: {f.runs} runs in {f.window_s:.1f} s ({f.runs_per_s:.3f} runs/s); "
                f"planner passes {f.planner_passes}; {time.monotonic() - t0:.0f} s with setup",
                flush=True,
            )

    one = results.get(1)
    print(f"\n{args.strategy}, synthetic runs of {args.train_seconds:g} s, {args.runs_per_worker} per worker")
    print(
        f"{'k':>2} {'runs':>5} {'window s':>9} {'runs/s':>7} {'eff':>5} {'overhead/run s':>15} "
        f"{'idle s':>7} {'planning s':>11} {'dispatch s':>11} {'1st claim s':>12} {'ramp s':>7}"
    )
    result = {}
    for k, f in results.items():
        eff = f.runs_per_s / (k * one.runs_per_s) if one else float("nan")
        print(
            f"{k:>2} {f.runs:>5} {f.window_s:>9.2f} {f.runs_per_s:>7.3f} {eff:>5.2f} {f.overhead_s:>15.3f} "
            f"{f.idle_s:>7.3f} {f.planning_s:>11.3f} {f.dispatch_s:>11.3f} {f.first_claim_s:>12.3f} "
            f"{f.ramp_s:>7.3f}"
        )
        if k != 1:
            result[f"eff_{k}"] = eff
    for k, f in results.items():
        result[f"runs_per_s_{k}"] = f.runs_per_s
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
