// One dataset version: the quality report (fetched from the API: it reads every row, so the page
// itself stays fast), its token-length histograms as bars, a paged preview of rows, and splitting.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = api.pageData();
  const $ = (id) => document.getElementById(id);

  // ---- quality report
  async function loadReport() {
    const model = $("report-model").value;
    $("report-status").textContent = model ? `Counting tokens with ${model}'s tokenizer…` : "Computing the report…";
    try {
      const report = await api.get(`/datasets/${page.ref}/report`, {model});
      const ex = report.lengths.example;
      const dup = report.duplicates || {};
      const stats = [
        [report.tokens.total, `${report.token_unit} in all`], [ex.mean, "mean per example"],
        [ex.median, "median"], [ex.p95, "95th percentile"], [ex.max, "longest"],
        [(dup.exact || {}).count, "exact duplicates"], [(dup.near || {}).count, "near duplicates"],
        [((report.answers || {}).empty || 0) + ((report.answers || {}).short || 0), "empty or short answers"],
      ];
      $("report-stats").replaceChildren(...stats.map(([value, name]) =>
        api.el("div", {class: "stat"}, api.el("span", {class: "value"}, api.fmt(value, 3)),
               api.el("span", {class: "label"}, name))));
      // The unit and why: a tokenizer's tokens, characters for text written without spaces, or words.
      const why = report.token_unit_reason ? `: ${report.token_unit_reason}` : "";
      $("report-unit").textContent = `(${report.token_unit}${why}; power-of-two bins)`;
      const hist = report.histograms;
      charts.bars($("hist-example"), hist.bins, hist.example, {title: "examples by length"});
      const roles = $("hist-roles");
      roles.replaceChildren();
      for (const [role, counts] of Object.entries(hist.by_role || {})) {
        const box = api.el("div", {class: "chart", "data-role": role});
        roles.append(box);
        charts.bars(box, hist.bins, counts, {title: `${role} turns by length`});
      }
      const warnings = report.warnings || [];
      $("report-warnings").replaceChildren(...(warnings.length ? warnings.map((w) => api.el("li", {}, w))
        : [api.el("li", {class: "muted"}, "No warnings.")]));
      $("report-status").textContent = `Computed in ${api.fmt(report.seconds || 0, 2)} s.`;
      $("report-body").hidden = false;
    } catch (error) {
      api.showError($("report-status"), error);
    }
  }

  // ---- rows preview, 20 at a time
  const LIMIT = 20;
  let offset = 0;

  function renderRow(row, index) {
    const card = api.el("div", {class: "row-card"}, api.el("div", {class: "muted small"},
      `#${index}` + (row.split ? ` · ${row.split}` : "") + (row.label ? ` · label ${row.label}` : "")));
    for (const turn of row.messages || []) {
      card.append(api.el("div", {class: "turn"}, api.el("span", {class: "role"}, turn.role), turn.content));
    }
    for (const key of ["text", "chosen", "rejected"]) {
      if (row[key] !== undefined) card.append(api.el("div", {class: "turn"}, api.el("span", {class: "role"}, key), row[key]));
    }
    return card;
  }

  async function loadRows() {
    const split = $("rows-split").value;
    try {
      const data = await api.get(`/datasets/${page.ref}/rows`, {offset, limit: LIMIT, split});
      $("rows-body").replaceChildren(...(data.rows.length ? data.rows.map((r, i) => renderRow(r, offset + i))
        : [api.el("p", {class: "muted"}, "No rows here.")]));
      const end = offset + data.rows.length;
      $("rows-range").textContent = data.rows.length ? `rows ${offset + 1}–${end} of ${api.fmt(data.total)}` : "";
      $("rows-prev").disabled = offset === 0;
      $("rows-next").disabled = end >= data.total;
    } catch (error) {
      api.showError($("rows-body"), error);
    }
  }

  $("rows-prev").addEventListener("click", () => { offset = Math.max(0, offset - LIMIT); loadRows(); });
  $("rows-next").addEventListener("click", () => { offset += LIMIT; loadRows(); });
  $("rows-split").addEventListener("change", () => { offset = 0; loadRows(); });

  // ---- split into a new version
  const splitForm = $("split-form");
  if (splitForm) {
    splitForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = splitForm.elements;
      try {
        const result = await api.post(`/datasets/${page.ref}/split`, {validation: Number(f.validation.value),
          test: Number(f.test.value), seed: Number(f.seed.value)});
        location.href = `/datasets/${result.version.id}`;
      } catch (error) {
        api.showError($("split-result"), error);
      }
    });
  }

  $("report-model").addEventListener("change", loadReport);
  loadRows();
  loadReport();
});
