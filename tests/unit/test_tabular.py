"""RegMix-style CSV tables: parsing, validation messages that name the culprit, alignment, targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from strategies import StrategyError
from strategies.tabular import (
    align,
    format_predictions,
    parse_mixtures,
    parse_table,
    parse_target,
    sum_tolerance,
    to_observations,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "regmix"  # ../shared from the repo root
MIX = "index,web,code,books\n1,0.5,0.3,0.2\n2,0.001,0.0,0.999\n3,0.333,0.333,0.333\n"
LOSS = "index,l_web,l_code\n3,3.0,4.0\n1,2.5,3.5\n2,3.2,3.9\n"


def test_parses_and_renormalises_rounded_rows() -> None:
    mix = parse_mixtures(MIX)
    assert mix.index == ("1", "2", "3") and mix.columns == ("web", "code", "books")
    np.testing.assert_allclose(mix.values.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(mix.values[2], [1 / 3] * 3)  # 0.999 from rounding, rescaled
    rows = [["index", "a", "b"], ["x", "0.25", "0.75"]]
    assert parse_mixtures(rows).values.tolist() == [[0.25, 0.75]]


def test_index_column_may_sit_anywhere() -> None:
    mix = parse_mixtures("a,index,b\n0.4,r1,0.6\n")
    assert mix.columns == ("a", "b") and mix.index == ("r1",)
    np.testing.assert_allclose(mix.values, [[0.4, 0.6]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web,code\n0.5,0.5\n", "has no 'index' column"),
        ("index,web,code\n1,0.5,0.6\n", r"line 2 \(index '1'\): weights sum to 1.1000"),
        ("index,web,code\n1,0.5,0.5\n2,nan,1.0\n", r"line 3 \(index '2'\) column 'web' is NaN"),
        ("index,web,code\n1,-0.1,1.1\n", "column 'web': weight -0.1 is negative"),
        ("index,web,code\n1,half,0.5\n", "column 'web': 'half' is not a number"),
        ("index,web,code\n1,,1.0\n", "column 'web' is empty"),
        ("index,web,code\n1,0.5\n", "line 2: 2 fields, the header has 3"),
        ("index,web,code\n1,0.5,0.5\n1,0.2,0.8\n", r"repeats index values \['1'\]"),
        ("index,web,web\n1,0.5,0.5\n", "repeats columns"),
        ("index,web\n", "no rows"),
        ("", "is empty"),
        ("index,web,code\n1,inf,0\n", "is infinite"),
    ],
)
def test_malformed_mixtures_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(StrategyError, match=message):
        parse_mixtures(text, "M.csv")


def test_tolerance_allows_rounding_but_not_more() -> None:
    k = 4
    tol = sum_tolerance(k)
    assert 0.001 < tol < 0.01
    ok = f"index,a,b,c,d\n1,0.25,0.25,0.25,{0.25 + tol * 0.9:.6f}\n"
    assert parse_mixtures(ok).values.shape == (1, 4)
    bad = f"index,a,b,c,d\n1,0.25,0.25,0.25,{0.25 + tol * 1.1:.6f}\n"
    with pytest.raises(StrategyError, match="must sum to 1 within"):
        parse_mixtures(bad)


def test_losses_align_to_mixture_rows_and_mismatches_are_named() -> None:
    mix, loss = parse_mixtures(MIX), parse_table(LOSS, "losses")
    aligned = align(mix, loss)
    assert aligned.index == mix.index
    np.testing.assert_allclose(aligned.column("l_web"), [2.5, 3.2, 3.0])
    other = parse_table("index,l_web\n1,2.0\n2,2.0\n9,2.0\n", "L.csv")
    with pytest.raises(StrategyError, match=r"only in mixtures: \['3'\]; only in L.csv: \['9'\]"):
        align(mix, other)
    with pytest.raises(StrategyError, match="has no column 'nope'"):
        loss.column("nope")
    with pytest.raises(StrategyError, match="NaN"):
        parse_table("index,l_web\n1,nan\n", "losses")


def test_targets_and_observations() -> None:
    columns = ("l_web", "l_code")
    assert parse_target("l_web", columns) == {"l_web": 1.0}
    assert parse_target("l_web=1, l_code=3", columns) == {"l_web": 0.25, "l_code": 0.75}
    with pytest.raises(StrategyError, match="'l_books' is not a loss column"):
        parse_target("l_books", columns)
    with pytest.raises(StrategyError, match="non-negative"):
        parse_target("l_web=-1", columns)
    mix, loss = parse_mixtures(MIX), parse_table(LOSS, "losses")
    obs = to_observations(mix, loss, {"l_web": 0.5, "l_code": 0.5}, "csv")
    assert [o.target_loss for o in obs] == pytest.approx([3.0, 3.55, 3.5])
    assert obs[0].losses == {"l_web": 2.5, "l_code": 3.5} and obs[0].fidelity == "csv"


def test_predictions_round_trip_through_the_parser() -> None:
    text = format_predictions(["a", "b,c"], [1.5, 2.25])
    table = parse_table(text, "out")
    assert table.columns == ("predicted",) and table.index == ("a", "b,c")
    np.testing.assert_allclose(table.values[:, 0], [1.5, 2.25])


@pytest.mark.skipif(not DATA.exists(), reason="shared RegMix data not mounted")
def test_the_papers_tables_parse() -> None:
    mix = parse_mixtures((DATA / "train_mixture_1m.csv").read_text())
    loss = align(mix, parse_table((DATA / "train_pile_loss_1m.csv").read_text(), "losses"))
    assert mix.values.shape == (512, 17) and loss.values.shape == (512, 13)
    assert "metric/the_pile_pile_cc_val_loss" in loss.columns
