"""Small builders shared by the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def external_spec(**over: Any) -> dict[str, Any]:
    """An ask/tell experiment over three domains with two fidelities."""
    spec: dict[str, Any] = {
        "name": "ext",
        "executor": "external",
        "strategy": "random",
        "domains": [
            {"name": "web", "tokens": 10**9},
            {"name": "code", "tokens": 10**8},
            {"name": "law", "tokens": 10**8},
        ],
        "target": {"web": 0.5, "code": 0.5},
        "fidelities": [
            {"name": "small", "tokens": 10**6, "cost": 1.0},
            {"name": "big", "tokens": 10**7, "cost": 4.0},
        ],
        "budget": 4,
        "parallelism": 2,
    }
    spec.update(over)
    return spec


def fake_losses(weights: dict[str, float]) -> dict[str, float]:
    """A deterministic mixing law: more of a domain → lower loss on it."""
    return {d: 3.0 - 1.5 * w for d, w in weights.items()}


def expire_and_reap(run_id: int) -> None:
    """The lessee of ``run_id`` stalled: its lease ran out long ago, and the reaper re-queues the run."""
    from datetime import timedelta

    from app.core.db import session_scope
    from app.models import Run, utcnow
    from app.services.runs import reap

    with session_scope() as session:
        session.get(Run, run_id).lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_scope() as session:
        reap(session=session)


def run_bench(args: list[str], timeout: float) -> tuple[dict[str, float], str]:
    """Run ``python bench/<args>``; its RESULT line's figures, and its stderr for failure messages."""
    out = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    result = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert result.startswith("RESULT"), out.stderr[-4000:]
    return {k: float(v) for k, v in (kv.split("=") for kv in result.split()[1:])}, out.stderr[-4000:]


def free_port() -> int:
    """A port nothing listens on (closed again on return: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving(url: str) -> bool:
    """A `mixlab serve` at ``url`` answers its liveness probe."""
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def error_code(resp: Any) -> str:
    return str(resp.json()["error"]["code"])


def wait_for(
    pred: Callable[[], Any], what: str, timeout: float = 60.0, every: float = 0.05, logs: Sequence[Path] = ()
) -> Any:
    """Poll until ``pred()`` is truthy (the planner works off the request path); on time-out, show the
    tails of ``logs``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(every)
    tails = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in logs)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{tails}")


def planner_idle(experiment_id: int) -> bool:
    """No planning requested and none in progress: what the planner stores (recommendation, then its fit
    plot) is all there, and nothing new is on its way."""
    from sqlalchemy import func, or_, select

    from app.core.db import session_scope
    from app.models import PlannerJob

    with session_scope() as session:
        busy = session.scalar(
            select(func.count())
            .select_from(PlannerJob)
            .where(
                PlannerJob.experiment_id == experiment_id,
                or_(PlannerJob.requested > PlannerJob.done, PlannerJob.lease_token.is_not(None)),
            )
        )
    return busy == 0


class MixlabProcess:
    """A `mixlab` command (``worker``, ``beat``) in its own process group, so a kill takes its children."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path, self.log = log, log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args],
            cwd=ROOT,
            env={**os.environ, **env, "OMP_NUM_THREADS": "1", "MIXLAB_TRAIN_THREADS": "1"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def ready(self) -> bool:
        """A Celery worker says "ready." once it consumes its queues."""
        assert self.proc.poll() is None, self.log_path.read_text()[-4000:]
        return b" ready." in self.log_path.read_bytes()

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """A warm shutdown: the main process alone gets SIGTERM, so a Celery worker finishes the task in
        hand (a signal to the whole group would kill its pool child mid-task and log a lost worker)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def upload_corpora(api: Any, base: str, auth: dict[str, str], folder: Path, max_chars: int) -> None:
    """Upload ``max_chars`` of each domain's bundled text (domains named after sources) as its corpus."""
    from proxy_models.corpora import documents, take, write_jsonl

    for domain in api.get(base, headers=auth).json()["domains"]:
        name = domain["name"]
        path = write_jsonl(folder / f"{name}.jsonl", take(documents(name), max_chars=max_chars))
        resp = api.put(
            f"{base}/domains/{name}/corpus",
            params={"filename": path.name},
            content=path.read_bytes(),
            headers=auth,
        )
        assert resp.status_code == 200, resp.text
