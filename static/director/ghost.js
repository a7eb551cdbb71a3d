// The session page's glue for Ghost: the banner's countdown, the keys (A accepts, V vetoes
// and then 1–4 pick the reason, Esc keeps the proposal), the highlight of the proposal's
// target on the cards and the map, and the session clock. The server renders everything;
// this file only times and clicks.
(function () {
  "use strict";

  var countdown = null; // {id, deadline, total, autopilot}
  var clock = null; // {base, since, running}
  var choosingId = null; // the proposal whose veto reasons are open

  function banner() { return document.getElementById("ghost-banner"); }

  function typing(evt) {
    var el = evt.target;
    if (!el || !el.tagName) return false;
    var tag = el.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || el.isContentEditable;
  }

  function reasons() {
    var b = banner();
    return b ? b.querySelector("[data-ghost-reasons]") : null;
  }

  function showReasons(show) {
    var box = reasons();
    if (!box) return;
    box.hidden = !show;
    banner().classList.toggle("choosing", show);
    choosingId = show ? banner().dataset.proposalId : null;
    if (show) {
      var first = box.querySelector("[data-ghost-reason]");
      if (first) first.focus({ preventScroll: true });
    }
  }

  // Highlight the proposal's target camera(s) on the cards and on the coverage map. Pushed
  // fragments replace those elements, so this runs again after every swap.
  function highlight() {
    var b = banner();
    var ids = b && b.dataset.targets ? b.dataset.targets.split(" ") : [];
    document.querySelectorAll(".ghost-target").forEach(function (el) {
      if (ids.indexOf(el.dataset.deviceId) === -1) el.classList.remove("ghost-target");
    });
    ids.forEach(function (id) {
      if (!id) return;
      document.querySelectorAll('.device-card[data-device-id="' + id + '"], .coverage-cam[data-device-id="' + id + '"]')
        .forEach(function (el) { el.classList.add("ghost-target"); });
    });
  }

  function armCountdown() {
    var b = banner();
    if (!b || !b.dataset.proposalId) { countdown = null; return; }
    if (countdown && countdown.id === b.dataset.proposalId) {
      countdown.autopilot = b.classList.contains("autopilot");
      return; // the same proposal re-rendered: keep its deadline
    }
    // Remaining time as the server saw it when rendering, counted on this machine's
    // monotonic clock: no dependence on the two clocks agreeing.
    countdown = {
      id: b.dataset.proposalId,
      deadline: performance.now() + Number(b.dataset.remainingMs || 0),
      total: Math.max(1, Number(b.dataset.totalMs || 1)),
      autopilot: b.classList.contains("autopilot"),
    };
  }

  function armClock() {
    var el = document.querySelector("[data-testid=session-clock]");
    if (!el) { clock = null; return; }
    clock = { base: Number(el.dataset.elapsedS || 0), since: performance.now(), running: el.hasAttribute("data-running") };
  }

  function formatClock(seconds) {
    var s = Math.floor(seconds);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var mm = (m < 10 ? "0" : "") + m, ss = (r < 10 ? "0" : "") + r;
    return (h ? h + ":" + mm : mm) + ":" + ss;
  }

  function frame() {
    var b = banner();
    if (countdown && b && b.dataset.proposalId === countdown.id) {
      var left = Math.max(0, countdown.deadline - performance.now());
      var bar = b.querySelector("[data-ghost-bar]");
      if (bar) bar.style.width = (100 * left / countdown.total).toFixed(2) + "%";
      var text = b.querySelector("[data-ghost-clock]");
      if (text) {
        var s = Math.ceil(left / 1000);
        text.textContent = left <= 0 ? (countdown.autopilot ? "carrying it out…" : "expiring…")
          : (countdown.autopilot ? "auto in " + s + " s" : "expires in " + s + " s");
      }
    }
    var el = document.querySelector("[data-testid=session-clock]");
    if (clock && el) {
      var elapsed = clock.base + (clock.running ? (performance.now() - clock.since) / 1000 : 0);
      el.textContent = formatClock(elapsed);
    }
    window.requestAnimationFrame(frame);
  }

  function refresh() {
    // A push that re-renders the same proposal keeps the reasons open.
    var b = banner();
    if (b && choosingId && b.dataset.proposalId === choosingId && !b.classList.contains("choosing")) {
      showReasons(true);
    }
    armCountdown();
    armClock();
    highlight();
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey || typing(evt)) return;
    var b = banner();
    if (!b || !b.dataset.proposalId) return;
    var key = evt.key.toLowerCase();
    var choosing = b.classList.contains("choosing");
    if (key === "a" && !choosing) {
      evt.preventDefault();
      b.querySelector("[data-ghost-key=a]").click();
    } else if (key === "v") {
      evt.preventDefault();
      showReasons(!choosing);
    } else if (choosing && key >= "1" && key <= "9") {
      var pick = b.querySelector('[data-ghost-reason="' + key + '"]');
      if (pick) { evt.preventDefault(); pick.click(); }
    } else if (choosing && key === "escape") {
      showReasons(false);
    }
  });

  document.addEventListener("click", function (evt) {
    var veto = evt.target.closest ? evt.target.closest("[data-ghost-veto]") : null;
    if (veto) showReasons(!banner().classList.contains("choosing"));
  });

  document.addEventListener("htmx:afterSettle", refresh);
  document.addEventListener("htmx:oobAfterSwap", refresh);
  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    window.requestAnimationFrame(frame);
  });
})();
