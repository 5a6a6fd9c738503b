// The dashboard updates itself when the vault or the audit trail changes (the command
// line, a server, another tab): it asks /changes every two seconds and reloads. While
// you are typing into a form it only says so, and keeps what you typed.
"use strict";
(() => {
  const shown = document.querySelector('meta[name="piper-state"]').content;
  let typing = false;
  document.addEventListener("input", () => { typing = true; });
  const check = async () => {
    if (document.hidden) return;
    const answer = await fetch("/changes", { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) return;
    const { state } = await answer.json();
    if (state === shown) return;
    if (typing) document.getElementById("stale").hidden = false;
    else location.reload();
  };
  setInterval(() => { check().catch(() => {}); }, 2000);
})();
