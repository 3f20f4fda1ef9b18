// Run page: the run's learning curve (live while it trains), its mixture, its per-domain validation
// losses and (if recorded) its sampler trajectory.
"use strict";

(() => {
  const root = document.getElementById("run");
  const m = mixlab;
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);

  function drawBars(el, domains, values, name, ytitle) {
    if (!values) {
      m.note(el, "No " + name + " recorded for this run.");
      return;
    }
    m.draw(el, [{type: "bar", x: domains, y: domains.map((d) => values[d] ?? null), name: name,
                 marker: {color: domains.map((_, i) => m.PALETTE[i % m.PALETTE.length])},
                 hovertemplate: "%{x}: %{y:.4f}<extra></extra>"}],
           m.layout({yaxis: {title: {text: ytitle}, gridcolor: "#eef0f3"}, showlegend: false}));
  }

  function drawCurve(el, curve) {
    if (!curve.steps.length) {
      m.note(el, "No learning curve reported for this run (external pipelines send points with their heartbeats).");
      return;
    }
    m.draw(el, [{type: "scatter", mode: "lines+markers", x: curve.steps, y: curve.train_loss, name: "train loss",
                 marker: {size: 4}, line: {color: m.PALETTE[0]},
                 hovertemplate: "step %{x}<br>train loss %{y:.4f}<extra></extra>"}],
           m.layout({height: 300, showlegend: false, xaxis: {title: {text: "step"}, gridcolor: "#eef0f3"},
                     yaxis: {title: {text: "training loss"}, gridcolor: "#eef0f3"}}));
  }

  function drawTrajectory(el, detail) {
    const t = detail.trajectory;
    m.draw(el, detail.domains.map((d, i) => ({
      type: "scatter", mode: "lines", stackgroup: "w", name: d, x: t.steps, y: t.columns[i],
      hovertemplate: d + ": %{y:.3f} at step %{x}<extra></extra>"})),
      m.layout({xaxis: {title: {text: "step"}}, yaxis: {title: {text: "weight"}, range: [0, 1]}}));
  }

  function renderFacts(detail) {
    const r = detail.run;
    const badge = $("run-status");
    badge.textContent = r.status;
    badge.className = "badge status-" + r.status;
    $("run-duration").textContent = m.duration(detail.duration_s);
    const p = r.progress || {};
    let text = "–";
    if (Number.isInteger(p.step) && Number.isInteger(p.total_steps) && p.total_steps > 0) {
      text = "step " + p.step + " of " + p.total_steps + " (" + Math.round(100 * p.step / p.total_steps) + "%)";
    }
    if (r.eta_s !== null) text += " · ETA " + m.duration(r.eta_s);
    $("run-progress").textContent = text;
  }

  async function load() {
    const detail = await m.getJSON(root.dataset.api);
    renderFacts(detail);
    drawCurve($("plot-run-curve"), detail.curve);
    drawBars($("plot-run-weights"), detail.domains, detail.run.weights, "mixture", "weight");
    drawBars($("plot-run-losses"), detail.domains, detail.run.losses, "losses", "validation loss");
    const traj = $("plot-run-trajectory");
    if (traj && detail.trajectory) drawTrajectory(traj, detail);
    if (["queued", "running"].includes(detail.run.status)) setTimeout(() => load().catch(m.showError), POLL_MS);
  }

  load().catch(m.showError);
})();
