// Run page: the run's mixture, its per-domain validation losses and (if recorded) its sampler trajectory.
"use strict";

(() => {
  const root = document.getElementById("run");
  const m = mixlab;

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

  function drawTrajectory(el, detail) {
    const t = detail.trajectory;
    m.draw(el, detail.domains.map((d, i) => ({
      type: "scatter", mode: "lines", stackgroup: "w", name: d, x: t.steps, y: t.columns[i],
      hovertemplate: d + ": %{y:.3f} at step %{x}<extra></extra>"})),
      m.layout({xaxis: {title: {text: "step"}}, yaxis: {title: {text: "weight"}, range: [0, 1]}}));
  }

  async function load() {
    const detail = await m.getJSON(root.dataset.api);
    drawBars(document.getElementById("plot-run-weights"), detail.domains, detail.run.weights, "mixture", "weight");
    drawBars(document.getElementById("plot-run-losses"), detail.domains, detail.run.losses, "losses",
             "validation loss");
    const traj = document.getElementById("plot-run-trajectory");
    if (traj && detail.trajectory) drawTrajectory(traj, detail);
  }

  load().catch(m.showError);
})();
