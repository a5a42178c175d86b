// oikyo dashboard: calling the REST API from a page, plus a few DOM helpers every page uses.
//
//   const runs = await api.get("/runs", {state: "running"});      // GET /api/v1/runs?state=running
//   await api.post("/runs/run-1a2b/cancel");                      // unsafe methods carry the CSRF header
//   try { ... } catch (error) { api.showError(box, error); }      // the API's {"error": {...}} shape, shown
//
// Unsafe requests (POST, PUT, DELETE) echo the oikyo_csrf cookie in the X-CSRF-Token header (double
// submit; see oikyo.api.auth). A 401 means the session is gone: the page goes to the login form.
"use strict";

const api = (() => {
  const PREFIX = "/api/v1";

  function cookie(name) {
    for (const part of document.cookie.split(";")) {
      const [key, ...rest] = part.trim().split("=");
      if (key === name) return decodeURIComponent(rest.join("="));
    }
    return "";
  }

  class ApiError extends Error {
    constructor(status, body, text) {
      const error = (body && body.error) || {};
      super(error.message || text || `HTTP ${status}`);
      this.status = status;
      this.type = error.type || "http_error";
      this.problems = error.problems || [];
      this.counts = error.counts || null;
      this.body = body;
    }
  }

  function url(path, query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") params.set(key, value);
    }
    const qs = params.toString();
    return PREFIX + path + (qs ? "?" + qs : "");
  }

  async function request(method, path, {json, form, query} = {}) {
    const headers = {"Accept": "application/json"};
    if (!["GET", "HEAD"].includes(method)) headers["X-CSRF-Token"] = cookie("oikyo_csrf");
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;  // FormData: the browser writes the multipart boundary
    }
    const response = await fetch(url(path, query), {method, headers, body, credentials: "same-origin"});
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (response.status === 401 && !location.pathname.startsWith("/login")) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    }
    if (!response.ok) throw new ApiError(response.status, data, text);
    return data;
  }

  // el("td", {class: "num", title: "x"}, "text", child...): a DOM element (strings become text nodes).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function fmt(value, digits = 4) {
    if (value === null || value === undefined) return "—";
    if (typeof value !== "number") return String(value);
    if (!Number.isFinite(value)) return String(value);
    if (Number.isInteger(value)) return value.toLocaleString("en");
    return Number(value.toPrecision(digits)).toString();
  }

  function table(headers, rows) {
    return el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) =>
        cell instanceof Node ? el("td", {}, cell) : el("td", {}, cell === null || cell === undefined ? "—" : cell))))));
  }

  // Show an error (an ApiError, or any Error) in ``box``: the message, and the problems as a table
  // (line, field, error class, message) when the API listed them.
  function showError(box, error) {
    box.replaceChildren();
    const problems = error.problems || [];
    const message = error.message || String(error);
    // With a table of problems below, the message's first line is enough (it may repeat the list).
    const div = el("div", {class: "error-box", role: "alert"}, problems.length ? message.split("\n")[0] : message);
    if (problems.length) {
      const columns = [["Line", (p) => p.line ?? p.location ?? p.index], ["Field", (p) => p.field],
                       ["Error class", (p) => p.error_class], ["Message", (p) => p.message]]
        .filter(([, get]) => problems.some((p) => get(p) !== null && get(p) !== undefined && get(p) !== ""));
      const t = table(columns.map(([name]) => name), problems.map((p) => columns.map(([, get]) => get(p) ?? "")));
      t.classList.add("problems");
      div.append(t);
    }
    if (error.counts && Object.keys(error.counts).length) {
      div.append(el("p", {class: "small"}, "Counts: " +
        Object.entries(error.counts).map(([k, n]) => `${k} ${n}`).join(", ")));
    }
    box.append(div);
  }

  function showOk(box, ...content) {
    box.replaceChildren(el("div", {class: "ok-box"}, ...content));
  }

  // The JSON the server rendered into <script id="page-data"> (ids, states, ...), or {}.
  function pageData() {
    const node = document.getElementById("page-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  document.addEventListener("DOMContentLoaded", () => {
    // <select data-autosubmit>: choosing an option submits its form (no inline handlers: see the CSP).
    for (const select of document.querySelectorAll("[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
    const logout = document.getElementById("logout");
    if (logout) {
      logout.addEventListener("click", async () => {
        try { await request("POST", "/logout"); } finally { location.href = "/login"; }
      });
    }
  });

  return {
    get: (path, query) => request("GET", path, {query}),
    post: (path, json) => request("POST", path, {json: json === undefined ? {} : json}),
    put: (path, json) => request("PUT", path, {json}),
    del: (path) => request("DELETE", path),
    upload: (path, form) => request("POST", path, {form}),
    request, cookie, url, el, fmt, table, showError, showOk, pageData, ApiError,
  };
})();
