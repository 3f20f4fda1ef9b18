"""The ``mixlab`` command line: run the server and workers, manage projects, drive experiments."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

cli = typer.Typer(
    help="mixlab: find data-mixture weights with small proxy LMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
project_cli = typer.Typer(
    help="Projects and API keys (talks to the database directly).", no_args_is_help=True
)
experiment_cli = typer.Typer(help="Experiments on a running server (via the SDK).", no_args_is_help=True)
cli.add_typer(project_cli, name="project")
cli.add_typer(experiment_cli, name="experiment")

Url = Annotated[str, typer.Option(envvar="MIXLAB_URL", help="server address")]
Key = Annotated[str, typer.Option(envvar="MIXLAB_API_KEY", help="project API key")]


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (MIXLAB_DATABASE_URL)."""
    from app.core.config import get_settings
    from app.core.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    typer.echo(f"database at {url.split('@')[-1]} is up to date")


@cli.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate")] = True,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes (service mode only: requests use every core)")
    ] = 1,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="a log line per request; off by default, as in gunicorn: at hundreds of asks and tells a "
            "second, formatting those lines is a visible share of the server's CPU. Server errors are "
            "logged either way",
        ),
    ] = False,
) -> None:
    """Run the API server. With MIXLAB_EXECUTOR=embedded (default) it also plans and trains in-process."""
    import uvicorn

    from app.core.config import get_settings
    from app.core.migrate import upgrade

    _logging()
    settings = get_settings()
    if workers > 1 and settings.executor != "celery":
        raise UsageError(
            "--workers > 1 needs MIXLAB_EXECUTOR=celery: embedded mode plans in the one server process"
        )
    if migrate_first:
        upgrade(settings.database_url)
    uvicorn.run(
        "app.main:create_app", factory=True, host=host, port=port, workers=workers, access_log=access_log
    )


@cli.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="tasks at once (a training run uses all cores)")] = 1,
    queues: Annotated[
        str,
        typer.Option(
            help="comma-separated: mixlab (training, preparation), mixlab-plan (proposals), "
            "mixlab-refit (interim recommendations)"
        ),
    ] = "mixlab,mixlab-plan,mixlab-refit",
    beat: Annotated[
        bool, typer.Option("--beat/--no-beat", help="also run the reaper here (prefer `mixlab beat`)")
    ] = False,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker (service mode: MIXLAB_BROKER_URL, MIXLAB_DATABASE_URL)."""
    from app.core.config import get_settings
    from workers.celery_app import celery_app
    from workers.priority import background, lower_this_session

    get_settings().storage_dir.mkdir(parents=True, exist_ok=True)
    if background(queues.split(",")):
        lower_this_session()  # its fits and training yield to the API's requests (MIXLAB_BACKGROUND_NICE)
    argv = ["worker", f"--loglevel={loglevel}", f"--concurrency={concurrency}", "-Q", queues]
    if beat:
        argv.append("--beat")
    celery_app.worker_main(argv)


@cli.command()
def beat(loglevel: str = "INFO") -> None:
    """Run Celery beat: the periodic reaper. Run exactly one, however many workers there are."""
    from app.core.config import get_settings
    from workers.celery_app import celery_app

    get_settings().storage_dir.mkdir(parents=True, exist_ok=True)  # beat keeps its schedule there
    celery_app.start(["beat", f"--loglevel={loglevel}"])


@cli.command()
def demo(
    budget: Annotated[float, typer.Option(help="proxy runs to train")] = 12,
    tokens: Annotated[int, typer.Option(help="training tokens per proxy run (xs preset)")] = 200_000,
    workdir: Annotated[Path, typer.Option(help="where the demo keeps its database and files")] = Path(
        ".mixlab/demo"
    ),
) -> None:
    """Run a real small experiment end to end: SQLite, in-process worker, proxy LMs on bundled text."""
    from app.demo import run_demo

    run_demo(budget=budget, workdir=workdir, tokens=tokens)


@project_cli.command("create")
def project_create(name: str) -> None:
    """Create a project and print its API key (shown once)."""
    from app.core.db import session_scope
    from app.services.projects import create_project

    with session_scope() as session:
        project, key = create_project(session=session, name=name)
        typer.echo(f"project {project.name} (id {project.id})")
    typer.echo(f"API key: {key}")


def _client(url: str, key: str) -> Any:
    from mixlab_client import Client

    return Client(url, key)


class UsageError(Exception):
    """A mistake in the command's input: one line, exit code 2, nothing created."""


Json = Annotated[bool, typer.Option("--json", help="print JSON instead of a summary")]


def _read_spec(spec: Path, corpus: list[str]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The spec and the corpora, checked before anything is created on the server."""
    if not spec.is_file():
        raise UsageError(f"{spec}: no such file")
    try:
        data = json.loads(spec.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{spec} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{spec} must hold a JSON object (the experiment's fields)")
    names = [d.get("name") for d in data.get("domains", []) if isinstance(d, dict)]
    files: dict[str, Path] = {}
    for item in corpus:
        domain, sep, path = item.partition("=")
        if not sep or not domain or not path:
            raise UsageError(f"--corpus {item!r}: write DOMAIN=PATH")
        if domain not in names:
            raise UsageError(f"--corpus {item!r}: {domain!r} is not a domain of the spec; domains: {names}")
        file = Path(path)
        if not file.is_file() or not os.access(file, os.R_OK):
            raise UsageError(f"--corpus {item!r}: {path} is not a readable file")
        files[domain] = file
    return data, files


@experiment_cli.command("create")
def experiment_create(
    spec: Annotated[Path, typer.Argument(help="JSON file with the experiment (see /docs, ExperimentCreate)")],
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    corpus: Annotated[list[str], typer.Option(help="DOMAIN=PATH to upload; repeatable")] = [],  # noqa: B006
    start: Annotated[bool, typer.Option(help="start once the corpora are uploaded")] = False,
    as_json: Json = False,
) -> None:
    """Create an experiment from a JSON spec, upload corpora, optionally start it.

    Every input is checked first; if an upload fails, the draft is deleted again."""
    data, files = _read_spec(spec, corpus)
    exp = _client(url, key).create_experiment(**data)
    try:
        for domain, path in files.items():
            exp.upload(domain, path)
            if not as_json:
                typer.echo(f"uploaded {path} as {domain}")
    except BaseException:
        exp.delete(force=True)
        raise
    if start:
        exp.start()
    _show(exp.refresh(), as_json)


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
        return
    tags = f" [{', '.join(data['tags'])}]" if data.get("tags") else ""
    typer.echo(
        f"experiment {data['id']} {data['name']!r}{tags}: {data['status']}, strategy {data['strategy']}, "
        f"spent {data['spent']:.1f}/{data['budget']:g}, runs {data['run_counts']}, "
        f"best loss {data['best_loss']}"
    )
    if data.get("error"):
        typer.echo(f"error: {data['error']}")


@experiment_cli.command("list")
def experiment_list(
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    tag: Annotated[str | None, typer.Option(help="only with this tag")] = None,
    name: Annotated[str | None, typer.Option(help="names containing this")] = None,
    archived: Annotated[bool, typer.Option(help="the archived ones instead")] = False,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    as_json: Json = False,
) -> None:
    """Experiments, newest first."""
    items = []
    for exp in _client(url, key).experiments(status=status, tag=tag, name=name, archived=archived or None):
        items.append(exp.data)
        if len(items) >= limit:
            break
    if as_json:
        typer.echo(json.dumps(items, indent=2, default=str))
        return
    for e in items:
        typer.echo(
            f"{e['id']:>6}  {e['status']:<10} {e['strategy']:<10} "
            f"{e['spent']:>7.1f}/{e['budget']:<7g} {e['name']}"
        )


@experiment_cli.command("show")
def experiment_show(
    experiment_id: int, url: Url = "http://127.0.0.1:8000", key: Key = "", as_json: Json = False
) -> None:
    """Status, runs per state, budget spent and best loss."""
    _show(_client(url, key).experiment(experiment_id).data, as_json)


experiment_cli.command("status", hidden=True)(experiment_show)  # the older name


@experiment_cli.command("start")
def experiment_start(
    experiment_id: int, url: Url = "http://127.0.0.1:8000", key: Key = "", as_json: Json = False
) -> None:
    """Start a draft: prepare its data, then search."""
    _show(_client(url, key).experiment(experiment_id).start(), as_json)


@experiment_cli.command("cancel")
def experiment_cancel(
    experiment_id: int, url: Url = "http://127.0.0.1:8000", key: Key = "", as_json: Json = False
) -> None:
    """Cancel it and its queued and running runs."""
    _show(_client(url, key).experiment(experiment_id).cancel(), as_json)


@experiment_cli.command("delete")
def experiment_delete(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    force: Annotated[bool, typer.Option(help="also while workers train its runs")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete it, its runs and its files."""
    exp = _client(url, key).experiment(experiment_id)
    if not yes:
        typer.confirm(f"delete experiment {exp.id} {exp.data['name']!r} and its runs?", abort=True)
    exp.delete(force=force)
    typer.echo(f"deleted experiment {experiment_id}")


@experiment_cli.command("runs")
def experiment_runs(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    status: Annotated[str | None, typer.Option(help="only this status")] = None,
    fidelity: Annotated[str | None, typer.Option(help="only this fidelity")] = None,
    csv: Annotated[
        bool, typer.Option("--csv", help="every run as CSV (weights and losses per domain)")
    ] = False,
    as_json: Json = False,
) -> None:
    """The runs: a table, JSON, or CSV."""
    exp = _client(url, key).experiment(experiment_id)
    if csv:
        typer.echo(exp.runs_csv(status=status, fidelity=fidelity), nl=False)
        return
    runs = list(exp.runs(status=status, fidelity=fidelity))
    if as_json:
        typer.echo(json.dumps(runs, indent=2, default=str))
        return
    for r in runs:
        loss = "" if r["target_loss"] is None else f"{r['target_loss']:.4f}"
        weights = " ".join(f"{d}={w:.2f}" for d, w in r["weights"].items())
        typer.echo(f"{r['id']:>7}  {r['status']:<10} {r['fidelity']:<10} {loss:>8}  {weights}")


@experiment_cli.command("export")
def experiment_export(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    fmt: Annotated[str, typer.Option("--format", help="json, yaml or hf (a datasets snippet)")] = "json",
) -> None:
    """The recommended mixture as a file: JSON, YAML, or a ready-to-paste interleave_datasets snippet."""
    if fmt not in ("json", "yaml", "hf"):
        raise UsageError(f"--format {fmt!r}: use json, yaml or hf")
    typer.echo(_client(url, key).experiment(experiment_id).export(fmt), nl=False)


@experiment_cli.command("watch")
def experiment_watch(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    every: Annotated[float, typer.Option(help="seconds between polls")] = 2.0,
) -> None:
    """Live progress: a bar per training run and the budget, until the experiment ends."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    exp = _client(url, key).experiment(experiment_id)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[eta]}"),
    )
    with Progress(*columns) as bars:
        budget = bars.add_task("budget", total=exp.data["budget"], eta="")
        tasks: dict[int, Any] = {}
        while True:
            data = exp.refresh()
            bars.update(budget, completed=data["spent"], description=f"budget ({data['status']})")
            live = {r["id"]: r for r in exp.runs(status="running")}
            for run_id, run in live.items():
                p = run["progress"] or {}
                if run_id not in tasks:
                    tasks[run_id] = bars.add_task(
                        f"run {run_id} ({run['fidelity']})", total=p.get("total_steps"), eta=""
                    )
                loss = f" loss {p['loss']:.3f}" if isinstance(p.get("loss"), float) else ""
                eta = f"ETA {_seconds(run['eta_s'])}" if run.get("eta_s") is not None else ""
                bars.update(tasks[run_id], completed=p.get("step", 0), total=p.get("total_steps"),
                            description=f"run {run_id} ({run['fidelity']}){loss}", eta=eta)  # fmt: skip
            for run_id in [r for r in tasks if r not in live]:
                bars.remove_task(tasks.pop(run_id))
            if data["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(every)
    _show(exp.data, as_json=False)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


@experiment_cli.command("recommendation")
def experiment_recommendation(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    wait: Annotated[bool, typer.Option(help="wait until the experiment is done")] = False,
) -> None:
    """The recommended mixture, as JSON; its warnings (why it may not hold) also go to stderr."""
    rec = _client(url, key).experiment(experiment_id).recommendation(wait=wait)
    typer.echo(json.dumps(rec, indent=2))
    for warning in rec.get("warnings", []):
        typer.echo(f"warning ({warning['code']}): {warning['message']}", err=True)


def _floats(text: str | None) -> list[float] | None:
    return None if text is None else [float(x) for x in text.split(",") if x.strip()]


@experiment_cli.command("predict-scale")
def experiment_predict_scale(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    presets: Annotated[
        str | None, typer.Option(help="model sizes, comma-separated (default: up to one past the search's)")
    ] = None,
    token_scales: Annotated[
        str | None,
        typer.Option(help="token budgets per preset as multiples of its default (default 0.25,0.5,1)"),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, max=8, help="runs per mixture and rung")] = 1,
    baselines: Annotated[bool, typer.Option(help="also the natural and uniform mixtures")] = True,
    target_params: Annotated[
        int | None, typer.Option(help="your model's non-embedding parameters (default: the experiment's)")
    ] = None,
    target_tokens: Annotated[int | None, typer.Option(help="default: the experiment's")] = None,
    wait: Annotated[
        bool, typer.Option(help="wait for the ladder to finish and print the predictions")
    ] = True,
    as_json: Json = False,
) -> None:
    """Predict the recommended mixture's loss at your target scale: trains a ladder of larger proxies
    (charged to the budget), fits a law L(N, D) per mixture and extrapolates."""
    exp = _client(url, key).experiment(experiment_id)
    started = exp.predict_scale(
        presets=presets.split(",") if presets else None,
        token_scales=_floats(token_scales),
        seeds=seeds,
        baselines=baselines,
        target_params=target_params,
        target_tokens=target_tokens,
    )
    runs = sum(started["runs"].values())
    typer.echo(
        f"scale prediction {started['id']}: {runs} ladder runs queued, "
        f"{started['cost_units']:.1f} budget units",
        err=True,
    )
    pred = exp.scale_prediction(wait=True) if wait else started
    if as_json or not wait:
        typer.echo(json.dumps(pred, indent=2))
        return
    if pred["error"]:
        typer.echo(f"scale prediction {pred['status']}: {pred['error']}", err=True)
    scale = f"{pred['target_params'] / 1e6:,.0f}M params, {pred['target_tokens'] / 1e9:,.3g}B tokens"
    backtest = pred.get("backtest_rel_err")
    checked = "" if backtest is None else f", {backtest:.2%} off on the ladder's top rungs held out"
    law = f"{pred.get('form') or 'additive'} law, {pred['exponents']} exponents"
    typer.echo(f"predicted loss at {scale} (90% band), {law}{checked}:")
    for label, p in pred["predictions"].items():
        typer.echo(f"  {label:<12} {p['loss']:.4f}  [{p['low']:.4f}, {p['high']:.4f}]")
    for warning in pred.get("warnings", []):
        typer.echo(f"warning ({warning['code']}): {warning['message']}", err=True)


def _mount_regress() -> None:
    try:
        from app.regress import regress
    except ImportError:  # pragma: no cover - only while the module is absent
        return
    cli.command("regress")(regress)


_mount_regress()


def main() -> None:
    """Entry point: expected errors print one actionable line (exit 2) instead of a traceback."""
    import httpx
    import sqlalchemy.exc
    from mixlab_client import ApiError

    from app.errors import MixlabError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli()
    except (ApiError, MixlabError, UsageError) as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
    except httpx.TransportError as e:
        typer.echo(f"error: cannot reach the server ({e}); is `mixlab serve` at MIXLAB_URL?", err=True)
        raise SystemExit(2) from None
    except sqlalchemy.exc.DBAPIError as e:
        typer.echo(f"error: database: {e.orig}; is it reachable, and did you run `mixlab migrate`?", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
