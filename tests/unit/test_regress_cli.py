"""``mixlab regress`` on a slice of the RegMix runs: CV report, predictions file, recommendation, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from app.regress import regress, regress_app

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "regmix"  # ../shared from the repo root
TARGET = "metric/the_pile_pile_cc_val_loss"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason="shared RegMix data not mounted")
runner = CliRunner()


def head(src: Path, dst: Path, rows: int) -> Path:
    dst.write_text("".join(src.read_text().splitlines(keepends=True)[: rows + 1]))
    return dst


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "m": head(DATA / "train_mixture_1m.csv", tmp_path / "M.csv", 60),
        "l": head(DATA / "train_pile_loss_1m.csv", tmp_path / "L.csv", 60),
        "p": head(DATA / "test_mixture_1m.csv", tmp_path / "P.csv", 12),
        "out": tmp_path / "OUT.csv",
    }


def test_fit_predict_recommend_round_trip(files: dict[str, Path]) -> None:
    args = [
        "--mixtures",
        files["m"],
        "--losses",
        files["l"],
        "--target",
        TARGET,
        "--model",
        "linear",
        "--predict",
        files["p"],
        "--out",
        files["out"],
        "--recommend",
        "--folds",
        "4",
    ]
    result = runner.invoke(regress_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "linear on 60 runs, 4-fold CV: spearman" in result.output
    with files["out"].open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "predicted"]
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(1, 13)]
    assert all(4.0 < float(r[1]) < 8.0 for r in rows[1:])
    assert "train_the_pile_pile_cc" in result.output and "predicted loss: regmix" in result.output


def test_auto_model_prints_its_choice_and_predictions_to_stdout(files: dict[str, Path]) -> None:
    args = ["--mixtures", files["m"], "--losses", files["l"], "--target", TARGET, "--predict", files["p"]]
    result = runner.invoke(regress_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    chosen = result.output.split(" on 60 runs, 5-fold CV")[0].split()[-1]
    assert chosen in ("lightgbm", "gp", "linear", "ensemble")
    assert "(auto: the best of lightgbm " in result.output
    lines = result.output.splitlines()
    start = lines.index("index,predicted")
    assert [line.split(",")[0] for line in lines[start + 1 :]] == [str(i) for i in range(1, 13)]


def test_recommendation_honours_token_budget_caps(files: dict[str, Path], tmp_path: Path) -> None:
    domains = files["m"].read_text().splitlines()[0].split(",")[1:]
    tokens = tmp_path / "T.csv"
    counts = "".join(f"{d},{1_000_000 * (i + 1)}\n" for i, d in enumerate(domains))
    tokens.write_text("index,tokens\n" + counts)
    args = [
        "--mixtures",
        files["m"],
        "--losses",
        files["l"],
        "--target",
        TARGET,
        "--model",
        "linear",
        "--recommend",
        "--tokens",
        tokens,
        "--budget",
        100_000_000,
    ]
    result = runner.invoke(regress_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    table = [line.split() for line in result.output.splitlines() if line.startswith("train_the_pile_")]
    assert len(table) == len(domains)
    caps = [min(1.0, 4 * 1_000_000 * (i + 1) / 100_000_000) for i in range(len(domains))]
    for (name, prior, weight, cap), expected_cap, i in zip(table, caps, range(len(domains)), strict=True):
        assert float(cap) == pytest.approx(expected_cap, abs=1e-3), name  # 4 epochs at a 100M budget
        assert float(weight) <= expected_cap + 1e-4, name
        assert float(prior) == pytest.approx((i + 1) / sum(range(1, len(domains) + 1)), abs=1e-4)
    assert any(float(w) == pytest.approx(float(c), abs=1e-3) for _, _, w, c in table)  # a cap binds


@pytest.mark.parametrize(
    ("which", "old", "new", "message"),
    [
        ("m", "\n1,0.0,", "\n1,0.3,", "weights sum to 1.3000"),
        ("l", "\n2,", "\n99999,", "different index values"),
        ("m", "index,", "idx,", "no 'index' column"),
        ("l", "5.169477939605713", "nan", "is NaN"),
    ],
)
def test_malformed_input_exits_with_a_message(
    files: dict[str, Path], which: str, old: str, new: str, message: str
) -> None:
    text = files[which].read_text()
    assert old in text
    files[which].write_text(text.replace(old, new, 1))
    args = ["--mixtures", files["m"], "--losses", files["l"], "--target", TARGET, "--model", "linear"]
    result = runner.invoke(regress_app, [str(a) for a in args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_unknown_target_and_too_few_runs(files: dict[str, Path], tmp_path: Path) -> None:
    base = ["--mixtures", str(files["m"]), "--losses", str(files["l"]), "--model", "linear"]
    result = runner.invoke(regress_app, [*base, "--target", "metric/nope"])
    assert result.exit_code == 2 and "'metric/nope' is not a loss column" in result.output
    few = [
        "--mixtures",
        str(head(files["m"], tmp_path / "m3.csv", 3)),
        "--losses",
        str(head(files["l"], tmp_path / "l3.csv", 3)),
        "--target",
        TARGET,
    ]
    result = runner.invoke(regress_app, few)
    assert result.exit_code == 2 and "too few to fit" in result.output
    missing = ["--mixtures", str(tmp_path / "absent.csv"), "--losses", str(files["l"]), "--target", TARGET]
    result = runner.invoke(regress_app, missing)
    assert result.exit_code == 2 and "cannot read" in result.output and "absent.csv" in result.output


def test_mounts_as_a_subcommand() -> None:
    app = typer.Typer()
    app.command("regress")(regress)
    app.command("other")(lambda: None)
    result = runner.invoke(app, ["regress", "--help"])
    assert result.exit_code == 0 and "--mixtures" in result.output and "--recommend" in result.output


def test_a_recommendation_from_a_weak_fit_says_so(files: dict[str, Path], tmp_path: Path) -> None:
    """The issue's case: a linear fit on a small table recommends one domain far below anything observed."""
    few = head(DATA / "train_mixture_1m.csv", tmp_path / "few_m.csv", 12)
    few_losses = head(DATA / "train_pile_loss_1m.csv", tmp_path / "few_l.csv", 12)
    args = ["--mixtures", few, "--losses", few_losses, "--target", TARGET, "--model", "linear", "--recommend"]
    result = runner.invoke(regress_app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    codes = {
        line.split("(")[1].split(")")[0] for line in result.output.splitlines() if line.startswith("warning")
    }
    assert {"few_runs", "extrapolation"} <= codes, result.output
