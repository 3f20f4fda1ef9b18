// Experiment page: draws GET .../dashboard and keeps the runs table live while the experiment runs.
"use strict";

(() => {
  const root = document.getElementById("experiment");
  const api = root.dataset.api;
  const ui = root.dataset.ui;
  const m = mixlab;
  const POLL_MS = 3000;
  const FIDELITY_COLOURS = ["#94a3b8", "#f59e0b", "#a855f7", "#10b981"];  // cheapest grey; target is blue
  const TARGET_COLOUR = "#2563eb";
  const $ = (id) => document.getElementById(id);
  let drawnState = null;  // status and runs done when the plots were last drawn
  const table = {offset: 0, limit: 50, sort: "id", order: "desc"};  // the runs table's page, sort and filters
  const filters = $("runs-filters");
  let timer = null;

  function drawHistory(d) {
    const h = d.history;
    const el = $("plot-history");
    if (!h.series.length) return m.note(el, "No finished runs yet.");
    const traces = h.series.map((s, i) => ({
      type: "scatter", mode: "markers", name: "fidelity " + s.fidelity, x: s.order, y: s.target_loss,
      customdata: s.run_ids,
      marker: {size: 7, opacity: 0.85, line: {width: 0.5, color: "#ffffff"},
               color: s.fidelity === h.target_fidelity ? TARGET_COLOUR
                 : FIDELITY_COLOURS[i % FIDELITY_COLOURS.length]},
      hovertemplate: "run #%{customdata}<br>loss %{y:.4f}<extra>" + s.fidelity + "</extra>",
    }));
    if (h.best_order.length) {
      traces.push({type: "scatter", mode: "lines", name: "best so far (" + h.target_fidelity + ")",
                   x: h.best_order, y: h.best_loss, line: {shape: "hv", width: 2, color: "#111827"},
                   hovertemplate: "best %{y:.4f}<extra></extra>"});
    }
    m.draw(el, traces, m.layout({xaxis: {title: {text: "run (creation order)"}, gridcolor: "#eef0f3"},
                                 yaxis: {title: {text: "target loss"}, gridcolor: "#eef0f3"},
                                 legend: {orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom"}}))
      .then(() => linkToRuns(el));
  }

  function linkToRuns(el) {  // a click on a run's marker opens it (listeners survive Plotly.react)
    if (el.dataset.linked) return;
    el.dataset.linked = "1";
    el.on("plotly_click", (ev) => {
      const id = ev.points[0].customdata;
      if (id !== undefined) window.location.assign(ui + "/runs/" + id);
    });
  }

  function drawMixture(d) {
    const mix = d.mixture;
    const el = $("plot-mixture");
    $("exports").hidden = !mix;
    $("hf-snippet").hidden = !mix;
    const warnings = $("mixture-warnings");
    warnings.textContent = "";
    for (const text of mix ? mix.warnings : []) {
      const li = document.createElement("li");
      li.textContent = text;
      warnings.appendChild(li);
    }
    warnings.hidden = !warnings.children.length;
    if (!mix) return m.note(el, "No recommendation yet: it appears after the first batch of runs.");
    const traces = [{type: "bar", name: "recommended", x: d.domains, y: mix.recommended,
                     marker: {color: TARGET_COLOUR}, hovertemplate: "%{x}: %{y:.3f}<extra>recommended</extra>"}];
    if (mix.natural) {
      traces.push({type: "bar", name: "natural", x: d.domains, y: mix.natural, marker: {color: "#94a3b8"},
                   hovertemplate: "%{x}: %{y:.3f}<extra>natural</extra>"});
    }
    traces.push({type: "bar", name: "uniform", x: d.domains, y: mix.uniform, marker: {color: "#e2e8f0"},
                 hovertemplate: "%{x}: %{y:.3f}<extra>uniform</extra>"});
    let head = "predicted loss " + m.fixed(mix.predicted_loss, 4);
    if (mix.std !== null) head += " ± " + m.fixed(mix.std, 4);
    head += " · " + (mix.final ? "final" : "interim") + ", " + mix.n_runs + " runs";
    m.draw(el, traces, m.layout({title: m.title(head), barmode: "group", bargap: 0.25,
                                 yaxis: {title: {text: "weight"}, gridcolor: "#eef0f3", rangemode: "tozero"}}));
  }

  function drawFit(d) {
    const f = d.fit;
    const el = $("plot-fit");
    if (f.note) return m.note(el, "No fit yet: " + f.note + ".");
    const lo = Math.min(...f.actual, ...f.predicted);
    const hi = Math.max(...f.actual, ...f.predicted);
    const head = "Spearman ρ = " + m.fixed(f.spearman, 3) + " · MAE " + m.fixed(f.mae, 4) + " · " +
      f.folds + "-fold " + f.model + ", n = " + f.actual.length;
    m.draw(el, [
      {type: "scatter", mode: "lines", name: "y = x", x: [lo, hi], y: [lo, hi], hoverinfo: "skip",
       line: {dash: "dot", color: "#9ca3af", width: 1}},
      {type: "scatter", mode: "markers", name: "run", x: f.actual, y: f.predicted, customdata: f.run_ids,
       marker: {size: 7, color: TARGET_COLOUR, opacity: 0.75, line: {width: 0.5, color: "#ffffff"}},
       hovertemplate: "run #%{customdata}<br>actual %{x:.4f}<br>predicted %{y:.4f}<extra></extra>"},
    ], m.layout({title: m.title(head), showlegend: false,
                 xaxis: {title: {text: "actual target loss"}, gridcolor: "#eef0f3"},
                 yaxis: {title: {text: "predicted (out of fold)"}, gridcolor: "#eef0f3"}}))
      .then(() => linkToRuns(el));
  }

  function drawWeights(d) {
    const w = d.weights;
    const el = $("plot-weights");
    if (!w.run_ids.length) return m.note(el, "No finished runs at fidelity " + w.fidelity + " yet.");
    const dims = d.domains.map((name, i) => ({label: name, values: w.columns[i], range: [0, 1],
                                               tickformat: ".1f"}));
    dims.push({label: "target loss", values: w.target_loss, tickformat: ".3f"});
    m.draw(el, [{type: "parcoords", dimensions: dims,
                 line: {color: w.target_loss, colorscale: "Viridis", reversescale: true}}],
           m.layout({margin: {l: 40, r: 64, t: 48, b: 24}}));
  }

  function drawHeatmap(d) {
    const h = d.heatmap;
    const el = $("plot-heatmap");
    if (!h.run_ids.length) return m.note(el, "No finished runs yet.");
    const many = h.labels.length > 60;
    m.draw(el, [{type: "heatmap", x: d.domains, y: h.labels, z: h.losses, colorscale: "Viridis",
                 reversescale: true, hoverongaps: false, colorbar: {title: {text: "val loss"}, thickness: 12},
                 hovertemplate: "%{y}<br>%{x}: %{z:.4f}<extra></extra>"}],
           m.layout({height: Math.min(640, Math.max(260, 16 * h.labels.length + 90)),
                     margin: {l: many ? 24 : 110, r: 16, t: 16, b: 40},
                     yaxis: {autorange: "reversed", showticklabels: !many, title: many ? {text: "runs"} : {}},
                     xaxis: {side: "bottom"}}));
  }

  const SCALE_COLOURS = {recommended: TARGET_COLOUR, natural: "#f97316", uniform: "#64748b"};

  function drawScale(s) {
    const el = $("plot-scale");
    const head = $("scale-status");
    if (!s) {
      head.textContent = "";
      return m.note(el, "No scale prediction yet. Once the search is done, POST " + api +
        "/scale-prediction (or run `mixlab experiment predict-scale " + root.dataset.id + "`) to train a " +
        "ladder of larger proxies and predict the loss at your target scale.");
    }
    head.textContent = "Prediction #" + s.scale_prediction_id + " · " + s.status + " · ladder runs " +
      s.runs_done + " / " + s.runs_total +
      (s.exponents ? " · " + (s.form || "additive") + " law, " + s.exponents + " exponents" : "") +
      (s.backtest_rel_err == null ? "" : " · backtest error " + (100 * s.backtest_rel_err).toFixed(1) + " %") +
      " · target " + (s.target_params / 1e6).toLocaleString("en") + "M params, " +
      (s.target_tokens / 1e9).toLocaleString("en") + "B tokens" + (s.error ? " · " + s.error : "") +
      s.warnings.map((w) => " · warning: " + w).join("");
    if (!s.series.some((x) => x.loss.length)) return m.note(el, "No ladder run has finished yet.");
    const traces = [];
    for (const x of s.series) {
      const colour = SCALE_COLOURS[x.mixture] || "#a855f7";
      traces.push({type: "scatter", mode: "markers", name: x.mixture + " runs", x: x.compute, y: x.loss,
                   customdata: x.run_ids, legendgroup: x.mixture, marker: {size: 7, color: colour},
                   hovertemplate: "run #%{customdata}<br>loss %{y:.4f}<extra>" + x.mixture + "</extra>"});
      if (x.curve_compute.length) {
        traces.push({type: "scatter", mode: "lines", name: x.mixture + " law", x: x.curve_compute,
                     y: x.curve_loss, legendgroup: x.mixture, line: {color: colour, width: 1.5, dash: "dot"},
                     hovertemplate: "%{y:.4f} at %{x:.3g} FLOPs<extra>" + x.mixture + " law</extra>"});
      }
      if (x.predicted !== null) {
        traces.push({type: "scatter", mode: "markers", name: x.mixture + " at target", legendgroup: x.mixture,
                     x: [x.target_compute], y: [x.predicted], marker: {size: 11, symbol: "diamond", color: colour},
                     error_y: {type: "data", symmetric: false, array: [x.high - x.predicted],
                               arrayminus: [x.predicted - x.low], color: colour},
                     hovertemplate: "predicted %{y:.4f} (" + m.fixed(x.low, 4) + "–" + m.fixed(x.high, 4) +
                       ")<extra>" + x.mixture + "</extra>"});
      }
    }
    m.draw(el, traces, m.layout({
      xaxis: {type: "log", exponentformat: "power", title: {text: "training compute ≈ 6·N·D (FLOPs)"},
              gridcolor: "#eef0f3"},
      yaxis: {title: {text: "target loss"}, gridcolor: "#eef0f3"},
      legend: {orientation: "v", x: 1.02, y: 1}})).then(() => linkToRuns(el));
  }

  function drawOnline(d) {
    const box = $("plot-online");
    if (!d.online.length) {
      box.innerHTML = "";
      return m.note(box, "No online sessions in this experiment.");
    }
    box.classList.remove("note");
    box.textContent = "";
    for (const s of d.online) {
      const el = document.createElement("div");
      el.className = "plot";
      box.appendChild(el);
      m.draw(el, d.domains.map((name, i) => ({
        type: "scatter", mode: "lines", stackgroup: "w", name: name, x: s.steps, y: s.columns[i],
        hovertemplate: name + ": %{y:.3f} at step %{x}<extra></extra>"})),
        m.layout({title: m.title("session #" + s.id + " · " + s.strategy), height: 300,
                  xaxis: {title: {text: "step"}, gridcolor: "#eef0f3"},
                  yaxis: {title: {text: "weight"}, range: [0, 1], gridcolor: "#eef0f3"}}));
    }
  }

  function renderSummary(e) {
    const badge = $("status");
    badge.textContent = e.status;
    badge.className = "badge status-" + e.status;
    $("live").hidden = !e.live;
    $("runs-done").textContent = e.runs_done + " / " + e.runs_total;
    $("spent").textContent = e.spent.toFixed(1);
    $("spent-meter").style.width = Math.min(100, 100 * e.spent / e.budget) + "%";
    $("best-loss").textContent = m.fixed(e.best_loss, 4);
    $("experiment-error").hidden = !e.error;
    $("experiment-error").textContent = e.error || "";
  }

  function cell(row, text, cls) {
    const td = row.insertCell();
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function progress(r) {  // "45% · ETA 2.0 min", or "" when the run reports no steps
    const parts = [];
    if (r.done_fraction !== null) parts.push(Math.round(100 * r.done_fraction) + "%");
    if (r.eta_s !== null) parts.push("ETA " + m.duration(r.eta_s));
    return parts.join(" · ");
  }

  function progressText(r) {
    return r.done_fraction === null ? m.duration(r.duration_s) : progress(r);
  }

  function renderRuns(page) {
    const body = document.querySelector("#runs tbody");
    body.textContent = "";
    for (const r of page.rows) {
      const tr = body.insertRow();
      tr.className = "clickable";
      tr.dataset.href = ui + "/runs/" + r.id;
      const link = document.createElement("a");
      link.href = tr.dataset.href;
      link.textContent = "#" + r.id;
      cell(tr, "").appendChild(link);
      const badge = document.createElement("span");
      badge.className = "badge status-" + r.status;
      badge.textContent = r.status;
      cell(tr, "").appendChild(badge);
      cell(tr, r.fidelity);
      cell(tr, r.origin, "muted");
      cell(tr, String(r.attempts), "num");
      cell(tr, m.fixed(r.target_loss, 4), "num");
      cell(tr, progressText(r), "num");
      const err = cell(tr, r.error || "", "error-cell");
      if (r.error) err.title = r.error;
    }
    const first = page.total ? page.offset + 1 : 0;
    $("runs-count").textContent = first + "–" + (page.offset + page.rows.length) + " of " +
      page.total.toLocaleString("en") + " runs";
    $("page-prev").disabled = page.offset === 0;
    $("page-next").disabled = page.offset + page.rows.length >= page.total;
    for (const th of document.querySelectorAll("#runs th[data-sort]")) {
      if (th.dataset.sort === table.sort) th.setAttribute("aria-sort", table.order === "asc" ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  function drawLive(runs) {
    $("live-card").hidden = !runs.length;
    if (!runs.length) return;
    m.draw($("plot-live"), runs.map((r) => ({
      type: "scatter", mode: "lines", x: r.curve.steps, y: r.curve.train_loss,
      name: ["run #" + r.id + " (" + r.fidelity + ")", progress(r)].filter(Boolean).join(" · "),
      hovertemplate: "run #" + r.id + "<br>step %{x}<br>train loss %{y:.4f}<extra></extra>"})),
      m.layout({height: 300, xaxis: {title: {text: "step"}, gridcolor: "#eef0f3"},
                yaxis: {title: {text: "training loss"}, gridcolor: "#eef0f3"},
                legend: {orientation: "v", x: 1.02, y: 1}}));
  }

  function drawSampling(d) {
    const el = $("plots-sampled");
    el.hidden = d.runs_used >= d.runs_finished;
    el.textContent = "The plots show " + d.runs_used.toLocaleString("en") + " of " +
      d.runs_finished.toLocaleString("en") + " finished runs, evenly spaced over the history with the best " +
      "run among them; the best-so-far line, the runs table and the CSV export use every run.";
  }

  function runsQuery() {
    const q = new URLSearchParams({offset: table.offset, limit: table.limit, sort: table.sort, order: table.order});
    for (const [k, v] of new FormData(filters)) if (v) q.set(k, v);
    return q;
  }

  async function loadPlots() {
    const d = await m.getJSON(api + "/dashboard");
    drawnState = d.experiment.status + "/" + d.experiment.runs_done;
    drawHistory(d);
    drawMixture(d);
    drawFit(d);
    drawWeights(d);
    drawHeatmap(d);
    drawOnline(d);
    drawSampling(d);
    drawScale(await m.getJSON(api + "/dashboard/scale"));
    if (d.mixture) $("snippet").textContent = await m.getText(api + "/dashboard/export?format=hf");
  }

  async function refresh() {  // one poll chain: a filter or page change restarts it
    clearTimeout(timer);
    const page = await m.getJSON(api + "/dashboard/runs?" + runsQuery());
    renderSummary(page.experiment);
    renderRuns(page);
    drawLive(page.live);
    if (page.experiment.status + "/" + page.experiment.runs_done !== drawnState) await loadPlots();
    if (page.experiment.live) timer = setTimeout(() => refresh().catch(m.showError), POLL_MS);
  }

  function reload() {
    const q = runsQuery();
    for (const k of ["offset", "limit", "sort", "order"]) q.delete(k);
    $("runs-csv").href = api + "/runs?format=csv" + (q.toString() ? "&" + q : "");
    refresh().catch(m.showError);
  }

  filters.addEventListener("change", () => { table.offset = 0; reload(); });
  $("page-prev").addEventListener("click", () => { table.offset = Math.max(0, table.offset - table.limit); reload(); });
  $("page-next").addEventListener("click", () => { table.offset += table.limit; reload(); });
  for (const th of document.querySelectorAll("#runs th[data-sort]")) {
    th.addEventListener("click", () => {
      table.order = table.sort === th.dataset.sort && table.order === "desc" ? "asc" : "desc";
      if (th.dataset.sort === "target_loss" && table.sort !== "target_loss") table.order = "asc";  // best first
      table.sort = th.dataset.sort;
      table.offset = 0;
      reload();
    });
  }

  document.querySelector("#runs tbody").addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr[data-href]");
    if (tr && !ev.target.closest("a")) window.location.assign(tr.dataset.href);
  });
  $("copy-snippet").addEventListener("click", () => navigator.clipboard.writeText($("snippet").textContent)
    .catch(() => window.getSelection().selectAllChildren($("snippet"))));

  loadPlots().then(refresh).catch(m.showError);
})();
