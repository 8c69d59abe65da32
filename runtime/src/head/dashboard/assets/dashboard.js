// The troupe dashboard's only script: re-fetches the page and swaps in the new <main>, then
// waits as long as the fetched page's data-refresh says (seconds; 0 stops, as a finished job's
// page does) before the next fetch. The new content is the server's own escaped HTML, parsed by
// DOMParser (whose scripts never run) and moved node by node: no data is ever written as
// markup from here. A session that expired sends the browser to /login. While auto-refresh is
// unticked or the tab is hidden, nothing is fetched.
(function () {
  "use strict";
  const toggle = document.getElementById("auto-refresh");
  const key = "troupe-auto-refresh";
  if (toggle) {
    toggle.checked = window.localStorage.getItem(key) !== "off";
    toggle.addEventListener("change", function () {
      window.localStorage.setItem(key, toggle.checked ? "on" : "off");
    });
  }
  function secondsOf(body) {
    const seconds = Number((body && body.dataset.refresh) || "0");
    return seconds > 0 ? seconds : 0;
  }
  let seconds = secondsOf(document.body);
  function schedule() {
    if (seconds > 0) {
      window.setTimeout(refresh, seconds * 1000);
    }
  }
  async function refresh() {
    if (document.hidden || (toggle && !toggle.checked)) {
      schedule();
      return;
    }
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "troupe-dashboard" },
      });
      const url = new URL(response.url);
      if (url.pathname === "/login") {
        window.location.assign("/login");
        seconds = 0;
        return;
      }
      if (!response.ok) {
        // An error answer: try again later at the same pace.
        return;
      }
      const text = await response.text();
      const page = new DOMParser().parseFromString(text, "text/html");
      const fresh = page.getElementById("content");
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
      seconds = secondsOf(page.body);
      document.body.dataset.refresh = String(seconds);
    } catch (err) {
      // The head may be restarting: try again later.
    } finally {
      schedule();
    }
  }
  const first = document.querySelector(".log");
  if (first) {
    first.scrollTop = first.scrollHeight;
  }
  schedule();
})();
