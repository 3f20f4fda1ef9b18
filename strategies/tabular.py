"""RegMix-style CSV tables of finished runs, parsed and validated without touching the file system.

A mixture table has an ``index`` column and one weight column per training domain; a loss table has
the same ``index`` values and one column per evaluated loss. Callers pass the text (or rows already
split); every error is a :class:`StrategyError` naming the table, line and column at fault.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from strategies.base import Observation, StrategyError

INDEX = "index"
SUM_TOLERANCE = 1e-3  # on top of the slack that rounding each weight to DECIMALS allows
DECIMALS = 3  # the paper's tables round weights to 3 decimals


def sum_tolerance(k: int) -> float:
    """How far from 1 a row of ``k`` rounded weights may sum: 1e-3 plus k half-units of rounding."""
    return SUM_TOLERANCE + k * 0.5 * 10.0**-DECIMALS


@dataclass(frozen=True)
class Table:
    """Rows keyed by ``index``; ``values[i, j]`` is row i's value in ``columns[j]``."""

    name: str
    index: tuple[str, ...]
    columns: tuple[str, ...]
    values: np.ndarray

    def column(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise StrategyError(f"{self.name} has no column {name!r}; it has: {', '.join(self.columns)}")
        return self.values[:, self.columns.index(name)]

    def select(self, columns: Sequence[str]) -> Table:
        """The same rows with ``columns`` in that order (all must exist)."""
        values = np.stack([self.column(c) for c in columns], axis=1)
        return Table(self.name, self.index, tuple(columns), values)


def _rows(source: str | Iterable[Sequence[str]]) -> list[list[str]]:
    lines = source.splitlines() if isinstance(source, str) else None
    rows = csv.reader(lines) if lines is not None else source
    return [[c.strip() for c in r] for r in rows if any(c.strip() for c in r)]


def parse_table(source: str | Iterable[Sequence[str]], name: str) -> Table:
    """Parse a CSV with an ``index`` column and numeric other columns; no NaN or infinity allowed."""
    rows = _rows(source)
    if not rows:
        raise StrategyError(f"{name} is empty")
    header, body = rows[0], rows[1:]
    if INDEX not in header:
        raise StrategyError(f"{name} has no {INDEX!r} column; its header is: {', '.join(header)}")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise StrategyError(f"{name} repeats columns {dupes}")
    if not body:
        raise StrategyError(f"{name} has a header but no rows")
    at = header.index(INDEX)
    columns = tuple(c for j, c in enumerate(header) if j != at)
    if not columns:
        raise StrategyError(f"{name} has only an {INDEX!r} column")
    index, values = [], np.empty((len(body), len(columns)))
    for i, row in enumerate(body):
        line = i + 2
        if len(row) != len(header):
            raise StrategyError(f"{name} line {line}: {len(row)} fields, the header has {len(header)}")
        index.append(row[at])
        for j, cell in enumerate(c for jj, c in enumerate(row) if jj != at):
            values[i, j] = _number(cell, f"{name} line {line} (index {row[at]!r}) column {columns[j]!r}")
    dupes = sorted({x for x in index if index.count(x) > 1})
    if dupes:
        raise StrategyError(f"{name} repeats index values {dupes[:10]}")
    return Table(name, tuple(index), columns, values)


def _number(cell: str, where: str) -> float:
    if not cell:
        raise StrategyError(f"{where} is empty")
    try:
        x = float(cell)
    except ValueError:
        raise StrategyError(f"{where}: {cell!r} is not a number") from None
    if math.isnan(x):
        raise StrategyError(f"{where} is NaN (a failed run?); drop the row or fill it in")
    if math.isinf(x):
        raise StrategyError(f"{where} is infinite")
    return x


def parse_mixtures(source: str | Iterable[Sequence[str]], name: str = "mixtures") -> Table:
    """A mixture table: weights non-negative, each row summing to 1 up to rounding; rows renormalised."""
    table = parse_table(source, name)
    k = len(table.columns)
    tol = sum_tolerance(k)
    for i, row in enumerate(table.values):
        where = f"{name} line {i + 2} (index {table.index[i]!r})"
        neg = np.flatnonzero(row < 0)
        if len(neg):
            j = neg[0]
            raise StrategyError(f"{where} column {table.columns[j]!r}: weight {row[j]:g} is negative")
        total = row.sum()
        if abs(total - 1) > tol:
            raise StrategyError(
                f"{where}: weights sum to {total:.4f}; they must sum to 1 within {tol:.4f} "
                f"(1e-3 plus rounding of {k} weights to {DECIMALS} decimals)"
            )
    return Table(name, table.index, table.columns, table.values / table.values.sum(axis=1, keepdims=True))


def align(mixtures: Table, losses: Table) -> Table:
    """``losses`` reordered to the row order of ``mixtures``; their index values must be the same set."""
    only_m = sorted(set(mixtures.index) - set(losses.index))
    only_l = sorted(set(losses.index) - set(mixtures.index))
    if only_m or only_l:
        raise StrategyError(
            f"{mixtures.name} and {losses.name} have different index values: "
            f"only in {mixtures.name}: {only_m[:10]}; only in {losses.name}: {only_l[:10]}"
        )
    pos = {x: i for i, x in enumerate(losses.index)}
    order = [pos[x] for x in mixtures.index]
    return Table(losses.name, mixtures.index, losses.columns, losses.values[order])


def parse_target(spec: str, columns: Sequence[str]) -> dict[str, float]:
    """``"col"`` or ``"col=w,col=w"`` → target weights summing to 1, over existing loss columns."""
    target: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        col, _, w = part.partition("=")
        col = col.strip()
        if col not in columns:
            raise StrategyError(f"target {col!r} is not a loss column; the columns are: {', '.join(columns)}")
        target[col] = _number(w, f"target weight of {col!r}") if w.strip() else 1.0
    if not target or min(target.values()) < 0 or sum(target.values()) <= 0:
        raise StrategyError(f"target {spec!r} must name loss columns with non-negative weights")
    total = sum(target.values())
    return {c: w / total for c, w in target.items()}


def to_observations(
    mixtures: Table, losses: Table, target: Mapping[str, float], fidelity: str
) -> list[Observation]:
    """One observation per row, with every loss column as a per-domain loss."""
    losses = align(mixtures, losses)
    out = []
    for w, row in zip(mixtures.values, losses.values, strict=True):
        per_domain = dict(zip(losses.columns, (float(x) for x in row), strict=True))
        loss = sum(t * per_domain[c] for c, t in target.items())
        out.append(Observation(tuple(float(x) for x in w), fidelity, per_domain, float(loss)))
    return out


def format_predictions(index: Sequence[str], predicted: Iterable[float]) -> str:
    """CSV text with columns ``index,predicted``."""
    lines = _Lines()
    writer = csv.writer(lines, lineterminator="\n")
    writer.writerow([INDEX, "predicted"])
    writer.writerows([i, f"{float(p):.6f}"] for i, p in zip(index, predicted, strict=True))
    return "".join(lines)


class _Lines(list[str]):
    """A write() target for csv.writer that keeps the text in memory."""

    def write(self, text: str) -> int:
        self.append(text)
        return len(text)
