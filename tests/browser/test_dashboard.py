"""The dashboard in a real headless Chromium: log in with the key form, every chart drawn by Plotly, no JS
errors, live refresh, export downloads, click into a run; screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import json
import math
import os
import re

import pytest

from tests.browser.conftest import ROOT, VIEWPORT, LiveServer, PageWatch
from tests.integration.helpers import fake_losses
from tests.integration.test_insights import populate

pytestmark = pytest.mark.browser

CHARTS = ("plot-history", "plot-mixture", "plot-fit", "plot-weights", "plot-heatmap")
DOCS_SCREENSHOT = ROOT / "docs" / "dashboard.png"
DOCS_MAX_BYTES = 300_000
DOCS_VIEWPORT = {"width": 1440, "height": 1150}


def _drawn(page, element_id: str) -> bool:  # type: ignore[no-untyped-def]
    """Plotly marks the element and draws its SVG (or a WebGL canvas with an SVG overlay) inside it."""
    script = "el => el.classList.contains('js-plotly-plot') && !!el.querySelector('svg.main-svg')"
    return bool(page.eval_on_selector(f"#{element_id}", script))


def _open_experiment(watch: PageWatch, live: LiveServer, experiment_id: int) -> None:
    watch.login(live, path=f"/ui/experiments/{experiment_id}")
    page = watch.page
    assert page.url.endswith(f"/ui/experiments/{experiment_id}")
    page.wait_for_function(
        "ids => ids.every(id => document.getElementById(id).classList.contains('js-plotly-plot'))",
        arg=list(CHARTS),
        timeout=30_000,
    )
    page.wait_for_selector("#runs tbody tr")


def test_experiment_page_draws_every_chart_and_opens_a_run(live: LiveServer, watch: PageWatch) -> None:
    exp = live.done
    _open_experiment(watch, live, exp["id"])
    page = watch.page
    for chart in CHARTS:
        assert _drawn(page, chart), f"{chart} was not drawn"
    assert page.locator("#plot-online .js-plotly-plot").count() == 1
    assert page.inner_text("#status") == "done"
    assert "Spearman ρ = " in page.text_content("#plot-fit .gtitle")
    assert "predicted loss" in page.text_content("#plot-mixture .gtitle")
    assert page.locator("#plot-weights .parcoords").count() == 1
    assert page.locator("#plot-heatmap .hm, #plot-heatmap canvas").count() >= 1
    domains = page.locator("#inputs-domains tbody tr")  # the Inputs section: what it was given
    assert domains.count() == 3 and domains.nth(0).inner_text().split("\t")[:3] == [
        "web",
        "0.500",
        "1,000,000,000",
    ]
    assert page.locator("#inputs-fidelities tbody tr").count() == 2
    assert '"n_search"' in page.inner_text("#inputs dl")

    rows = page.locator("#runs tbody tr")
    table = live.api().get(f"/api/v1/experiments/{exp['id']}/dashboard/runs").json()
    assert rows.count() == len(table["rows"])
    failed = page.locator(f"#runs tbody tr[data-href$='/runs/{exp['failed']}']")
    assert "CUDA out of memory" in failed.inner_text()
    if os.environ.get("MIXLAB_UPDATE_DOCS") == "1":
        _save_docs_screenshot(watch)
    page.click("#hf-snippet summary")
    assert "interleave_datasets(" in page.inner_text("#snippet")
    watch.screenshot("experiment")

    with page.expect_navigation():
        page.locator(f"#runs tbody tr[data-href$='/runs/{exp['told']}'] td").nth(2).click()
    assert page.url.endswith(f"/ui/experiments/{exp['id']}/runs/{exp['told']}")
    page.wait_for_selector("#plot-run-weights.js-plotly-plot svg.main-svg")
    page.wait_for_selector("#plot-run-losses.js-plotly-plot svg.main-svg")
    assert page.inner_text("#run-status") == "succeeded"
    watch.screenshot("run")
    page.click("#back")
    page.wait_for_selector("#experiment")
    assert watch.errors == []


def test_failed_run_page_shows_its_error(live: LiveServer, watch: PageWatch) -> None:
    exp = live.done
    watch.login(live, path=f"/ui/experiments/{exp['id']}/runs/{exp['failed']}")
    page = watch.page
    assert page.inner_text("#run-status") == "failed"
    assert "CUDA out of memory" in page.inner_text("#run-error")
    page.wait_for_selector("#plot-run-weights.js-plotly-plot")
    assert "No losses recorded" in page.inner_text("#plot-run-losses")
    watch.screenshot("run-failed")
    assert watch.errors == []


def test_runs_table_refreshes_while_running(live: LiveServer, watch: PageWatch) -> None:
    exp = live.running
    _open_experiment(watch, live, exp["id"])
    page = watch.page
    assert page.is_visible("#live")
    before = page.inner_text("#runs-done")
    with live.api() as api:
        asked = api.post(f"{exp['base']}/ask", params={"wait": 30}).json()
        run = asked["run"]
        body = {"lease_token": asked["lease_token"], "losses": fake_losses(run["weights"])}
        api.post(f"{exp['base']}/runs/{run['id']}/result", json=body)
    page.wait_for_selector(f"#runs tbody tr[data-href$='/runs/{run['id']}']", timeout=15_000)
    page.wait_for_function(f"document.getElementById('runs-done').textContent !== {json.dumps(before)}")
    page.wait_for_function(  # the history chart was redrawn with the new run in it
        "id => document.getElementById('plot-history').data.some(t => (t.customdata || []).includes(id))",
        arg=run["id"],
        timeout=15_000,
    )
    watch.screenshot("experiment-running")
    assert watch.errors == []


def test_exports_download_the_recommendation(live: LiveServer, watch: PageWatch) -> None:
    exp = live.done
    _open_experiment(watch, live, exp["id"])
    page = watch.page
    rec = live.api().get(f"{exp['base']}/recommendation").json()
    with page.expect_download() as info:
        page.click("#export-json")
    download = info.value
    assert download.suggested_filename == f"mixlab-experiment-{exp['id']}-mixture.json"
    with open(download.path()) as f:
        assert json.load(f)["weights"] == pytest.approx(rec["weights"])
    with page.expect_download() as info:
        page.click("#export-hf")
    with open(info.value.path()) as f:
        assert "probabilities=" in f.read()
    assert watch.errors == []


def test_list_logout_and_other_projects(live: LiveServer, watch: PageWatch) -> None:
    watch.login(live)
    page = watch.page
    names = page.locator("#experiments tbody td:first-child a").all_inner_texts()
    assert names == ["still-running", "web-code-law"]  # newest first
    watch.screenshot("experiments")
    page.click("#logout")
    page.wait_for_selector("#login-form")
    page.goto(f"{live.url}/ui/experiments/{live.done['id']}")
    assert "/ui/login" in page.url
    page.fill("#key", "not-a-key")
    page.click("#login-form button[type=submit]")
    assert "not valid" in page.inner_text(".error")

    other = watch.page.context.browser.new_context()
    try:
        theirs = PageWatch(other.new_page(), [])
        theirs.login(live, key=live.other_key)
        assert theirs.page.locator("#experiments").count() == 0  # their project has no experiments
        resp = theirs.page.goto(f"{live.url}/ui/experiments/{live.done['id']}")
        assert resp is not None and resp.status == 404
        assert "not found in this project" in theirs.page.inner_text("main")
    finally:
        other.close()


def _save_docs_screenshot(watch: PageWatch) -> None:
    """The summary and the first four charts, palette-reduced to stay small in the repository."""
    from PIL import Image

    watch.page.set_viewport_size(DOCS_VIEWPORT)
    watch.page.wait_for_timeout(500)  # Plotly's responsive charts redraw after a resize
    raw = watch.screenshot("docs-dashboard", full_page=False)
    watch.page.set_viewport_size(VIEWPORT)
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    image = Image.open(raw).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
    image.save(DOCS_SCREENSHOT, optimize=True)
    assert DOCS_SCREENSHOT.stat().st_size < DOCS_MAX_BYTES


def test_learning_curves_draw_live_on_the_run_and_experiment_pages(
    live: LiveServer, watch: PageWatch
) -> None:
    exp = live.running
    with live.api() as api:
        asked = api.post(f"{exp['base']}/ask", params={"wait": 30}).json()
    run_id, token = asked["run"]["id"], asked["lease_token"]
    beat = f"{exp['base']}/runs/{run_id}/heartbeat"

    def report(steps: list[int]) -> None:
        points = [{"step": s, "train_loss": 6.0 / (1 + s) ** 0.3} for s in steps]
        body = {"lease_token": token, "progress": {"total_steps": 400}, "points": points}
        with live.api() as api:
            assert api.post(beat, json=body).status_code == 200

    report([10, 20, 30])
    watch.login(live, path=f"/ui/experiments/{exp['id']}/runs/{run_id}")
    page = watch.page
    page.wait_for_selector("#plot-run-curve.js-plotly-plot svg.main-svg")
    assert page.eval_on_selector("#plot-run-curve", "el => el.data[0].x") == [10, 20, 30]
    assert "step 30 of 400 (8%)" in page.inner_text("#run-progress") and "ETA" in page.inner_text(
        "#run-progress"
    )
    report([40, 50])  # the page polls while the run trains
    page.wait_for_function(
        "() => document.getElementById('plot-run-curve').data[0].x.length === 5", timeout=15_000
    )
    watch.screenshot("run-training")

    page.goto(f"{live.url}/ui/experiments/{exp['id']}")
    page.wait_for_selector("#plot-live.js-plotly-plot svg.main-svg")
    assert page.is_visible("#live-card")
    names = page.eval_on_selector("#plot-live", "el => el.data.map(t => t.name)")
    assert any(n.startswith(f"run #{run_id} ") and "13%" in n and "ETA" in n for n in names), names
    row = page.locator(f"#runs tbody tr[data-href$='/runs/{run_id}']")
    assert "13% · ETA" in row.inner_text()
    with live.api() as api:
        body = {"lease_token": token, "losses": fake_losses(asked["run"]["weights"])}
        assert api.post(f"{exp['base']}/runs/{run_id}/result", json=body).status_code == 200
    page.wait_for_selector("#live-card", state="hidden", timeout=15_000)  # nothing trains any more
    assert watch.errors == []


def test_runs_table_pages_sorts_and_filters(live: LiveServer, watch: PageWatch) -> None:
    exp = live.done
    _open_experiment(watch, live, exp["id"])
    page = watch.page
    total = live.api().get(f"{exp['base']}/dashboard/runs").json()["total"]
    assert total > 50
    assert page.locator("#runs tbody tr").count() == 50
    assert page.inner_text("#runs-count") == f"1–50 of {total} runs"
    assert page.is_disabled("#page-prev")
    page.click("#page-next")
    page.wait_for_function(
        f"document.getElementById('runs-count').textContent === '51–{min(100, total)} of {total} runs'"
    )
    page.click("#page-prev")
    page.wait_for_function("document.getElementById('runs-count').textContent.startsWith('1–50')")

    page.click("#runs th[data-sort=target_loss]")  # best first
    page.wait_for_selector("#runs th[data-sort=target_loss][aria-sort=ascending]")
    runs = live.api().get(f"{exp['base']}/runs", params={"limit": 500}).json()["items"]
    best = min(r["target_loss"] for r in runs if r["target_loss"] is not None)
    page.wait_for_function(
        "best => document.querySelector('#runs tbody tr td:nth-child(6)').textContent === best",
        arg=f"{best:.4f}",
    )
    page.select_option("#filter-status", "failed")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1")
    assert "CUDA out of memory" in page.inner_text("#runs tbody tr")
    assert page.inner_text("#runs-count") == "1–1 of 1 runs"
    assert page.get_attribute("#runs-csv", "href").endswith("/runs?format=csv&status=failed")
    with page.expect_download() as info:
        page.click("#runs-csv")
    with open(info.value.path()) as f:
        lines = f.read().splitlines()
    assert len(lines) == 2 and lines[1].split(",")[1] == "failed"
    assert watch.errors == []


def test_sampled_plots_say_so(live: LiveServer, watch: PageWatch, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.services import dashboard

    exp = live.done
    _open_experiment(watch, live, exp["id"])
    assert not watch.page.is_visible("#plots-sampled")  # every run drawn: no note
    monkeypatch.setattr(dashboard, "MAX_PLOT_RUNS", 20)
    watch.page.reload()
    watch.page.wait_for_selector("#plots-sampled", state="visible")
    note = watch.page.inner_text("#plots-sampled")
    finished = live.api().get(f"{exp['base']}/dashboard").json()["runs_finished"]
    assert note.startswith(f"The plots show 20 of {finished} finished runs, evenly spaced")
    assert watch.errors == []


def test_strategies_page_lists_every_strategy_and_its_parameters(live: LiveServer, watch: PageWatch) -> None:
    watch.login(live)
    page = watch.page
    with page.expect_navigation():
        page.click("#nav-strategies")
    listed = live.api().get("/api/v1/strategies").json()
    names = [s["name"] for s in (listed["items"] if isinstance(listed, dict) else listed)]
    for name in names:
        assert page.locator(f"#strategy-{name}").count() == 1
    params = page.locator("#strategy-regmix tbody tr").all_inner_texts()
    assert any(p.startswith("n_search\tinteger") for p in params), params
    watch.screenshot("strategies")
    assert watch.errors == []


def test_a_recommendation_that_should_not_be_trusted_says_why(live: LiveServer, watch: PageWatch) -> None:
    with live.api() as api:
        few = populate(api, {"Authorization": f"Bearer {live.key}"}, n_big=5, n_small=0, seed=7, name="few")
    _open_experiment(watch, live, few["id"])
    page = watch.page
    page.wait_for_selector("#mixture-warnings", state="visible")
    assert "runs at fidelity 'big' for 3 domains" in page.inner_text("#mixture-warnings")
    assert watch.errors == []


def _finished_ladder(experiment_id: int) -> int:
    """A scale prediction whose ladder runs have finished (losses from a known law, with a plateau that
    ``s`` is still leaving), fitted by the worker's own code: the page only draws what the API stores."""
    from app.core.db import session_scope
    from app.models import Recommendation, Run, ScalePrediction
    from app.services.scale_prediction import ladder_fidelity
    from app.status import RunStatus
    from proxy_models.presets import get_preset, run_flops
    from workers import scale_job

    with session_scope() as session:
        rec = (
            session.query(Recommendation)
            .filter_by(experiment_id=experiment_id)
            .order_by(Recommendation.id.desc())
            .first()
        )
        assert rec is not None
        mixtures = {"recommended": rec.weights, "uniform": [1 / 3] * 3}
        rungs = [
            {
                "preset": p,
                "tokens": t,
                "params": get_preset(p).model_config().non_embedding_params,
                "cost": run_flops(p, t),
            }
            for p in ("xs", "s")
            for t in (250_000, 500_000, 1_000_000)
        ]
        row = ScalePrediction(
            experiment_id=experiment_id,
            recommendation_id=rec.id,
            mixtures=mixtures,
            rungs=rungs,
            seeds=1,
            target_params=1_000_000_000,
            target_tokens=20_000_000_000,
            result={},
        )
        session.add(row)
        session.flush()
        for label, weights in mixtures.items():
            for r in rungs:
                loss = (
                    (2.0 if label == "recommended" else 2.1)
                    + 3 * (r["params"] / 4e5) ** -0.3
                    + 4 * (r["tokens"] / 5e5) ** -0.25
                    + 6 * math.exp(-r["tokens"] / (9e4 * (r["params"] / 4e5) ** 1.5))
                )
                session.add(
                    Run(
                        experiment_id=experiment_id,
                        weights=weights,
                        fidelity=ladder_fidelity(r["preset"], r["tokens"]),
                        status=RunStatus.SUCCEEDED,
                        ladder_id=row.id,
                        losses={"web": loss, "code": loss, "books": loss},
                        target_loss=loss,
                        cost=r["cost"],
                        extra={"mixture": label},
                    )
                )
        prediction_id = row.id
    scale_job.refresh(prediction_id)
    return prediction_id


def test_scale_prediction_draws_loss_against_compute(live: LiveServer, watch: PageWatch) -> None:
    with live.api() as api:
        exp = populate(
            api, {"Authorization": f"Bearer {live.key}"}, n_big=6, n_small=0, seed=3, name="ladder"
        )
    _open_experiment(watch, live, exp["id"])
    page = watch.page
    assert "No scale prediction yet" in page.inner_text("#plot-scale")
    prediction_id = _finished_ladder(exp["id"])
    page.reload()
    page.wait_for_selector("#plot-scale.js-plotly-plot svg.main-svg", timeout=30_000)
    status = page.inner_text("#scale-status")
    assert f"Prediction #{prediction_id} · done · ladder runs 12 / 12" in status
    assert re.search(r"backtest error \d+\.\d %", status), status
    assert "warning: at preset(s) s the loss fell faster on the last doubling" in status
    with live.api() as api:  # the same warning where a pipeline reads the prediction
        auth, base = {"Authorization": f"Bearer {live.key}"}, f"/api/v1/experiments/{exp['id']}"
        warnings = api.get(f"{base}/scale-prediction", headers=auth).json()["warnings"]
        predicted = api.get(f"{base}/recommendation", headers=auth).json()["predicted_target_loss"]
    assert [w["code"] for w in warnings] == ["early_regime"]
    assert predicted["warnings"] == warnings
    legend = page.text_content("#plot-scale .legend") or ""
    for name in ("recommended runs", "recommended law", "recommended at target", "uniform at target"):
        assert name in legend
    page.locator("#scale-card").screenshot(path=str(watch.screenshot("experiment").parent / "scale.png"))
    assert watch.errors == []
