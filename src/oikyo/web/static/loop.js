// A deployment's loop page: the manual actions (POST /api/v1/loop/{deployment}/pause|resume|trigger|cancel),
// then the page is drawn again from the store.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const page = api.pageData();
  const box = document.getElementById("loop-result");
  const CONFIRM = {cancel: "Cancel the cycle in progress? Its training run is cancelled and a canary gives all traffic back to the champion."};
  for (const button of document.querySelectorAll("[data-loop-action]")) {
    button.addEventListener("click", async () => {
      const action = button.dataset.loopAction;
      if (CONFIRM[action] && !window.confirm(CONFIRM[action])) return;
      button.disabled = true;
      try {
        await api.post(`/loop/${encodeURIComponent(page.deployment)}/${action}`);
        location.reload();
      } catch (error) {
        api.showError(box, error);
        button.disabled = false;
      }
    });
  }
});
