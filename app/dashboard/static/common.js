// Shared by the pages: fetching the JSON API (the project key travels in an HttpOnly cookie) and the
// look of every Plotly chart. Pages compute nothing: every number they draw comes from the API.
"use strict";

const mixlab = (() => {
  const PALETTE = ["#2563eb", "#f97316", "#10b981", "#a855f7", "#ef4444", "#0ea5e9", "#eab308",
                   "#ec4899", "#14b8a6", "#64748b", "#84cc16", "#6366f1"];
  const FONT = {family: "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 12,
                color: "#1f2937"};

  async function getJSON(url) {
    const resp = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (resp.status === 401) {
      window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
      throw new Error("not logged in");
    }
    if (!resp.ok) {
      const body = await resp.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || `${url}: HTTP ${resp.status}`);
    }
    return resp.json();
  }

  async function getText(url) {
    const resp = await fetch(url, {credentials: "same-origin"});
    if (!resp.ok) throw new Error(`${url}: HTTP ${resp.status}`);
    return resp.text();
  }

  function layout(extra) {
    return Object.assign({
      font: FONT,
      colorway: PALETTE,
      margin: {l: 56, r: 16, t: 36, b: 48},
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "#ffffff",
      height: 340,
      hoverlabel: {font: {family: FONT.family}},
      legend: {orientation: "h", y: -0.2, x: 0},
      xaxis: {gridcolor: "#eef0f3", zeroline: false},
      yaxis: {gridcolor: "#eef0f3", zeroline: false},
    }, extra);
  }

  function title(text) {
    return {text: text, font: {size: 13, color: "#374151"}, x: 0, xanchor: "left", y: 0.98};
  }

  const CONFIG = {displaylogo: false, responsive: true,
                  modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d"]};

  function draw(el, traces, lay) {
    el.classList.remove("note");
    return Plotly.react(el, traces, lay, CONFIG);
  }

  function note(el, text) {
    if (el.data) Plotly.purge(el);
    delete el.dataset.linked;
    el.classList.add("note");
    el.textContent = text;
  }

  function fixed(x, digits) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function showError(err) {
    let bar = document.getElementById("page-error");
    if (!bar) {
      bar = document.createElement("p");
      bar.id = "page-error";
      bar.className = "error banner";
      document.querySelector("main").prepend(bar);
    }
    bar.textContent = "Could not load the data: " + err.message;
  }

  return {PALETTE, getJSON, getText, layout, title, draw, note, fixed, duration, showError};
})();
