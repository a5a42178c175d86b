// Datasets page: upload a file to POST /api/v1/datasets (multipart, with the CSRF header); a file
// that fails validation shows every problem inline (line, field, error class, message).
"use strict";

// The versions list as the server renders it now (the page itself, fetched again).
async function refreshList() {
  const response = await fetch(location.pathname, {credentials: "same-origin"});
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("versions");
  if (fresh) document.getElementById("versions").replaceWith(fresh);
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  const box = document.getElementById("upload-result");
  const button = document.getElementById("upload-button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    for (const key of ["name", "map", "text_unit"]) if (!String(data.get(key) || "").trim()) data.delete(key);
    button.disabled = true;
    box.replaceChildren(api.el("p", {class: "muted"}, "Uploading and validating…"));
    try {
      const result = await api.upload("/datasets", data);
      const v = result.version;
      const what = result.existed ? "Already stored as" : "Stored";
      const dropped = result.dropped ? ` (${result.dropped} bad rows skipped)` : "";
      const layout = result.text_layout;
      const units = {line: "one document per line", block: "documents separated by blank lines"};
      const how = layout ? ` (${units[layout.unit]}, ${layout.detected ? "detected" : "as chosen"})` : "";
      api.showOk(box, `${what} `, api.el("a", {href: `/datasets/${v.id}`, id: "uploaded-link"}, `${v.name}@${v.id}`),
                 `: ${v.rows} rows, ${v.kind}, detected format ${result.detected_format || v.format}${how}${dropped}.`);
      await refreshList();
    } catch (error) {
      api.showError(box, error);
    } finally {
      button.disabled = false;
    }
  });
});
