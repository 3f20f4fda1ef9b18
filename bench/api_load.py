"""API latency and throughput at a 10,000-run history: requests only read and write rows, the planner fits.

Loopback only. Starts `mixlab serve` (``--server-workers`` 2: one uvicorn process per core of the 2-core
target machine) and, on PostgreSQL (default), two planner workers (`mixlab worker --queues mixlab-plan`
and `--queues mixlab-refit`, Celery on Redis); with ``--sqlite`` the server's embedded planner threads
plan instead. Then, on an external experiment:

1. import ``--runs`` runs (10,000) and time until a recommendation covering them is stored (no ask);
2. ``--clients`` (16) clients loop ask(wait) + tell back to back for ``--seconds``: the most pairs/s the
   machine serves, ask and tell p50/p99 at that saturation, "not ready" answers, errors. With 16 clients
   and no pause, latency is queueing: mean = 16 / (2 x pairs/s) by Little's law, whatever the code does;
3. the same clients GET the recommendation at a paced ``--rec-rate`` (200 req/s in all), then the
   dashboard page and its data: p50/p99;
4. the same clients paced to ``--pair-rate`` (200 pairs/s in all, the throughput target): ask and tell
   p50/p99 at that load (``*_paced``), a paced ask timed from its scheduled start;
5. phases 2-4 again on an experiment with 100 imported runs: ``ratio_10k_vs_100`` is the worse of the
   (back-to-back) ask and tell p99 ratios.

The clients are asyncio tasks on lean keep-alive connections (``bench/loadgen.py``), so the load
generator takes little of the CPU the server needs. Losses come from a fixed synthetic mixing law (no
training). ``--quick`` (< 60 s) keeps the 10,000-run history but uses the ``random`` strategy (its
recommendation is the best run, no fit) and short phases; the full run uses ``regmix``, whose fit at
10,000 runs is what the import-to-recommendation time measures.

    python bench/api_load.py [--quick] [--sqlite] [--runs 10000] [--clients 16] [--seconds 20]
        [--pair-rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import Connection, Response  # noqa: E402
from bench.scale_out import fresh_database  # noqa: E402

REDIS_URL = os.environ.get("MIXLAB_BENCH_REDIS", "redis://127.0.0.1:6379/13")
DOMAINS = ("web", "code", "books", "papers", "law")
TARGET = {"web": 0.4, "code": 0.3, "papers": 0.3}
NOT_READY = "no_run_ready"


def losses(weights: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """A fixed synthetic law: more of a domain lowers its loss, with diminishing returns, plus noise."""
    return {d: float(3.2 - 0.9 * np.sqrt(weights[d]) + rng.normal(0, 0.01)) for d in DOMAINS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(sqlite: bool, workdir: Path) -> Iterator[str]:
    from app.core.migrate import upgrade

    if sqlite:
        url = f"sqlite:///{workdir / 'mixlab.sqlite'}"
        upgrade(url)
        yield url
        return
    with fresh_database() as url:
        upgrade(url)
        yield url


@contextmanager
def processes(
    env: dict[str, str], sqlite: bool, port: int, log: Path, workers: int
) -> Iterator[dict[str, set[int]]]:
    """The server (and the planner workers on Postgres), each in its own process group; yields the
    groups' ids by role."""
    out = log.open("ab")
    serve = ["serve", "--port", str(port), "--no-migrate", "--workers", str(workers)]
    cmds = [[sys.executable, "-m", "app.cli", *serve]]
    if not sqlite:
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        for queue in ("mixlab-plan", "mixlab-refit"):  # a slow refit never holds up proposals
            cmds.append([sys.executable, "-m", "app.cli", "worker", "--queues", queue, "--concurrency", "1"])
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for cmd in cmds
    ]
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise SystemExit(f"the server did not start; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield {"server": {procs[0].pid}, "planners": {p.pid for p in procs[1:]}}
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        out.close()
        problems = [
            ln
            for ln in log.read_text(errors="replace").splitlines()
            if " ERROR " in ln or "unavailable" in ln
        ]
        for line in problems[:20]:  # what any 5xx was: the server logs each one
            print(f"  server log: {line[:400]}", file=sys.stderr)


def group_cpu_s(groups: set[int]) -> float:
    """CPU seconds used so far by the processes of these process groups (Linux ``/proc``)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) in groups:  # pgrp; utime and stime follow
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine so far, all cores."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_s(groups: dict[str, set[int]]) -> dict[str, float]:
    """CPU seconds so far per role (process groups, this load generator, the whole machine): two
    samples bracket a phase to show where the ask+tell pairs' cost goes."""
    used = {role: group_cpu_s(ids) for role, ids in groups.items()}
    used["load generator"] = time.process_time()
    used["machine"] = machine_cpu_s()
    return used


class Stats:
    """Latencies per endpoint and outcome counts, shared by the client tasks (one event loop)."""

    def __init__(self) -> None:
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self.pairs_per_s = 0.0  # ask + tell pairs completed per second, clients back to back
        self.paced_pairs_per_s = 0.0  # the same, clients paced to ``--pair-rate``
        self.cpu_ms_per_pair: dict[str, float] = {}  # by role, over the pairs phase

    async def call(
        self, conn: Connection, name: str, method: str, path: str, since: float | None = None, **kw: Any
    ) -> Response | None:
        """One request; its latency counts from ``since`` (a paced request's scheduled start) if given."""
        t = time.perf_counter() if since is None else since
        try:
            resp = await conn.request(method, path, **kw)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.counts["errors"] += 1
            return None
        self.ms[name].append(1000 * (time.perf_counter() - t))
        if resp.status == 409 and resp.json()["error"]["code"] == NOT_READY:
            self.counts["not_ready"] += 1
        elif resp.status >= 400:
            self.counts["errors"] += 1
            self.counts[f"{name}_{resp.status}"] += 1
        return resp

    def pct(self, name: str, q: float) -> float:
        values = self.ms.get(name)
        return float(np.percentile(values, q)) if values else float("nan")


def make_experiment(api: httpx.Client, strategy: str, n_import: int, seed: int) -> str:
    spec = {
        "name": f"api-load {n_import}",
        "executor": "external",
        "strategy": strategy,
        "domains": [{"name": d, "tokens": 10**9} for d in DOMAINS],
        "target": TARGET,
        "fidelities": [{"name": "proxy", "tokens": 10**8, "cost": 1.0}],
        "budget": 100_000,
        "parallelism": 16,
        "seed": seed,
    }
    exp = api.post("/experiments", json=spec)
    exp.raise_for_status()
    base = f"/experiments/{exp.json()['id']}"
    api.post(f"{base}/start").raise_for_status()
    return base


def import_runs(api: httpx.Client, base: str, n: int, seed: int) -> float:
    """Import ``n`` runs; seconds from the end of the import to a stored recommendation covering them."""
    rng = np.random.default_rng(seed)
    runs = []
    for w in rng.dirichlet(np.ones(len(DOMAINS)), n):
        weights = dict(zip(DOMAINS, map(float, w), strict=True))
        runs.append({"weights": weights, "losses": losses(weights, rng)})
    t = time.perf_counter()
    api.post(f"{base}/runs/import", json={"runs": runs}, timeout=120).raise_for_status()  # one call
    done = time.perf_counter()
    print(f"  imported {n} runs in {done - t:.1f} s", file=sys.stderr)
    while time.perf_counter() - done < 600:
        rec = api.get(f"{base}/recommendation")
        if rec.status_code == 200 and rec.json()["n_runs"] >= n:
            return time.perf_counter() - done
        time.sleep(0.1)
    return float("inf")


async def pairs(
    url: str,
    headers: dict[str, str],
    base: str,
    clients: int,
    seconds: float,
    stats: Stats,
    rate: float | None = None,
) -> int:
    """Clients loop ask + tell, back to back or, with ``rate``, paced to ``rate`` pairs/s in all; returns
    the pairs completed. A paced ask's latency counts from its scheduled start, so a pair that starts
    late because the one before it was slow is charged its wait (no coordinated omission)."""
    stop = time.monotonic() + seconds
    done = 0
    suffix = "" if rate is None else "_paced"

    async def client(i: int) -> None:
        nonlocal done
        rng = np.random.default_rng(1000 + i)
        conn = Connection(url, headers)
        interval = 0.0 if rate is None else clients / rate
        next_at = time.perf_counter() + i * interval / clients
        while time.monotonic() < stop:
            since = None
            if rate is not None:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                since, next_at = next_at, next_at + interval
            asked = await stats.call(conn, "ask" + suffix, "POST", f"{base}/ask", since, params={"wait": 2})
            if asked is None or asked.status != 200:
                continue
            lease = asked.json()
            run = lease["run"]
            told = await stats.call(
                conn,
                "tell" + suffix,
                "POST",
                f"{base}/runs/{run['id']}/result",
                json_body={"lease_token": lease["lease_token"], "losses": losses(run["weights"], rng)},
            )
            if told is not None and told.status == 200:
                done += 1
        await conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return done


async def reads(
    url: str, headers: dict[str, str], base: str, clients: int, seconds: float, rate: float, stats: Stats
) -> None:
    """Paced GETs of the recommendation, then unpaced dashboard page + data."""
    page = f"/ui{base}"  # the dashboard page of the experiment whose API path is ``base``
    cookie = {"Cookie": f"mixlab_key={headers['Authorization'].split()[1]}"}

    async def rec_client(i: int) -> None:
        interval = clients / rate
        conn = Connection(url, headers)
        next_at = time.monotonic() + i * interval / clients
        stop = time.monotonic() + seconds
        while next_at < stop:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await stats.call(conn, "recommendation", "GET", f"{base}/recommendation")
            next_at += interval
        await conn.close()

    async def dashboard_client(i: int) -> None:
        stop = time.monotonic() + seconds / 2
        conn = Connection(url.removesuffix("/api/v1"), {**headers, **cookie})
        while time.monotonic() < stop:
            await stats.call(conn, "dashboard_page", "GET", page)
            await stats.call(conn, "dashboard", "GET", f"/api/v1{base}/dashboard")
        await conn.close()

    await asyncio.gather(*(rec_client(i) for i in range(clients)))
    await asyncio.gather(*(dashboard_client(i) for i in range(max(1, clients // 4))))


def _measured_pairs(
    url: str,
    headers: dict[str, str],
    base: str,
    args: argparse.Namespace,
    label: str,
    groups: dict[str, set[int]],
    stats: Stats,
    rate: float | None = None,
) -> tuple[int, float, dict[str, float]]:
    """A pairs phase and where its CPU went: (pairs, pairs/s, CPU ms per pair by role)."""
    before, t = cpu_s(groups), time.perf_counter()
    n = asyncio.run(pairs(url, headers, base, args.clients, args.seconds, stats, rate=rate))
    elapsed, after = time.perf_counter() - t, cpu_s(groups)
    used = {role: after[role] - before[role] for role in after}
    used["the rest (Postgres, Redis, kernel)"] = used["machine"] - sum(
        v for role, v in used.items() if role != "machine"
    )
    per_pair = {role: 1000 * v / max(n, 1) for role, v in used.items()}
    print(
        f"  [{label}] {n / elapsed:.1f} pairs/s; CPU per ask+tell pair: "
        + ", ".join(f"{role} {ms:.1f} ms" for role, ms in per_pair.items() if role != "machine")
        + f"; the machine was {100 * used['machine'] / elapsed / (os.cpu_count() or 1):.0f}% busy",
        file=sys.stderr,
    )
    return n, n / elapsed, per_pair


def phase(
    url: str,
    headers: dict[str, str],
    base: str,
    args: argparse.Namespace,
    label: str,
    groups: dict[str, set[int]],
) -> Stats:
    stats = Stats()
    n, stats.pairs_per_s, stats.cpu_ms_per_pair = _measured_pairs(
        url, headers, base, args, label, groups, stats
    )
    asyncio.run(reads(url, headers, base, args.clients, args.seconds, args.rec_rate, stats))
    _, stats.paced_pairs_per_s, _ = _measured_pairs(
        url, headers, base, args, f"{label}, paced", groups, stats, rate=args.pair_rate
    )
    print(
        f"  [{label}] {n} pairs; "
        + ", ".join(
            f"{k} p50 {stats.pct(k, 50):.1f} / p99 {stats.pct(k, 99):.1f} ms (n={len(v)})"
            for k, v in sorted(stats.ms.items())
        )
        + f"; counts {dict(stats.counts)}",
        file=sys.stderr,
    )
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="random strategy, 4 s phases (< 60 s)")
    ap.add_argument(
        "--sqlite", action="store_true", help="embedded mode on SQLite instead of Postgres + Redis"
    )
    ap.add_argument("--runs", type=int, default=10_000, help="runs imported before the load")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    ap.add_argument(
        "--pair-rate",
        type=float,
        default=200.0,
        help="ask+tell pairs per second, all clients, in the paced pairs phase (the throughput target)",
    )
    ap.add_argument(
        "--rec-rate", type=float, default=200.0, help="recommendation GETs per second, all clients"
    )
    ap.add_argument("--strategy", default=None, help="default: regmix (random with --quick)")
    ap.add_argument(
        "--server-workers",
        type=int,
        default=2,
        help="`mixlab serve --workers`: one per core (Postgres only; embedded mode has one process)",
    )
    args = ap.parse_args()
    workers = 1 if args.sqlite else args.server_workers
    if args.quick:
        args.seconds = min(args.seconds, 4.0)
    strategy = args.strategy or ("random" if args.quick else "regmix")

    with (
        tempfile.TemporaryDirectory(prefix="mixlab-api-load-") as tmp,
        database(args.sqlite, Path(tmp)) as db_url,
    ):
        env = {
            "MIXLAB_DATABASE_URL": db_url,
            "MIXLAB_STORAGE_DIR": str(Path(tmp) / "storage"),
            "MIXLAB_EXECUTOR": "embedded" if args.sqlite else "celery",
            "MIXLAB_EMBEDDED_TRAINER": "false",
            "MIXLAB_BROKER_URL": REDIS_URL,
            "MIXLAB_RATE_LIMIT": "",  # one key drives all 16 clients: measure the service, not the limiter
            "TOKENIZERS_PARALLELISM": "false",
        }
        os.environ.update(env)
        from app.core.config import get_settings
        from app.core.db import session_scope
        from app.services.projects import create_project

        get_settings.cache_clear()
        with session_scope() as session:
            _, key = create_project(session=session, name="api-load")
        headers = {"Authorization": f"Bearer {key}"}
        port = free_port()
        url = f"http://127.0.0.1:{port}/api/v1"
        backend = "sqlite (embedded planner)" if args.sqlite else "postgres + redis (celery planner)"
        print(
            f"api_load: {backend}, {workers} server process(es), strategy {strategy}, {args.clients} clients",
            file=sys.stderr,
        )
        with (
            processes(env, args.sqlite, port, Path(tmp) / "server.log", workers) as groups,
            httpx.Client(base_url=url, headers=headers, timeout=60) as api,
        ):
            big = make_experiment(api, strategy, args.runs, seed=0)
            import_to_rec = import_runs(api, big, args.runs, seed=0)
            print(f"  recommendation stored {import_to_rec:.1f} s after the import", file=sys.stderr)
            at_10k = phase(url, headers, big, args, f"{args.runs} runs", groups)
            small = make_experiment(api, strategy, 100, seed=1)
            import_runs(api, small, 100, seed=1)
            at_100 = phase(url, headers, small, args, "100 runs", groups)

    ratio = max(at_10k.pct(k, 99) / at_100.pct(k, 99) for k in ("ask", "tell"))
    errors = at_10k.counts["errors"] + at_100.counts["errors"]
    dashboard = max(at_10k.pct("dashboard", 99), at_10k.pct("dashboard_page", 99))
    print(f"{'endpoint':<16}{'p50 ms':>9}{'p99 ms':>9}{'p99 @100':>10}")
    for name in ("ask", "tell", "ask_paced", "tell_paced", "recommendation", "dashboard", "dashboard_page"):
        print(
            f"{name:<16}{at_10k.pct(name, 50):>9.1f}{at_10k.pct(name, 99):>9.1f}{at_100.pct(name, 99):>10.1f}"
        )
    print(
        f"pairs/s {at_10k.pairs_per_s:.1f} at {args.runs} runs, "
        f"{at_100.pairs_per_s:.1f} at 100 (back to back); paced at {args.pair_rate:.0f}/s: "
        f"{at_10k.paced_pairs_per_s:.1f} pairs/s; not-ready answers "
        f"{at_10k.counts['not_ready']} / {at_100.counts['not_ready']}; errors {errors}"
    )
    print(
        f"RESULT ask_p99_ms={at_10k.pct('ask', 99):.1f} tell_p99_ms={at_10k.pct('tell', 99):.1f} "
        f"pairs_per_s={at_10k.pairs_per_s:.1f} "
        f"ask_p99_paced_ms={at_10k.pct('ask_paced', 99):.1f} "
        f"tell_p99_paced_ms={at_10k.pct('tell_paced', 99):.1f} "
        f"rec_p99_ms={at_10k.pct('recommendation', 99):.1f} "
        f"dashboard_p99_ms={dashboard:.1f} import_to_rec_s={import_to_rec:.1f} ratio_10k_vs_100={ratio:.2f} "
        f"errors={errors} not_ready={at_10k.counts['not_ready']} "
        f"server_cpu_ms_per_pair={at_10k.cpu_ms_per_pair['server']:.1f}"
    )


if __name__ == "__main__":
    main()
