// The troupe dashboard's only script: re-fetches the page every few seconds (the body's
// data-refresh, 0 for never) and swaps in the new <main>. The new content is the server's own
// escaped HTML, parsed by DOMParser (whose scripts never run) and moved node by node: no data
// is ever written as markup from here. A session that expired sends the browser to /login.
(function () {
  "use strict";
  const seconds = Number(document.body.dataset.refresh || "0");
  const toggle = document.getElementById("auto-refresh");
  const key = "troupe-auto-refresh";
  if (toggle) {
    toggle.checked = window.localStorage.getItem(key) !== "off";
    toggle.addEventListener("change", function () {
      window.localStorage.setItem(key, toggle.checked ? "on" : "off");
    });
  }
  if (!(seconds > 0)) {
    return;
  }
  let busy = false;
  async function refresh() {
    if (busy || document.hidden || (toggle && !toggle.checked)) {
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "troupe-dashboard" },
      });
      const url = new URL(response.url);
      if (url.pathname === "/login") {
        window.location.assign("/login");
        return;
      }
      if (!response.ok) {
        return;
      }
      const text = await response.text();
      const fresh = new DOMParser().parseFromString(text, "text/html").getElementById("content");
      const current = document.getElementById("content");
      if (!fresh || !current) {
        return;
      }
      const log = current.querySelector(".log");
      const atBottom = log && log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      current.replaceChildren(...Array.from(fresh.childNodes).map(function (node) {
        return document.adoptNode(node);
      }));
      const newLog = current.querySelector(".log");
      if (newLog && (atBottom || !log)) {
        newLog.scrollTop = newLog.scrollHeight;
      }
    } catch (err) {
      // The head may be restarting: try again at the next tick.
    } finally {
      busy = false;
    }
  }
  const first = document.querySelector(".log");
  if (first) {
    first.scrollTop = first.scrollHeight;
  }
  window.setInterval(refresh, seconds * 1000);
})();
