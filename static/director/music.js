// The session page's music player: play, pause and seek the session's track, and put every
// play, pause, seek and end on the record (POST .../music/cue with the track position; the
// server stamps its own time). Keys: P plays or pauses, J and L go 5 s back or on. The server
// renders the panel; the <audio> element is kept across its re-renders (hx-preserve).
(function () {
  "use strict";

  var SEEK_STEP_S = 5;
  var beats = [];
  var nextBeat = 0;
  var remote = null; // {state, position, since}: the last cue, as the server rendered it

  function panel() { return document.getElementById("music-panel"); }
  function audio() { var p = panel(); return p ? p.querySelector("audio[data-testid=music-audio]") : null; }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function toast(level, message) {
    document.dispatchEvent(new CustomEvent("toast", { detail: { level: level, message: message } }));
  }

  function format(seconds) {
    seconds = Math.max(0, seconds || 0);
    var m = Math.floor(seconds / 60), s = seconds - 60 * m;
    return m + ":" + (s < 10 ? "0" : "") + s.toFixed(1);
  }

  function cue(action, position) {
    var p = panel();
    if (!p || !p.dataset.trackId) return;
    var duration = Number(p.dataset.durationS || 0);
    var body = {
      track_id: p.dataset.trackId,
      action: action,
      position_s: Math.min(Math.max(0, position), duration),
      client_time: Date.now() / 1000,
    };
    fetch(p.dataset.cueUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
      credentials: "same-origin",
    }).then(function (response) {
      if (response.ok) return;
      return response.json().then(function (err) {
        toast("error", "The " + action + " was not recorded: " + (err.detail || response.status));
      }, function () {
        toast("error", "The " + action + " was not recorded (" + response.status + ").");
      });
    }, function () {
      toast("error", "The server cannot be reached: the " + action + " was not recorded.");
    });
  }

  function findNextBeat(t) {
    var lo = 0, hi = beats.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (beats[mid] <= t) lo = mid + 1; else hi = mid; }
    return lo;
  }

  function show() {
    var p = panel(), a = audio();
    if (!p || !a) return;
    var toggle = p.querySelector("[data-music-toggle]");
    if (toggle) { toggle.textContent = a.paused ? "Play" : "Pause"; toggle.setAttribute("aria-pressed", a.paused ? "false" : "true"); }
    var pos = p.querySelector("[data-music-position]");
    if (pos) pos.textContent = format(a.currentTime);
    var seek = p.querySelector("[data-music-seek]");
    if (seek && !seek.matches(":active")) seek.value = String(a.currentTime);
    p.classList.toggle("playing", !a.paused);
  }

  function bind() {
    var a = audio();
    if (!a || a.dataset.bound) return;
    a.dataset.bound = "1";
    a.addEventListener("play", function () { cue("play", a.currentTime); nextBeat = findNextBeat(a.currentTime); show(); });
    a.addEventListener("pause", function () { if (!a.ended) cue("pause", a.currentTime); show(); });
    a.addEventListener("seeked", function () { cue("seek", a.currentTime); nextBeat = findNextBeat(a.currentTime); show(); });
    a.addEventListener("ended", function () { cue("ended", Number(panel().dataset.durationS || a.currentTime)); show(); });
    a.addEventListener("timeupdate", show);
    a.addEventListener("error", function () { toast("error", "The browser cannot play this track."); });
  }

  function toggle() {
    var a = audio();
    if (!a) return;
    if (a.paused) {
      a.play().catch(function (err) { toast("error", "The track does not play: " + err.message); });
    } else {
      a.pause();
    }
  }

  function seekTo(t) {
    var a = audio(), p = panel();
    if (!a || !p) return;
    a.currentTime = Math.min(Math.max(0, t), Number(p.dataset.durationS || a.duration || 0));
  }

  function refresh() {
    bind();
    var script = document.getElementById("music-beats");
    try { beats = script ? JSON.parse(script.textContent) : []; } catch (e) { beats = []; }
    var a = audio();
    nextBeat = findNextBeat(a ? a.currentTime : 0);
    var state = document.querySelector("[data-music-state]");
    remote = state ? { state: state.dataset.musicState, position: Number(state.dataset.positionS || 0), since: performance.now() } : null;
    show();
  }

  function frame() {
    var a = audio(), p = panel();
    if (a && p && !a.paused && beats.length) {
      var flashed = false;
      while (nextBeat < beats.length && beats[nextBeat] <= a.currentTime) { nextBeat++; flashed = true; }
      if (flashed) {
        var dot = p.querySelector("[data-music-beat]");
        if (dot) { dot.classList.remove("on"); void dot.offsetWidth; dot.classList.add("on"); }
      }
    }
    // Another operator's playback: where it is now, counted from when the server rendered it.
    if (remote && remote.state === "playing") {
      var el = document.querySelector("[data-music-remote-position]");
      var duration = p ? Number(p.dataset.durationS || 0) : 0;
      if (el) el.textContent = Math.min(duration, remote.position + (performance.now() - remote.since) / 1000).toFixed(1);
    }
    window.requestAnimationFrame(frame);
  }

  function typing(evt) {
    var el = evt.target;
    if (!el || !el.tagName) return false;
    var tag = el.tagName.toLowerCase();
    return (tag === "input" && el.type !== "range") || tag === "textarea" || tag === "select" || el.isContentEditable;
  }

  document.addEventListener("click", function (evt) {
    if (evt.target.closest && evt.target.closest("[data-music-toggle]")) toggle();
  });

  document.addEventListener("input", function (evt) {
    // While dragging, only the time shown follows; the seek happens on release.
    if (!evt.target.matches || !evt.target.matches("[data-music-seek]")) return;
    var pos = panel() && panel().querySelector("[data-music-position]");
    if (pos) pos.textContent = format(Number(evt.target.value));
  });

  document.addEventListener("change", function (evt) {
    if (evt.target.matches && evt.target.matches("[data-music-seek]")) seekTo(Number(evt.target.value));
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.ctrlKey || evt.metaKey || evt.altKey || typing(evt)) return;
    var a = audio();
    if (!a) return;
    var key = evt.key.toLowerCase();
    if (key === "p") { evt.preventDefault(); toggle(); }
    else if (key === "j") { evt.preventDefault(); seekTo(a.currentTime - SEEK_STEP_S); }
    else if (key === "l") { evt.preventDefault(); seekTo(a.currentTime + SEEK_STEP_S); }
  });

  document.addEventListener("htmx:afterSettle", refresh);
  document.addEventListener("htmx:oobAfterSwap", refresh);
  document.addEventListener("DOMContentLoaded", function () {
    refresh();
    window.requestAnimationFrame(frame);
  });
})();
