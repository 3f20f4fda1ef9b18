"""``mixlab demo``: a real, small experiment end to end in embedded mode.

A SQLite file, the API served on a local port, the in-process worker training real proxy LMs on text
bundled in installed packages (news, Python code, licences), RegMix choosing the mixtures, and the
recommendation read back over HTTP — the same code paths as the service, minus Postgres and Celery.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

SOURCES = {"sports": 300_000, "politics": 300_000, "code": 1_200_000, "legal": 1_200_000}
TARGET = {"sports": 0.5, "politics": 0.5}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int) -> Any:
    import uvicorn

    from app.main import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server


def run_demo(budget: float, workdir: Path, tokens: int | None = None, parallelism: int = 4) -> dict[str, Any]:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "mixlab.sqlite"
    for f in workdir.glob("mixlab.sqlite*"):
        f.unlink()
    os.environ["MIXLAB_DATABASE_URL"] = f"sqlite:///{db}"
    os.environ["MIXLAB_STORAGE_DIR"] = str(workdir / "storage")
    os.environ["MIXLAB_EXECUTOR"] = "embedded"

    from mixlab_client import Client

    from app.core.config import get_settings
    from app.core.db import session_scope
    from app.core.migrate import upgrade
    from app.services.projects import create_project
    from proxy_models.corpora import documents, take, write_jsonl

    get_settings.cache_clear()
    upgrade(os.environ["MIXLAB_DATABASE_URL"])
    with session_scope() as session:
        _, key = create_project(session=session, name="demo")
    print(f"database   {db}")
    files = {
        name: write_jsonl(workdir / "corpus" / f"{name}.jsonl", take(documents(name), max_chars=chars))
        for name, chars in SOURCES.items()
    }
    port = _free_port()
    server = _serve(port)
    print(f"API        http://127.0.0.1:{port}/docs (embedded worker in this process)")
    try:
        with Client(f"http://127.0.0.1:{port}", key) as client:
            fidelity: dict[str, Any] = {"preset": "xs"}
            if tokens:
                fidelity["tokens"] = tokens
            exp = client.create_experiment(
                name="demo: news target from news, code and licences",
                domains=[{"name": n} for n in SOURCES],
                target=TARGET,
                strategy="regmix",
                fidelities=[fidelity],
                budget=budget,
                parallelism=parallelism,
            )
            for name, path in files.items():
                info = exp.upload(name, path)
                print(f"uploaded   {name:<9} {info['documents']:>5} docs {info['bytes'] / 1e6:6.2f} MB")
            exp.start()
            final = exp.wait(poll_s=1.0, on_update=_progress_printer(budget))
            if final["status"] != "done":
                raise SystemExit(f"experiment ended {final['status']}: {final['error']}")
            rec = exp.recommendation()
            _report(final, rec)
            return rec
    finally:
        server.should_exit = True


def _progress_printer(budget: float) -> Any:
    start = time.monotonic()
    last: list[Any] = [None]

    def show(data: dict[str, Any]) -> None:
        counts = data["run_counts"]
        state = (data["status"], counts.get("succeeded", 0), counts.get("running", 0))
        if state == last[0]:
            return
        last[0] = state
        best = f"{data['best_loss']:.4f}" if data["best_loss"] is not None else "-"
        print(
            f"[{time.monotonic() - start:6.1f}s] {data['status']:<9} runs done {state[1]:>3}/{budget:.0f} "
            f"running {state[2]}  best target loss {best}",
            flush=True,
        )

    return show


def _report(exp: dict[str, Any], rec: dict[str, Any]) -> None:
    tokens = {d["name"]: d["tokens"] for d in exp["domains"]}
    total = sum(tokens.values())
    print(f"\nrecommended mixture (strategy {rec['strategy']}, {rec['n_runs']} runs, target {TARGET})")
    print(f"  {'domain':<10}{'tokens':>10}{'natural':>10}{'uniform':>10}{'recommended':>13}")
    for name, w in rec["weights"].items():
        natural, uniform = tokens[name] / total, 1 / len(tokens)
        print(f"  {name:<10}{tokens[name]:>10}{natural:>10.3f}{uniform:>10.3f}{w:>13.3f}")
    pred, std = rec["predicted_loss"], rec["std"]
    if pred is not None:
        print(f"  predicted target loss {pred:.4f}" + (f" ± {std:.4f}" if std is not None else ""))
    diag = rec["diagnostics"]
    if "cv_spearman" in diag:
        mae = diag.get("cv_mae", float("nan"))
        model = f"{diag['model']}, " if "model" in diag else ""
        print(f"  fit: {model}cross-validated Spearman {diag['cv_spearman']:.3f}, MAE {mae:.4f}")
    print(f"  best observed target loss {exp['best_loss']:.4f}")
    for warning in rec.get("warnings", []):
        print(f"  warning ({warning['code']}): {warning['message']}")
    print(f"  (read back over HTTP from {os.environ['MIXLAB_DATABASE_URL']})")
