// Blind pairwise rating: start a session (POST /api/v1/ratings/sessions), show each prompt with two
// answers in the order the server chose at random, record left / right / tie (POST /api/v1/ratings),
// then A's win rate with its confidence interval (GET /api/v1/ratings/summary).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const $ = (id) => document.getElementById(id);
  const form = $("rate-form");
  if (!form) return;
  let session = null, index = 0, busy = false;

  function showPair() {
    const pair = session.pairs[index];
    $("pair-number").textContent = `${index + 1} of ${session.pairs.length}`;
    $("pair-prompt").textContent = pair.prompt;
    $("pair-left").textContent = pair.left;
    $("pair-right").textContent = pair.right;
  }

  async function showSummary() {
    $("rate-pair").hidden = true;
    const box = $("summary-body");
    try {
      const s = await api.get("/ratings/summary", {a: form.elements.a.value, b: form.elements.b.value});
      const ci = s.ci95 ? `95% CI ${api.fmt(s.ci95[0] * 100, 3)}–${api.fmt(s.ci95[1] * 100, 3)}%` : "no interval yet";
      box.replaceChildren(
        api.el("p", {}, `Win rate of A (${s.a}) over B (${s.b}):`),
        api.el("p", {class: "big-number", id: "win-rate"}, s.win_rate_a === null ? "—" : `${api.fmt(s.win_rate_a * 100, 3)}%`),
        api.el("p", {}, `${ci} · ${s.n} rated pairs: A better ${s.wins_a}, B better ${s.wins_b}, ties ${s.ties}`),
        api.el("p", {class: "muted small"}, `${s.method}. Over ${s.sessions.length} session(s) between these two models.`));
    } catch (error) {
      api.showError(box, error);
    }
    $("rate-summary").hidden = false;
  }

  async function choose(choice) {
    if (!session || busy || $("rate-pair").hidden) return;
    busy = true;
    try {
      await api.post("/ratings", {pair_id: session.pairs[index].pair_id, choice});
      index += 1;
      if (index < session.pairs.length) showPair(); else await showSummary();
    } catch (error) {
      api.showError($("rate-error"), error);
    } finally {
      busy = false;
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = form.elements;
    $("rate-error").replaceChildren();
    $("rate-summary").hidden = true;
    try {
      session = await api.post("/ratings/sessions", {a: f.a.value, b: f.b.value, dataset: f.dataset.value,
        split: f.split.value || null, n: Number(f.n.value) || null});
      index = session.pairs.findIndex((p) => p.choice === null || p.choice === undefined);
      if (index < 0) { await showSummary(); return; }
      $("rate-pair").hidden = false;
      showPair();
    } catch (error) {
      api.showError($("rate-error"), error);
    }
  });

  for (const button of document.querySelectorAll("#rate-pair [data-choice]")) {
    button.addEventListener("click", () => choose(button.dataset.choice));
  }
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea")) return;
    const choice = {ArrowLeft: "left", ArrowRight: "right", ArrowDown: "tie"}[event.key];
    if (choice) { event.preventDefault(); choose(choice); }
  });
});
