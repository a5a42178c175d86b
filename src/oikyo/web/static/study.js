// One study, as `oikyo tune show` reports it. While the study runs, the page asks GET
// /api/v1/studies/{id} for its report every few seconds (page.poll_ms) and draws the state, the counts,
// the best trial or Pareto front, the trials and the importances again, and reloads the plot images
// when a trial changed (the server draws them again then; a new ?v= makes the browser fetch them).
// It stops once the study is finished or interrupted. The builders below make the same markup as
// study.html; every value goes in as a text node, so names and params are never read as HTML.
"use strict";

const studyPage = (() => {
  const el = api.el;

  function joined(parts) {  // [a, b, c] -> [a, ", ", b, ", ", c], or ["—"] for none
    const out = [];
    parts.forEach((part, i) => { if (i) out.push(", "); out.push(part); });
    return out.length ? out.flat(2) : ["—"];
  }

  function badge(state) {
    return el("span", {class: `badge state-${state}`}, state);
  }

  function paramsText(params) {
    return joined(Object.keys(params || {}).sort()
      .map((key) => [el("span", {class: "mono"}, key), "=" + api.fmt(params[key])]));
  }

  // values: {objective: value} (a trial) or [value, ...] in the objectives' order (a summary row).
  function valuesText(values, names) {
    if (!values) return ["—"];
    return joined(names.map((name, i) => `${name} ${api.fmt(Array.isArray(values) ? values[i] : values[name])}`));
  }

  function runLinks(ids) {
    return joined((ids || []).map((id) => el("a", {class: "mono", href: `/runs/${id}`}, id)));
  }

  function seconds(value) {  // as the pages' `seconds` filter: "2 h 5 min", "3 min 20 s", "7 s"
    if (value === null || value === undefined) return "—";
    const s = Math.max(0, Math.floor(value));
    if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  }

  function trialRows(info) {
    const study = info.study;
    if (!info.trials.length) {
      return [el("tr", {class: "no-trials"}, el("td", {colspan: 7, class: "muted"}, "No trial has started yet."))];
    }
    const durations = Object.fromEntries(info.history.map((h) => [h.number, h.duration_s]));
    return info.trials.map((t) => {
      const state = t.state;
      const star = study.best_trials.includes(t.number) ? [" ", el("span", {title: "best"}, "★")] : null;
      return el("tr", {"data-trial": t.number, "data-state": state},
        el("td", {class: "num"}, String(t.number), star),
        el("td", {}, badge(state)),
        el("td", {}, paramsText(t.params)),
        el("td", {}, valuesText(t.values, study.objectives)),
        el("td", {}, runLinks(t.run_ids)),
        el("td", {}, seconds(durations[t.number])),
        el("td", {}, t.reason || ""));
    });
  }

  function best(summary) {
    const parts = [];
    if (summary.best) {
      const b = summary.best;
      const facts = [["Trial", `#${b.number}`], ["Value", valuesText(b.values, summary.objectives)],
                     ["Params", paramsText(b.params)], ["Runs", runLinks(b.run_ids)]];
      if (b.std && Object.keys(b.std).length) facts.push(["Std across folds", valuesText(b.std, summary.objectives)]);
      parts.push(el("dl", {class: "facts", id: "best-trial"}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]).flat()));
    } else if (summary.pareto_front) {
      parts.push(el("table", {id: "pareto-table"},
        el("thead", {}, el("tr", {}, el("th", {class: "num"}, "Trial"),
          summary.objectives.map((name) => el("th", {class: "num"}, name)), el("th", {}, "Params"), el("th", {}, "Runs"))),
        el("tbody", {}, summary.pareto_front.map((row) => el("tr", {},
          el("td", {class: "num"}, `#${row.number}`), row.values.map((v) => el("td", {class: "num"}, api.fmt(v))),
          el("td", {}, paramsText(row.params)), el("td", {}, runLinks(row.run_ids)))))));
    }
    for (const note of summary.notes) parts.push(el("p", {class: "muted small"}, note));
    return parts;
  }

  function importances(entries) {
    return entries.map((entry) => [
      el("h3", {}, entry.objective, " ", el("span", {class: "muted small"},
        `${entry.n_complete} complete trials` + (entry.few_trials ? ", few: a rough guide" : ""))),
      entry.params
        ? el("table", {}, el("tbody", {}, Object.entries(entry.params).map(([name, share]) =>
            el("tr", {}, el("td", {class: "mono"}, name), el("td", {class: "num"}, api.fmt(share, 2))))))
        : el("p", {class: "muted"}, `Not computed: ${entry.reason}`),
    ]).flat();
  }

  // Fetch one plot again under a new ?v=; a plot that cannot be drawn yet (404) keeps its note.
  // Resolves once the image has loaded or failed.
  function reloadPlot(box, study, name, version) {
    return new Promise((settled) => {
      let figure = box.querySelector(`figure[data-plot="${CSS.escape(name)}"]`);
      if (!figure) {
        figure = el("figure", {class: "plot", "data-plot": name}, el("figcaption", {}, name.replaceAll("_", " ")));
        box.append(figure);
      }
      const img = new Image();
      img.alt = `${name} plot of ${study.name}`;
      img.addEventListener("load", () => {
        for (const old of figure.querySelectorAll("img, .plot-missing")) old.remove();
        figure.append(img);
        settled();
      });
      img.addEventListener("error", settled);
      img.src = api.url(`/studies/${study.id}/plots/${encodeURIComponent(name)}.png`, {v: version});
    });
  }

  // One image at a time, and the next report only after them: the server draws a study's plots
  // again (matplotlib) when the trials changed, and overlapping requests would draw them twice at once.
  async function reloadPlots(study, names, version) {
    const box = document.getElementById("plots");
    for (const name of names) await reloadPlot(box, study, name, version);
    box.dataset.version = version;
  }

  function show(info) {
    const study = info.study, counts = info.summary.counts;
    document.getElementById("study-state").replaceChildren(badge(study.state));
    document.getElementById("count-launched").textContent = `${study.launched}/${study.n_trials}`;
    for (const state of ["complete", "pruned", "failed", "running"]) {
      document.getElementById(`count-${state}`).textContent = api.fmt(counts[state] || 0);
    }
    document.getElementById("best").replaceChildren(...best(info.summary));
    document.getElementById("trials-body").replaceChildren(...trialRows(info));
    document.getElementById("importances").replaceChildren(...importances(info.importances));
  }

  // What the plots are drawn from: when this changes, the images are fetched again.
  function fingerprint(info) {
    return JSON.stringify(info.trials.map((t) => [t.number, t.state, t.values]));
  }

  async function follow(page) {
    const note = document.getElementById("live-note");
    let seen = null, version = 0;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, page.poll_ms));
      if (document.hidden) continue;  // a background tab asks nothing; it catches up when shown
      let info;
      try {
        info = await api.get(`/studies/${page.id}`);
      } catch (error) {
        if (error.status === 404) { note.textContent = "study not found"; return; }
        note.textContent = "live (the server did not answer; trying again)";
        continue;
      }
      note.textContent = "live";
      show(info);
      const stamp = fingerprint(info);
      // Always on the first answer too: trials may have changed since the server drew the page.
      if (stamp !== seen) await reloadPlots(info.study, info.plots, ++version);
      seen = stamp;
      if (info.study.state !== "running") {
        note.textContent = "";
        return;
      }
    }
  }

  return {follow, trialRows, best, importances, show};
})();

document.addEventListener("DOMContentLoaded", () => {
  const page = api.pageData();
  if (page.live) studyPage.follow(page);
});
