// One run: live training curves (loss with eval_loss, learning rate, tokens/s) from the stored series,
// then over server-sent events (GET /api/v1/runs/{id}/events) while the run trains; the log tail;
// cancel and resume.
"use strict";

document.addEventListener("DOMContentLoaded", async () => {
  const page = api.pageData();
  const $ = (id) => document.getElementById(id);
  const loss = new charts.LineChart($("chart-loss"), {series: ["loss", "eval_loss"]});
  const lr = new charts.LineChart($("chart-lr"), {series: ["lr"]});
  const tps = new charts.LineChart($("chart-tps"), {series: ["tokens_per_s"], zero: true});
  const chartOf = {loss, eval_loss: loss, lr, tokens_per_s: tps};
  const FINISHED = ["succeeded", "failed", "cancelled"];

  function setState(state) {
    $("run-state").replaceChildren(api.el("span", {class: `badge state-${state}`}, state));
    $("cancel-run").disabled = !["queued", "running"].includes(state);
    $("resume-run").disabled = !["failed", "cancelled"].includes(state);
  }

  function showLatest(step, values) {
    $("stat-step").textContent = api.fmt(step);
    for (const [name, value] of Object.entries(values)) {
      const cell = $(`stat-${name}`);
      if (cell) cell.textContent = api.fmt(value, name === "tokens_per_s" ? 3 : 4);
    }
  }

  let lastStep = null;
  try {
    const data = await api.get(`/runs/${page.id}/metrics`, {names: Object.keys(chartOf).join(",")});
    for (const [name, points] of Object.entries(data.series || {})) {
      if (chartOf[name]) chartOf[name].set(name, points);
      if (points.length) lastStep = Math.max(lastStep ?? 0, points[points.length - 1][0]);
    }
  } catch (error) {
    api.showError($("action-result"), error);
  }

  async function refreshLog() {
    try {
      const data = await api.get(`/runs/${page.id}/logs`, {tail: 80});
      const lines = Array.isArray(data) ? data : data.lines || [];
      const box = $("log-tail");
      const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
      box.textContent = lines.length ? lines.join("\n") : "(empty)";
      if (atBottom) box.scrollTop = box.scrollHeight;
    } catch (_) { /* the next refresh tries again */ }
  }

  function follow() {
    // From the last step drawn (again: its eval_loss may land after its loss); add() replaces repeats.
    const query = lastStep === null ? "" : `?since_step=${lastStep - 1}`;
    const source = new EventSource(api.url(`/runs/${page.id}/events`) + query);
    const logTimer = setInterval(refreshLog, 3000);
    let state = page.state;
    $("live-note").textContent = "live";
    source.addEventListener("metrics", (event) => {
      const {step, values} = JSON.parse(event.data);
      for (const [name, value] of Object.entries(values)) if (chartOf[name]) chartOf[name].add(name, step, value);
      showLatest(step, values);
    });
    source.addEventListener("state", (event) => {
      state = JSON.parse(event.data).state;
      setState(state);
    });
    source.addEventListener("end", () => {
      source.close();
      clearInterval(logTimer);
      $("live-note").textContent = "";
      refreshLog();
      // Checkpoints and the model version appear once the run has finished: show them.
      if (FINISHED.includes(state) && state !== page.state) setTimeout(() => location.reload(), 1500);
    });
  }

  async function act(what) {
    const box = $("action-result");
    try {
      const result = await api.post(`/runs/${page.id}/${what}`);
      box.textContent = result.message || `${what}: ${result.state}`;
      setState(result.state);
      if (what === "resume") setTimeout(() => location.reload(), 800);
    } catch (error) {
      api.showError(box, error);
    }
  }
  $("cancel-run").addEventListener("click", () => act("cancel"));
  $("resume-run").addEventListener("click", () => act("resume"));

  if (page.live) follow();
});
