"""``mixlab regress``: fit RegMix to runs made elsewhere (RegMix-style CSVs), predict, recommend.

Mounted in :mod:`app.cli` with ``cli.command("regress")(regress)``; ``regress_app`` runs it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from strategies import trust
from strategies.base import Fidelity, Observation, SearchSpace, StrategyError
from strategies.regmix import MIN_RUNS, MixtureModel, RegMix
from strategies.tabular import (
    Table,
    align,
    format_predictions,
    parse_mixtures,
    parse_table,
    parse_target,
    to_observations,
)

FIDELITY = "imported"


class Model(StrEnum):
    auto = "auto"
    lightgbm = "lightgbm"
    gp = "gp"
    ensemble = "ensemble"
    linear = "linear"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise StrategyError(f"cannot read {path}: {e.strerror}") from e


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise StrategyError(f"cannot write {path}: {e.strerror}") from e


def _space(
    mix: Table, target: dict[str, float], tokens: Path | None, budget: int | None, max_epochs: float
) -> SearchSpace:
    """Domains from the mixture columns; the prior from ``tokens`` or else the mean training mixture."""
    if tokens is not None:
        table = parse_table(_read(tokens), str(tokens))
        if len(table.columns) != 1:
            raise StrategyError(f"{tokens} needs exactly two columns: index (the domain) and a token count")
        count = dict(zip(table.index, table.values[:, 0], strict=True))
        missing = [d for d in mix.columns if d not in count]
        if missing:
            raise StrategyError(f"{tokens} has no token count for domains {missing}")
        counts = tuple(max(1, round(count[d])) for d in mix.columns)
    else:
        counts = tuple(max(1, round(w * 1e9)) for w in mix.values.mean(axis=0))
    return SearchSpace(
        domains=mix.columns,
        tokens=counts,
        target=target,
        fidelities=(Fidelity(FIDELITY, 0, 0.0),),
        max_epochs=max_epochs,
        target_tokens=budget,
    )


def regress(
    mixtures: Annotated[Path, typer.Option(help="CSV: index + one weight column per domain")],
    losses: Annotated[Path, typer.Option(help="CSV: index + one loss column per evaluation domain")],
    target: Annotated[str, typer.Option(help="loss column to minimise, or 'col=w,col=w' for a mix")],
    model: Annotated[Model, typer.Option(help="regressor; auto: the best cross-validated")] = Model.auto,
    predict: Annotated[Path | None, typer.Option(help="CSV of mixtures to predict (same format)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write index,predicted (default: stdout)")] = None,
    recommend: Annotated[bool, typer.Option(help="search for the best mixture")] = False,
    folds: Annotated[int, typer.Option(help="cross-validation folds")] = 5,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    tokens: Annotated[Path | None, typer.Option(help="CSV: index (domain), tokens; sets the prior")] = None,
    budget: Annotated[int | None, typer.Option(help="training tokens at scale; caps epochs")] = None,
    max_epochs: Annotated[float, typer.Option(help="epochs a domain may be repeated at --budget")] = 4.0,
) -> None:
    """Fit loss ~ mixture on finished runs; report CV fit, predict new mixtures, recommend one."""
    try:
        mix = parse_mixtures(_read(mixtures), str(mixtures))
        loss = align(mix, parse_table(_read(losses), str(losses)))
        weights = parse_target(target, loss.columns)
        space = _space(mix, weights, tokens, budget, max_epochs)
        strategy = RegMix(model=model.value, folds=folds, seed=seed)
        history = to_observations(mix, loss, weights, FIDELITY)
        fitted = strategy.fit(space, history)
        if fitted is None:
            raise StrategyError(f"{len(mix.index)} runs are too few to fit; RegMix needs at least {MIN_RUNS}")
        report = fitted.ensemble.report
        typer.echo(
            f"{fitted.model} on {report.n_train} runs, {report.folds}-fold CV: "
            f"spearman {100 * report.spearman:.2f}, MAE {report.mae:.4f}"
        )
        if fitted.candidates:
            scores = ", ".join(
                f"{k.removeprefix('cv_spearman_')} {100 * v:.2f}" for k, v in fitted.candidates.items()
            )
            typer.echo(f"(auto: the best of {scores})")
        if predict is not None:
            new = parse_mixtures(_read(predict), str(predict))
            extra = sorted(set(new.columns) ^ set(mix.columns))
            if extra:
                raise StrategyError(f"{predict} and {mixtures} have different weight columns: {extra}")
            text = format_predictions(new.index, fitted.predict(new.select(mix.columns).values))
            if out is None:
                typer.echo(text, nl=False)
            else:
                _write(out, text)
                typer.echo(f"wrote {len(new.index)} predictions to {out}")
        if recommend:
            _print_recommendation(strategy, space, fitted, history)
    except StrategyError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2) from e


def _print_recommendation(
    strategy: RegMix, space: SearchSpace, fitted: MixtureModel, history: Sequence[Observation]
) -> None:
    rec = strategy.optimise(space, fitted)
    _, hi = space.bounds(space.recommend_budget())
    prior = strategy.prior(space)
    width = max(len(d) for d in space.domains)
    typer.echo(f"\n{'domain':<{width}}  {'prior':>7}  {'regmix':>7}  {'cap':>6}")
    for d, p, w, cap in zip(space.domains, prior, rec.weights, hi, strict=True):
        typer.echo(f"{d:<{width}}  {p:7.4f}  {w:7.4f}  {min(cap, 1.0):6.3f}")
    typer.echo(
        f"predicted loss: regmix {rec.predicted_loss:.4f} ± {rec.std:.4f}, "
        f"prior {rec.diagnostics['predicted_prior']:.4f}"
    )
    for warning in trust.check(space, history, rec):
        typer.echo(f"warning ({warning.code}): {warning.message}")


regress_app = typer.Typer(help="Fit RegMix to RegMix-style CSVs of finished runs.")
regress_app.command("regress")(regress)
