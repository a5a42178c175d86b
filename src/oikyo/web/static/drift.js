// Drift and quality panel of a deployment card (templates/deployments.html, [data-drift]).
//
//   drift.attach(card, "support", {live: true});   // fetch now, and again every POLL_MS while live
//
// GET /api/v1/deployments/{name}/drift gives the checks that `oikyo deployments drift` recorded:
// ``latest`` (the newest check per variant and detector) fills the table, with a red badge where the
// score (statistic / threshold) is above 1; the newest alarm's examples are listed; ``checks`` (newest
// first) draw one chart per detector, a line per variant, with the threshold as a dashed line at 1.
// GET .../quality gives the flag shares of the answers checked in the last hour (the Quality line).
// Everything from the server goes into text nodes (api.el): inputs may hold markup.
"use strict";

const drift = (() => {
  const POLL_MS = 30000;  // checks come every few minutes at most; the traffic charts poll faster
  const QUALITY_WINDOW_S = 3600;
  const FLAGS = [["degenerate_share", "degenerate"], ["refusal_share", "refusal"],
                 ["invalid_json_share", "invalid JSON"], ["schema_mismatch_share", "schema mismatch"]];
  const UNITS = [["days", 86400000], ["hours", 3600000], ["minutes", 60000]];
  const el = api.el;

  // Store timestamps without an offset are UTC.
  const time = (iso) => Date.parse(/(Z|[+-]\d\d:\d\d)$/i.test(iso) ? iso : iso + "Z");
  const pct = (share) => (share === null || share === undefined ? "—" : `${api.fmt(share * 100, 2)}%`);

  function ago(iso) {
    const ms = Date.now() - time(iso);
    for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["min", 60000]]) {
      if (ms >= size) return `${Math.floor(ms / size)} ${unit} ago`;
    }
    return "just now";
  }

  function badge(check) {
    return el("span", {class: `badge drift-score ${check.alarm ? "alarm" : "calm"}`,
                       title: `statistic ${api.fmt(check.statistic)} / threshold ${api.fmt(check.threshold)}`},
              check.score.toFixed(2));
  }

  function latestTable(tbody, latest) {
    const rows = [...latest].sort((a, b) => (a.detector + a.variant).localeCompare(b.detector + b.variant));
    tbody.replaceChildren(...rows.map((c) => el("tr", {class: c.alarm ? "alarm" : null, "data-detector": c.detector,
                                                        "data-variant": c.variant || ""},
      el("td", {class: "mono"}, c.detector), el("td", {class: "mono"}, c.variant || "—"), el("td", {}, badge(c)),
      el("td", {}, (c.details && c.details.what) || "—"), el("td", {class: "muted"}, ago(c.created_at)))));
  }

  // The newest alarm among the latest checks, else in the history: what moved and its example inputs.
  function alarmBox(box, latest, checks) {
    const alarm = [...latest].filter((c) => c.alarm).sort((a, b) => time(b.created_at) - time(a.created_at))[0] ||
      checks.find((c) => c.alarm);
    box.hidden = !alarm;
    if (!alarm) return box.replaceChildren();
    const details = alarm.details || {};
    const examples = (details.examples || []).map((e) => el("li", {},
      el("span", {class: "mono drift-input"}, e.input), e.why ? el("span", {class: "muted"}, ` (${e.why})`) : null));
    box.replaceChildren(
      el("p", {}, el("strong", {}, "Latest alarm: "), `${alarm.detector} on ${alarm.variant || "—"}, score `,
         badge(alarm), `, ${ago(alarm.created_at)} (${alarm.requests} requests against ${alarm.reference}): `,
         el("span", {"data-what": ""}, details.what || "")),
      examples.length ? el("ul", {class: "drift-examples"}, examples) : el("p", {class: "muted"}, "no example inputs"));
  }

  // One chart per detector: score over time, one line per variant, the threshold (1) dashed.
  function scoreCharts(box, checks) {
    const now = Date.now();
    const span = checks.length ? now - Math.min(...checks.map((c) => time(c.created_at))) : 0;
    const [unit, size] = UNITS.find(([, s]) => span >= 3 * s) || UNITS[UNITS.length - 1];
    const byDetector = new Map();
    for (const c of [...checks].reverse()) {  // oldest first: lines run left to right
      const variants = byDetector.get(c.detector) || new Map();
      const key = c.variant || "—";
      if (!variants.has(key)) variants.set(key, []);
      variants.get(key).push([Number(((time(c.created_at) - now) / size).toFixed(3)), c.score]);
      byDetector.set(c.detector, variants);
    }
    box.replaceChildren();
    for (const detector of [...byDetector.keys()].sort()) {
      const variants = byDetector.get(detector);
      const holder = el("div", {class: "chart", "data-chart": `drift-${detector}`,
                                "data-title": `${detector} score · x: ${unit} ago`});
      box.append(holder);
      const chart = new charts.LineChart(holder, {series: [...variants.keys()], zero: true,
                                                  hlines: [{y: 1, label: "threshold"}]});
      for (const [variant, points] of variants) chart.set(variant, points);
    }
  }

  function qualityLine(line, variants) {
    const checked = Object.entries(variants).filter(([, q]) => q.checked > 0);
    line.hidden = !checked.length;
    if (!checked.length) return line.replaceChildren();
    const many = checked.length > 1;
    line.replaceChildren(el("strong", {}, "Quality"), " (last hour): ", ...checked.flatMap(([variant, q], i) => {
      const flags = FLAGS.map(([key, name]) => `${name} ${pct(q[key])}`);
      flags.push(q.rated ? `negative feedback ${pct(q.negative_feedback_share)} of ${api.fmt(q.rated)} rated`
                         : "negative feedback — (none rated)");
      return [i ? " · " : "", many ? el("span", {class: "mono"}, `${variant}: `) : "",
              `${api.fmt(q.checked)} answers checked: ${flags.join(", ")}`];
    }));
  }

  function attach(card, name, {live = false} = {}) {
    const panel = card.querySelector("[data-drift]");
    if (!panel) return;
    const part = (key) => panel.querySelector(`[data-${key}]`);
    async function poll() {
      try {
        const [view, quality] = await Promise.all([
          api.get(`/deployments/${name}/drift`),
          api.get(`/deployments/${name}/quality`, {window_s: QUALITY_WINDOW_S})]);
        const any = view.checks.length > 0 || view.latest.length > 0;
        part("drift-empty").hidden = any;
        part("drift-body").hidden = !any;
        if (any) {
          latestTable(part("drift-latest").querySelector("tbody"), view.latest);
          alarmBox(part("drift-alarm"), view.latest, view.checks);
          scoreCharts(part("drift-charts"), view.checks);
          part("drift-when").textContent = `· last check ${ago((view.checks[0] || view.latest[0]).created_at)}`;
        }
        qualityLine(part("quality"), quality.variants);
        panel.dataset.checks = String(view.checks.length);
      } catch (error) {
        part("drift-when").textContent = `· unavailable: ${error.message}`;
      }
    }
    poll();
    if (live) setInterval(poll, POLL_MS);
  }

  return {attach};
})();
