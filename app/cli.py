"""The ``mixlab`` command line: run the server and workers, manage projects, drive experiments."""

from __future__ import annotations

import json
import logging
import os
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
) -> None:
    """Run the API server. With MIXLAB_EXECUTOR=embedded (default) it also plans and trains in-process."""
    import uvicorn

    from app.core.config import get_settings
    from app.core.migrate import upgrade
    from app.main import create_app

    _logging()
    settings = get_settings()
    if migrate_first:
        upgrade(settings.database_url)
    uvicorn.run(create_app(), host=host, port=port)


@cli.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="tasks at once (a training run uses all cores)")] = 1,
    queues: Annotated[
        str, typer.Option(help="comma-separated: mixlab (training, preparation), mixlab-plan (planning)")
    ] = "mixlab,mixlab-plan",
    beat: Annotated[
        bool, typer.Option("--beat/--no-beat", help="also run the reaper here (prefer `mixlab beat`)")
    ] = False,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker (service mode: MIXLAB_BROKER_URL, MIXLAB_DATABASE_URL)."""
    from app.core.config import get_settings
    from workers.celery_app import celery_app

    get_settings().storage_dir.mkdir(parents=True, exist_ok=True)
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


@experiment_cli.command("create")
def experiment_create(
    spec: Annotated[Path, typer.Argument(help="JSON file with the experiment (see /docs, ExperimentCreate)")],
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    corpus: Annotated[list[str], typer.Option(help="DOMAIN=PATH to upload; repeatable")] = [],  # noqa: B006
    start: Annotated[bool, typer.Option(help="start once the corpora are uploaded")] = False,
) -> None:
    """Create an experiment from a JSON spec, upload corpora, optionally start it."""
    exp = _client(url, key).create_experiment(**json.loads(spec.read_text()))
    for item in corpus:
        domain, _, path = item.partition("=")
        exp.upload(domain, path)
        typer.echo(f"uploaded {path} as {domain}")
    if start:
        exp.start()
    typer.echo(f"experiment {exp.id}: {exp.status}")


@experiment_cli.command("status")
def experiment_status(experiment_id: int, url: Url = "http://127.0.0.1:8000", key: Key = "") -> None:
    """Status, runs per state, budget spent and best loss."""
    data = _client(url, key).experiment(experiment_id).data
    typer.echo(
        f"experiment {data['id']} {data['name']!r}: {data['status']}, strategy {data['strategy']}, "
        f"spent {data['spent']:.1f}/{data['budget']:.0f}, runs {data['run_counts']}, "
        f"best loss {data['best_loss']}"
    )
    if data["error"]:
        typer.echo(f"error: {data['error']}")


@experiment_cli.command("recommendation")
def experiment_recommendation(
    experiment_id: int,
    url: Url = "http://127.0.0.1:8000",
    key: Key = "",
    wait: Annotated[bool, typer.Option(help="wait until the experiment is done")] = False,
) -> None:
    """The recommended mixture, as JSON."""
    rec = _client(url, key).experiment(experiment_id).recommendation(wait=wait)
    typer.echo(json.dumps(rec, indent=2))


def _mount_regress() -> None:
    try:
        from app.regress import regress
    except ImportError:  # pragma: no cover - only while the module is absent
        return
    cli.command("regress")(regress)


_mount_regress()


def main() -> None:
    """Entry point: known errors print one actionable line (exit 1) instead of a traceback."""
    import httpx
    import sqlalchemy.exc
    from mixlab_client import ApiError

    from app.errors import MixlabError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli()
    except (ApiError, MixlabError) as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(1) from None
    except httpx.TransportError as e:
        typer.echo(f"error: cannot reach the server ({e}); is `mixlab serve` at MIXLAB_URL?", err=True)
        raise SystemExit(1) from None
    except sqlalchemy.exc.DBAPIError as e:
        typer.echo(f"error: database: {e.orig}; is it reachable, and did you run `mixlab migrate`?", err=True)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
