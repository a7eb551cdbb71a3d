// The Live Director's page glue: socket state, toasts, relative times.
// Everything live arrives as server-rendered htmx out-of-band fragments; this file only shows
// the socket's state, reconnects after any drop, and formats times.
(function () {
  "use strict";

  var AUTO_RECONNECT = [1006, 1011, 1012, 1013]; // the ws extension retries these itself
  var LOGIN_REQUIRED = 4401;
  var retries = 0;
  var everOpened = false;

  function setState(state, text) {
    var el = document.getElementById("live-status");
    document.body.dataset.socket = state;
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  document.addEventListener("htmx:wsConnecting", function () {
    if (everOpened) setState("reconnecting", "Reconnecting…");
    else setState("connecting", "Connecting…");
  });

  document.addEventListener("htmx:wsOpen", function () {
    // The server sends every live partial on connect, so a page back from a drop is fresh.
    everOpened = true;
    retries = 0;
    setState("live", "Live");
  });

  document.addEventListener("htmx:wsClose", function (evt) {
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 0;
    if (code === LOGIN_REQUIRED) {
      setState("reconnecting", "Signed out");
      window.location.reload(); // the server answers with the login page
      return;
    }
    setState("reconnecting", "Reconnecting…");
    if (AUTO_RECONNECT.indexOf(code) === -1 && evt.detail && evt.detail.socketWrapper) {
      // A clean close (server restart, proxy timeout) is not retried by the extension.
      var delay = Math.min(10000, 500 * Math.pow(2, retries++));
      setTimeout(function () { evt.detail.socketWrapper.reconnect(); }, delay);
    }
  });

  // Toasts: views send {"toast": {"level": "...", "message": "..."}} through HX-Trigger.
  document.addEventListener("toast", function (evt) {
    var box = document.getElementById("toasts");
    if (!box || !evt.detail) return;
    var item = document.createElement("div");
    item.className = "toast toast-" + (evt.detail.level || "info");
    item.setAttribute("role", evt.detail.level === "error" ? "alert" : "status");
    item.textContent = evt.detail.message || "";
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 6000);
  });

  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Trigger")) return; // the view explained itself
    document.dispatchEvent(new CustomEvent("toast", {
      detail: { level: "error", message: "The server refused that (" + (xhr ? xhr.status : "?") + "). Nothing was changed." }
    }));
  });

  document.addEventListener("htmx:sendError", function () {
    document.dispatchEvent(new CustomEvent("toast", {
      detail: { level: "error", message: "The server cannot be reached. Nothing was changed; try again." }
    }));
  });

  function formatAgo(seconds) {
    if (seconds < 2) return "just now";
    if (seconds < 60) return Math.floor(seconds) + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    return Math.floor(seconds / 3600) + " h ago";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time.ago").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (!isNaN(t)) el.textContent = formatAgo(Math.max(0, (now - t) / 1000));
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("htmx:oobAfterSwap", tick);
  document.addEventListener("DOMContentLoaded", tick);
})();
