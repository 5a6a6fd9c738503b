// The dashboard updates itself when what this page shows changes (the command line, a
// server, another tab; the audit trails only for the activity page): it asks /changes
// every two seconds and reloads. While you are typing into a form, or the keyboard is on
// one of the page's controls, it only says so (a status a screen reader announces), and
// keeps what you typed and where the keyboard was.
"use strict";
(() => {
  const shown = document.querySelector('meta[name="piper-state"]').content;
  const base = document.querySelector('meta[name="piper-base"]').content;
  let typing = false;
  document.addEventListener("input", () => { typing = true; });
  const inUse = () => typing || document.querySelector(":focus-visible") !== null;
  const check = async () => {
    if (document.hidden) return;
    const asked = base + "/changes?page=" + encodeURIComponent(location.pathname);
    const answer = await fetch(asked, { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) return;
    const { state } = await answer.json();
    if (state === shown) return;
    if (inUse()) document.getElementById("stale").hidden = false;
    else location.reload();
  };
  setInterval(() => { check().catch(() => {}); }, 2000);
})();
