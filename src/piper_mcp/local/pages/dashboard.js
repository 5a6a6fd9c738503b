// The dashboard updates itself when what this page shows changes (the command line, a
// server, another tab; the audit trails only for the activity page): it asks /changes
// every two seconds and reloads, putting the keyboard's focus and the scroll position
// back where they were. While you are typing into a form it only says so (a status a
// screen reader announces), and keeps what you typed.
"use strict";
(() => {
  const shown = document.querySelector('meta[name="piper-state"]').content;
  const base = document.querySelector('meta[name="piper-base"]').content;
  const KEPT = "piper-place";
  let typing = false;
  document.addEventListener("input", () => { typing = true; });

  // A control is found again by what it is and says: ids, where it has one; else its
  // tag, name, value, label and text (a "Remove <name>" button, say).
  const describe = (element) => element.id ? "#" + element.id : [
    element.tagName, element.getAttribute("name"), element.getAttribute("value"),
    element.getAttribute("aria-label"), element.textContent.trim(),
  ].join("|");
  const find = (described) => described.startsWith("#")
    ? document.getElementById(described.slice(1))
    : [...document.querySelectorAll(described.split("|")[0])]
        .find((element) => describe(element) === described);

  const keepPlace = () => {
    const focused = document.activeElement;
    sessionStorage.setItem(KEPT, JSON.stringify({
      page: location.pathname + location.search,
      focused: focused && focused !== document.body ? describe(focused) : null,
      scrolled: window.scrollY,
    }));
  };
  const restorePlace = () => {
    const kept = JSON.parse(sessionStorage.getItem(KEPT) || "null");
    sessionStorage.removeItem(KEPT);
    if (!kept || kept.page !== location.pathname + location.search) return;
    const focused = kept.focused && find(kept.focused);
    if (focused) focused.focus({ preventScroll: true });
    window.scrollTo(0, kept.scrolled);
  };
  restorePlace();

  const check = async () => {
    if (document.hidden) return;
    const asked = base + "/changes?page=" + encodeURIComponent(location.pathname);
    const answer = await fetch(asked, { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) return;
    const { state } = await answer.json();
    if (state === shown) return;
    if (typing) {
      document.getElementById("stale").hidden = false;
      return;
    }
    keepPlace();
    location.reload();
  };
  setInterval(() => { check().catch(() => {}); }, 2000);
})();
