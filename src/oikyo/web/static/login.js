// The login form: POST the token to /api/v1/login, then go where the user was going.
// The token may come prefilled from ?token= (the server fills it in) or #token= (read here, never sent
// to the server in a URL); the fragment is removed from the address bar at once.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("login-form");
  const input = document.getElementById("token");
  const box = document.getElementById("login-error");
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    input.value = hash.get("token");
    history.replaceState(null, "", location.pathname + location.search);
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    box.hidden = true;
    try {
      await api.request("POST", "/login", {json: {token: input.value.trim()}});
      const next = form.elements.next.value;
      location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
    } catch (error) {
      box.textContent = error.message;
      box.hidden = false;
    }
  });
});
