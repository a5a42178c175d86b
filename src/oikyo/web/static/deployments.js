// Deployments: one-click deploy (POST /api/v1/deployments), live requests / latency / error charts
// (polling GET /api/v1/deployments/{name}/stats), drift and quality per card (drift.js), the A/B split
// editor (PUT .../split), stop, and API keys (create: the secret is shown once; revoke).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = api.pageData();
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 5000;

  // ---- deploy
  const deployForm = $("deploy-form");
  deployForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = deployForm.elements, box = $("deploy-result");
    const body = {model: f.model.value};
    if (f.name.value.trim()) body.name = f.name.value.trim();
    if (f.replicas.value.trim()) body.replicas = f.replicas.value.trim();
    if (f.port.value.trim()) body.port = Number(f.port.value);
    $("deploy-button").disabled = true;
    box.replaceChildren(api.el("p", {class: "muted"}, "Starting the deployment…"));
    try {
      const d = await api.post("/deployments", body);
      api.showOk(box, `Deployment ${d.name} is ${d.status || d.state || "starting"}`, d.url ? ` at ${d.url}` : "", ".");
      setTimeout(() => location.reload(), 1200);
    } catch (error) {
      api.showError(box, error);
    } finally {
      $("deploy-button").disabled = false;
    }
  });

  // ---- live charts per deployment: GET /deployments/{name}/stats gives the last hour in 60 one-minute
  // buckets ({start, requests, errors, latency_p50_s, latency_p95_s}), totals and per-variant numbers.
  const WINDOW_MIN = 60;
  const ms = (seconds) => (seconds === null || seconds === undefined ? null : seconds * 1000);

  for (const card of document.querySelectorAll(".deployment")) {
    const name = card.dataset.name;
    const chart = (kind, series, empty) => new charts.LineChart(card.querySelector(`[data-chart="${kind}"]`),
      {series, empty, zero: true, xRange: [-WINDOW_MIN, 0]});
    const requests = chart("requests", ["requests"], "no requests yet");
    const latency = chart("latency", ["p50", "p95"], "no requests yet");
    const errors = chart("errors", ["errors"], "no errors");
    const line = card.querySelector("[data-stats-line]");

    async function poll() {
      try {
        const stats = await api.get(`/deployments/${name}/stats`, {window_s: WINDOW_MIN * 60, buckets: WINDOW_MIN});
        const now = Date.parse(stats.until);
        const x = (b) => Number(((Date.parse(b.start) - now) / 60000).toFixed(2));  // minutes, negative: ago
        requests.set("requests", stats.buckets.map((b) => [x(b), b.requests]));
        errors.set("errors", stats.buckets.map((b) => [x(b), b.errors]));
        latency.set("p50", stats.buckets.filter((b) => b.latency_p50_s !== null).map((b) => [x(b), ms(b.latency_p50_s)]));
        latency.set("p95", stats.buckets.filter((b) => b.latency_p95_s !== null).map((b) => [x(b), ms(b.latency_p95_s)]));
        const t = stats.totals;
        const variants = stats.variants.length > 1 ? " · " + stats.variants.map((v) =>
          `${v.variant} (weight ${api.fmt(v.weight)}): ${v.requests} requests`).join(", ") : "";
        line.textContent = `last hour: ${api.fmt(t.requests)} requests, ${api.fmt(t.errors)} errors, ` +
          `p50 ${api.fmt(ms(t.latency_p50_s), 3)} ms, p95 ${api.fmt(ms(t.latency_p95_s), 3)} ms · ` +
          `all time: ${api.fmt(stats.all_time.requests)} requests${variants} · x axis: minutes ago`;
        card.dataset.requests = String(t.requests);
      } catch (error) {
        line.textContent = `stats unavailable: ${error.message}`;
      }
    }
    poll();
    if ((page.names || []).includes(name)) setInterval(poll, POLL_MS);
    drift.attach(card, name, {live: (page.names || []).includes(name)});  // the Drift panel and Quality line (drift.js)

    // ---- split editor and stop
    const splitForm = card.querySelector(".split-form");
    const result = card.querySelector(".split-result");
    splitForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        result.replaceChildren(api.el("span", {class: "muted"}, "Saving (a running deployment restarts with it)…"));
        const saved = await api.put(`/deployments/${name}/split`, {split: splitForm.elements.split.value.trim()});
        result.replaceChildren(api.el("span", {class: "ok-box"}, saved.restarted ? "Split saved; restarted." : "Split saved."));
      } catch (error) {
        api.showError(result, error);
      }
    });
    card.querySelector(".stop-button").addEventListener("click", async (event) => {
      event.target.disabled = true;
      try {
        await api.post(`/deployments/${name}/stop`);
        location.reload();
      } catch (error) {
        api.showError(result, error);
        event.target.disabled = false;
      }
    });
  }

  // ---- API keys
  const keyForm = $("key-form");
  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = keyForm.elements.name.value.trim();
    try {
      const key = await api.post("/keys", name ? {name} : {});
      $("key-secret").replaceChildren(api.el("div", {class: "ok-box"},
        `Key ${key.id} created. Copy the secret now: it is not shown again. `,
        api.el("span", {class: "secret", id: "new-secret"}, key.secret),
        " ", api.el("button", {type: "button", onclick: () => location.reload()}, "Done")));
    } catch (error) {
      api.showError($("key-secret"), error);
    }
  });
  for (const button of document.querySelectorAll("button.revoke")) {
    button.addEventListener("click", async () => {
      if (!confirm(`Revoke key ${button.dataset.id}? Requests with it will be refused.`)) return;
      try {
        await api.del(`/keys/${button.dataset.id}`);
        location.reload();
      } catch (error) {
        api.showError($("key-secret"), error);
      }
    });
  }
});
