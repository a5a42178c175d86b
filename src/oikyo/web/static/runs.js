// The "new run" form: every input is one key of the YAML config (data-path="train.lr"). The values are
// read back into the YAML's nested structure, previewed as validated YAML (POST /api/v1/config/yaml)
// while the user types, and sent to POST /api/v1/runs to start the run.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("run-form");
  const preview = document.getElementById("yaml-preview");
  const problems = document.getElementById("run-problems");
  const start = document.getElementById("start-run");

  function value(input) {
    const kind = input.dataset.kind, raw = (input.value || "").trim();
    const nullable = input.dataset.nullable === "true";
    if (kind === "bool") return input.checked;
    if (kind === "multi") return [...input.querySelectorAll("input:checked")].map((box) => box.value);
    if (kind === "choice") return input.value;
    if (raw === "") return nullable ? null : undefined;  // undefined: leave the default
    if (kind === "int") return Number.isInteger(Number(raw)) ? Number(raw) : raw;  // let the server say why
    if (kind === "float") return Number.isFinite(Number(raw)) ? Number(raw) : raw;
    if (kind === "list") return raw.includes(",") ? raw.split(",").map((s) => s.trim()).filter(Boolean) : raw;
    return raw;
  }

  // The config in the YAML's structure: {"train": {"lr": 0.0002, ...}, "data": {...}, ...}
  function config() {
    const out = {};
    for (const input of form.querySelectorAll("[data-path]")) {
      const v = value(input);
      if (v === undefined) continue;
      const [group, key] = input.dataset.path.split(".");
      (out[group] = out[group] || {})[key] = v;
    }
    return out;
  }

  // Groups that the chosen method does not use are dimmed (still sent: the YAML holds every group).
  // A method's own group carries its name (dpo, grpo, kto, orpo): dimmed unless that method is chosen.
  const METHOD_GROUPS = ["dpo", "grpo", "kto", "orpo"];
  function dim() {
    const cfg = config();
    const finetune = (cfg.method || {}).finetune, method = (cfg.method || {}).name;
    for (const set of form.querySelectorAll("fieldset[data-group]")) {
      const group = set.dataset.group;
      set.classList.toggle("dimmed", (group === "lora" && finetune === "full")
        || (METHOD_GROUPS.includes(group) && method !== group));
    }
  }

  let timer = null, sequence = 0;
  async function refresh() {
    const mine = ++sequence;
    try {
      const result = await api.post("/config/yaml", {config: config()});
      if (mine !== sequence) return;  // an older answer arriving late
      preview.textContent = result.yaml;
      problems.replaceChildren();
    } catch (error) {
      if (mine !== sequence) return;
      api.showError(problems, error);
    }
  }
  function changed() {
    dim();
    clearTimeout(timer);
    timer = setTimeout(refresh, 250);
  }
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  form.addEventListener("submit", (event) => event.preventDefault());

  start.addEventListener("click", async () => {
    start.disabled = true;
    try {
      const name = document.getElementById("run-name").value.trim();
      const run = await api.post("/runs", {config: config(), name: name || null});
      location.href = `/runs/${run.id}`;
    } catch (error) {
      api.showError(problems, error);
      start.disabled = false;
    }
  });

  dim();
  refresh();
});
