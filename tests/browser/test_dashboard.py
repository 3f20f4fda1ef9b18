"""The dashboard in a real headless Chromium: log in with the key form, every chart drawn by Plotly, no JS
errors, live refresh, export downloads, click into a run; screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import json
import os

import pytest

from tests.browser.conftest import ROOT, VIEWPORT, LiveServer, PageWatch
from tests.integration.helpers import fake_losses

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
