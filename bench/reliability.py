"""Faults under load: kill workers mid-run, restart Redis and PostgreSQL, and count what was lost.

Everything runs on its own instances, never the shared ones: a PostgreSQL cluster made with ``initdb`` in
a temp dir and a ``redis-server``, each on a spare port. On them: `mixlab serve`, `mixlab beat` and one
`mixlab worker`, with synthetic runs (``MIXLAB_SYNTHETIC_TRAIN_S``: a run heartbeats for its length and
reports losses from a fixed law, so the faults hit the real claim/result/planning path, not training).
Two experiments run at once: a worker experiment, and an external one driven by two ask/tell clients
that keep a record of every result the API accepted. A reader thread GETs the experiments, their runs
and recommendations all along.

Faults: ``--kills`` times, wait for a worker run to be training and SIGKILL the worker's process group
(then start a new worker); ``--restarts`` times each, stop and start Redis, and stop (fast) and start
PostgreSQL. Afterwards both experiments must finish. Counted:

- ``survived``: kills after which the run that was training finished (re-queued by the reaper);
- ``lost_results``: results the API accepted (200) that are not stored as told;
- ``duplicate_results``: a run whose result was accepted twice, or more succeeded runs than budget;
- ``stuck_runs`` / ``stuck_experiments``: runs still queued or running, experiments not finished, at
  the end;
- ``api_5xx_outside_outage``: 5xx answers outside a Redis or PostgreSQL outage (+5 s to reconnect).
  During an outage 503 is the documented answer.

    python bench/reliability.py [--quick] [--kills 20] [--restarts 2] [--train-seconds 1.5]

``make bench-reliability`` runs the full version; ``tests/integration/test_reliability.py`` a short one.
Ends with ``RESULT kills=… survived=… lost_results=… duplicate_results=… stuck_runs=…
stuck_experiments=… api_5xx_outside_outage=…``.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.api_load import free_port  # noqa: E402
from bench.scale_out import DOMAINS, Proc  # noqa: E402

GRACE_S = 5.0  # after a dependency is back, connections in pools may still fail once


# ------------------------------------------------------------------------------ own PostgreSQL, Redis


class Postgres:
    """A throwaway cluster: initdb in a fresh temp dir, trust auth, listening on 127.0.0.1:``port``.

    The dir is made directly under the system temp dir, not the work dir: run as root, the cluster is
    the ``postgres`` user's, and that user cannot enter private dirs such as pytest's ``tmp_path``."""

    def __init__(self, port: int) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        self.bin = Path(bins[-1]) if bins else Path(shutil.which("pg_ctl") or "pg_ctl").parent
        self.root = Path(tempfile.mkdtemp(prefix="mixlab-reliability-pg-"))
        self.data, self.port = self.root / "pgdata", port
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stderr[-2000:]}")

    def start(self) -> None:
        opts = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.data.parent / "pg.log"), "-w", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.proc = subprocess.Popen(args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT)
        _wait(lambda: _listening(self.port), 20, "redis to listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := pred():
                return value
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# ------------------------------------------------------------------------------ load and bookkeeping


class Ledger:
    """What the clients saw: accepted results, and every API answer with its time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.told: dict[int, list[dict[str, float]]] = {}
        self.answers: list[tuple[float, int, str]] = []
        self.outages: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def answer(self, status: int, what: str) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), status, what))

    def five_xx_outside_outages(self) -> list[tuple[float, int, str]]:
        return [
            a
            for a in self.answers
            if a[1] >= 500 and not any(start <= a[0] <= end + GRACE_S for start, end in self.outages)
        ]

    @contextmanager
    def outage(self) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            with self.lock:
                self.outages.append((start, time.monotonic()))


def call(http: httpx.Client, ledger: Ledger, method: str, path: str, **kw: Any) -> httpx.Response | None:
    try:
        resp = http.request(method, path, **kw)
    except httpx.TransportError:
        ledger.answer(599, f"{method} {path}: no answer")
        return None
    ledger.answer(resp.status_code, f"{method} {path}: {resp.text[:200]}")
    return resp


def ask_tell_client(url: str, auth: dict[str, str], base: str, ledger: Ledger) -> None:
    """An external pipeline: ask, 'train' briefly, tell; records every accepted result."""
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        while not ledger.stop.is_set():
            asked = call(http, ledger, "POST", f"{base}/ask", params={"wait": 2})
            if asked is None or asked.status_code != 200:
                if (
                    asked is not None
                    and asked.status_code == 409
                    and asked.json()["error"]["code"] == "budget_spent"
                ):
                    return
                time.sleep(0.5)
                continue
            run, token = asked.json()["run"], asked.json()["lease_token"]
            losses = {d: 3.0 - 1.2 * w for d, w in run["weights"].items()}
            time.sleep(0.3)
            for _ in range(60):  # a result is worth retrying through an outage
                told = call(
                    http,
                    ledger,
                    "POST",
                    f"{base}/runs/{run['id']}/result",
                    json={"lease_token": token, "losses": losses},
                )
                if told is not None and told.status_code < 500:
                    if told.status_code == 200:
                        with ledger.lock:
                            ledger.told.setdefault(run["id"], []).append(losses)
                    break
                time.sleep(1)


def reader(url: str, auth: dict[str, str], bases: list[str], ledger: Ledger) -> None:
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        while not ledger.stop.is_set():
            for base in bases:
                for path in (base, f"{base}/runs", f"{base}/recommendation"):
                    call(http, ledger, "GET", path)
            time.sleep(0.1)


# ------------------------------------------------------------------------------ the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 kills, one restart each (< 60 s of faults)")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--restarts", type=int, default=2, help="restarts of Redis and of PostgreSQL, each")
    ap.add_argument("--train-seconds", type=float, default=1.5)
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: a temp dir)")
    args = ap.parse_args()
    if args.quick:
        args.kills, args.restarts = min(args.kills, 4), min(args.restarts, 1)
    with tempfile.TemporaryDirectory(prefix="mixlab-reliability-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures = run(args, work)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()))


def run(args: argparse.Namespace, work: Path) -> dict[str, int]:
    pg = Postgres(free_port())
    redis = Redis(free_port(), work / "redis.log")
    pg.start()
    redis.start()
    api_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MIXLAB_DATABASE_URL": pg.url,
        "MIXLAB_BROKER_URL": redis.url,
        "MIXLAB_EXECUTOR": "celery",
        "MIXLAB_STORAGE_DIR": str(work / "storage"),
        "MIXLAB_SYNTHETIC_TRAIN_S": str(args.train_seconds),
        "MIXLAB_STALE_AFTER_S": "6",
        "MIXLAB_REAP_EVERY_S": "1",
        "MIXLAB_LEASE_S": "15",
        "MIXLAB_RETRY_BACKOFF_S": "0.5",
        "MIXLAB_MAX_RUN_ATTEMPTS": "1000",  # every kill costs an attempt; a kill must never fail a run here
        "MIXLAB_RATE_LIMIT": "",
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("MIXLAB_")})
    from app.core.config import get_settings

    get_settings.cache_clear()
    from app.core.migrate import upgrade

    upgrade(pg.url)
    from app.core.db import get_engine, session_scope
    from app.services.projects import create_project

    with session_scope() as session:
        _, key = create_project(session=session, name="reliability")
    get_engine(pg.url).dispose()
    auth = {"Authorization": f"Bearer {key}"}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    server = Proc(["serve", "--port", str(api_port), "--no-migrate"], env, logs / "serve.log")
    beat = Proc(["beat"], env, logs / "beat.log")
    workers = [Proc(["worker", "--concurrency", "2"], env, logs / "worker-0.log")]
    url = f"http://127.0.0.1:{api_port}/api/v1"
    ledger = Ledger()
    threads: list[threading.Thread] = []
    try:
        _wait(lambda: httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200, 60, "the server")
        _wait(workers[0].ready, 120, "the worker")
        with httpx.Client(base_url=url, headers=auth, timeout=60) as api:
            worker_exp = make_worker_experiment(api, work, budget=args.kills + 6)
            external = make_external_experiment(api, budget=30)
        threads = [
            threading.Thread(target=ask_tell_client, args=(url, auth, external, ledger)) for _ in range(2)
        ] + [threading.Thread(target=reader, args=(url, auth, [worker_exp, external], ledger))]
        for t in threads:
            t.start()
        killed = faults(args, url, auth, worker_exp, workers, env, logs, pg, redis, ledger)
        with httpx.Client(base_url=url, headers=auth, timeout=30) as api:
            finished = wait_finished(
                api, [worker_exp, external], timeout=120 + 4 * args.kills * args.train_seconds
            )
        ledger.stop.set()
        for t in threads:
            t.join(60)
        return verify(killed, finished, ledger, [worker_exp, external])
    finally:
        ledger.stop.set()
        for p in [server, beat, *workers]:
            p.stop()
        redis.stop()
        try:
            pg.stop()
        except RuntimeError:
            pass
        pg.remove()


def make_worker_experiment(api: httpx.Client, work: Path, budget: int) -> str:
    from proxy_models.corpora import documents, take, write_jsonl

    spec = {
        "name": "reliability (workers)",
        "domains": [{"name": d} for d in DOMAINS],
        "strategy": "random",
        "fidelities": [{"preset": "xs", "tokens": 20_000}],
        "max_epochs": 100,
        "budget": budget,
        "parallelism": 1,
    }
    base = f"/experiments/{api.post('/experiments', json=spec).json()['id']}"
    for d in DOMAINS:
        path = write_jsonl(work / f"{d}.jsonl", take(documents(d), max_chars=30_000))
        api.put(
            f"{base}/domains/{d}/corpus", params={"filename": path.name}, content=path.read_bytes()
        ).raise_for_status()
    api.post(f"{base}/start").raise_for_status()
    return base


def make_external_experiment(api: httpx.Client, budget: int) -> str:
    spec = {
        "name": "reliability (ask/tell)",
        "executor": "external",
        "strategy": "random",
        "domains": [{"name": d, "tokens": 10**9} for d in DOMAINS],
        "fidelities": [{"name": "proxy", "tokens": 10**8, "cost": 1.0}],
        "budget": budget,
        "parallelism": 2,
    }
    base = f"/experiments/{api.post('/experiments', json=spec).json()['id']}"
    api.post(f"{base}/start").raise_for_status()
    return base


def faults(
    args: argparse.Namespace,
    url: str,
    auth: dict[str, str],
    worker_exp: str,
    workers: list[Proc],
    env: dict[str, str],
    logs: Path,
    pg: Postgres,
    redis: Redis,
    ledger: Ledger,
) -> list[int]:
    """Kill the worker mid-run ``kills`` times, with Redis and PostgreSQL restarts spread among the kills;
    returns the runs that were training when their worker was killed."""
    restarts = {
        round((i + 1) * args.kills / (2 * args.restarts + 1)): what
        for i, what in enumerate(["redis", "postgres"] * args.restarts)
    }
    killed: list[int] = []
    with httpx.Client(base_url=url, headers=auth, timeout=30) as api:
        for i in range(args.kills):
            last = killed[-1] if killed else None  # spread the kills: wait for the next run to train
            run_id = _wait(
                lambda last=last: _training(api, worker_exp, not_id=last),
                120,
                f"a run training (kill {i + 1})",
            )
            workers[-1].kill()
            killed.append(run_id)
            print(f"  kill {i + 1}/{args.kills}: worker killed while training run {run_id}", file=sys.stderr)
            workers.append(Proc(["worker", "--concurrency", "2"], env, logs / f"worker-{i + 1}.log"))
            _wait(workers[-1].ready, 120, "the new worker")
            if (what := restarts.get(i + 1)) is not None:
                with ledger.outage():
                    print(f"  restarting {what}", file=sys.stderr)
                    dependency = redis if what == "redis" else pg
                    dependency.stop()
                    time.sleep(3)
                    dependency.start()
    return killed


def _training(api: httpx.Client, base: str, not_id: int | None) -> int | None:
    resp = api.get(f"{base}/runs", params={"status": "running", "limit": 1})
    if resp.status_code != 200 or not resp.json()["items"]:
        return None
    run_id = int(resp.json()["items"][0]["id"])
    return run_id if run_id != not_id else None


def wait_finished(api: httpx.Client, bases: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        for base in bases:
            resp = api.get(base)
            if resp.status_code == 200:
                status[base] = resp.json()["status"]
        if len(status) == len(bases) and all(s in ("done", "failed", "cancelled") for s in status.values()):
            break
        time.sleep(1)
    return status


def verify(killed: list[int], finished: dict[str, str], ledger: Ledger, bases: list[str]) -> dict[str, int]:
    from sqlalchemy import select

    from app.core.db import session_scope
    from app.models import Experiment, Run

    ids = [int(b.rsplit("/", 1)[1]) for b in bases]
    with session_scope() as session:
        runs = {r.id: r for r in session.scalars(select(Run).where(Run.experiment_id.in_(ids)))}
        experiments = {e.id: e for e in session.scalars(select(Experiment).where(Experiment.id.in_(ids)))}
    lost = sum(
        1
        for run_id, told in ledger.told.items()
        if runs[run_id].status != "succeeded" or runs[run_id].losses != told[0]
    )
    duplicates = sum(len(told) - 1 for told in ledger.told.values())
    for e in experiments.values():
        succeeded = sum(
            1
            for r in runs.values()
            if r.experiment_id == e.id and r.status == "succeeded" and r.origin != "import"
        )
        duplicates += max(0, succeeded - int(e.budget))
    bad = ledger.five_xx_outside_outages()
    for _, status, what in bad[:10]:
        print(f"  5xx outside an outage: {status} {what}", file=sys.stderr)
    for e in experiments.values():
        print(f"  experiment {e.id} ({e.name}): {e.status} {e.error or ''}", file=sys.stderr)
    return {
        "kills": len(killed),
        "survived": sum(1 for r in killed if runs[r].status == "succeeded"),
        "lost_results": lost,
        "duplicate_results": duplicates,
        "stuck_runs": sum(1 for r in runs.values() if r.status in ("queued", "running")),
        "stuck_experiments": sum(
            1 for e in experiments.values() if e.status not in ("done", "failed", "cancelled")
        ),
        "api_5xx_outside_outage": len(bad),
    }


if __name__ == "__main__":
    main()
