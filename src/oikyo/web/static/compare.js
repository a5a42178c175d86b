// Compare two runs or model versions: their loss curves overlaid (from each run's stored series), the
// metric table with paired-bootstrap confidence intervals and the answers side by side (POST /api/v1/compare).
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const page = api.pageData();
  const $ = (id) => document.getElementById(id);
  if (!page.a || !page.b) return;

  // ---- curves: series "A" and "B" on one chart per metric
  const loss = new charts.LineChart($("chart-loss"), {series: ["A", "B"], empty: "no training curve"});
  const evalLoss = new charts.LineChart($("chart-eval"), {series: ["A", "B"], empty: "no validation loss"});
  page.runs.forEach(async (runId, i) => {
    if (!runId) return;
    try {
      const data = await api.get(`/runs/${runId}/metrics`, {names: "loss,eval_loss"});
      const side = i === 0 ? "A" : "B";
      loss.set(side, (data.series || {}).loss || []);
      evalLoss.set(side, (data.series || {}).eval_loss || []);
    } catch (_) { /* shown as "no training curve" */ }
  });

  // ---- metrics with confidence intervals, and differing answers
  try {
    const report = await api.post("/compare", {a: page.a, b: page.b, examples: 5});
    const rows = Object.entries(report.metrics || {}).map(([name, m]) => {
      const better = m.significant && ((m.delta > 0) === m.higher_is_better);
      const tr = api.el("tr", {class: m.significant ? (better ? "good" : "bad") : ""},
        api.el("td", {}, name + (name === report.primary_metric ? " ★" : "")),
        api.el("td", {class: "num"}, api.fmt(m.a)), api.el("td", {class: "num"}, api.fmt(m.b)),
        api.el("td", {class: "num delta"}, api.fmt(m.delta)),
        api.el("td", {class: "num"}, `[${api.fmt(m.low)}, ${api.fmt(m.high)}]`),
        api.el("td", {}, m.verdict));
      return tr;
    });
    const table = api.el("table", {id: "metrics-table"},
      api.el("thead", {}, api.el("tr", {}, ["Metric", "A", "B", "A − B", "95% CI", "Verdict"].map((h, i) =>
        api.el("th", {class: i >= 1 && i <= 4 ? "num" : null}, h)))),
      api.el("tbody", {}, rows));
    $("metrics-body").replaceChildren(
      api.el("p", {class: "muted small"}, `A: ${report.a.name} · B: ${report.b.name} · ${report.paired_examples} paired examples of ` +
             `${report.dataset_version_id}${report.split ? ":" + report.split : ""} · ${report.resamples} resamples`),
      rows.length ? table : api.el("p", {class: "muted"}, "No metric in common."));
    const examples = report.examples || [];
    $("examples-body").replaceChildren(...(examples.length ? examples.map((ex) => api.el("div", {class: "row-card"},
      api.el("div", {class: "prompt"}, ex.question),
      api.el("div", {class: "grid-2"},
        api.el("div", {class: "answer"}, api.el("h3", {}, `A${ex.score_a !== null && ex.score_a !== undefined ? " · " + api.fmt(ex.score_a, 3) : ""}`), ex.a || ""),
        api.el("div", {class: "answer"}, api.el("h3", {}, `B${ex.score_b !== null && ex.score_b !== undefined ? " · " + api.fmt(ex.score_b, 3) : ""}`), ex.b || "")),
      api.el("p", {class: "small muted"}, "Reference: ", ex.reference || "")))
      : [api.el("p", {class: "muted"}, "A and B answered every example alike.")]));
  } catch (error) {
    const note = api.el("p", {class: "muted"}, error.message);
    $("metrics-body").replaceChildren(note);
    $("examples-body").replaceChildren(api.el("p", {class: "muted"}, "Needs evaluations of both on the same data."));
  }
});
