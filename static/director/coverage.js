// The coverage map's hands: drag a camera around the ring, nudge a focused one with the arrow
// keys, and the "Show webcams" switch.
//
// The map is rendered by the server and replaced whole by socket pushes and by the answers to
// placement posts, so every listener here is delegated from `document` and survives any swap.
// While the operator is moving something, pushes of the map are held back (a push rendered
// before the drop would snap the marker back); once everything is answered the newest map is
// fetched, so nothing stays stale.
(function () {
  "use strict";

  var MAP = "[data-coverage-map]";
  var CAM = ".coverage-cam[data-device-id]";
  var KEY_STEP = 5;
  var KEY_FINE_STEP = 1;
  var KEY_DEBOUNCE_MS = 400;
  var WEBCAM_KEY = "motionmix.showWebcams";

  var drag = null; // {cam, pointerId, start, azimuth}
  var nudges = {}; // device id -> {timer, url, azimuth}
  var inflight = 0; // placement posts not answered yet
  var queue = Promise.resolve(); // posts go out one after the other, in the order made
  var held = false; // a push of the map was held back while the operator was busy
  var failed = false; // a post was refused: the optimistic marker must go back
  var freshHtml = null; // the map the server answered the last post with
  var openDetails = {}; // <details data-details-key> open state, kept across re-renders
  var restored = null; // the map element already given back its focus and open panels
  var pendingFocus = null; // what had focus when a push replaced the map

  function normalize(degrees) {
    return ((Math.round(degrees) % 360) + 360) % 360;
  }

  function currentMap() {
    return document.querySelector(MAP);
  }

  // A distance typed but not sent yet would be wiped by a re-render.
  function editing() {
    var el = document.activeElement;
    return !!(el && el.matches && el.matches("input") && el.closest(MAP) && el.value !== el.defaultValue);
  }

  function busy() {
    return drag !== null || Object.keys(nudges).length > 0 || inflight > 0 || editing();
  }

  // Markers and fields keep their ids across re-renders, so focus can follow them.
  function focusedId() {
    var el = document.activeElement;
    return el && el.id && el.closest && el.closest(MAP) ? el.id : null;
  }

  // --- moving a marker on the page (optimistic, before the server answers) ---------------

  function show(cam, azimuth) {
    cam.setAttribute("transform", "rotate(" + azimuth + ")");
    var label = cam.querySelector(".coverage-cam-label");
    var svg = cam.ownerSVGElement;
    if (label && svg) {
      // As director/coverage_map.py draws it: at the marker, turned back upright, then above
      // it towards the front and below it elsewhere.
      var radius = parseFloat(cam.dataset.radius) || 0;
      var offset = parseFloat(svg.dataset.labelOffset) || 0;
      var above = Math.cos((azimuth * Math.PI) / 180) > parseFloat(svg.dataset.labelAboveCos);
      label.setAttribute(
        "transform",
        "translate(0 " + (-radius).toFixed(2) + ") rotate(" + -azimuth + ") translate(0 " + (above ? -offset : offset) + ")"
      );
    }
    cam.dataset.azimuth = String(azimuth);
    cam.setAttribute("aria-valuenow", String(azimuth));
    cam.setAttribute("aria-valuetext", azimuth + "°");
    var aria = cam.getAttribute("aria-label") || "";
    cam.setAttribute("aria-label", aria.replace(/at \d+°/, "at " + azimuth + "°"));
  }

  function azimuthAt(svg, clientX, clientY) {
    var ctm = svg && svg.getScreenCTM();
    if (!ctm) return null;
    var p = new DOMPoint(clientX, clientY).matrixTransform(ctm.inverse());
    if (Math.abs(p.x) < 1e-6 && Math.abs(p.y) < 1e-6) return null;
    // The subject is at 0,0; azimuth 0 points up (-y) and grows clockwise on screen.
    return normalize((Math.atan2(p.x, -p.y) * 180) / Math.PI);
  }

  // --- talking to the server ---------------------------------------------------------------

  function csrfToken() {
    try {
      var headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
      if (headers["X-CSRFToken"]) return headers["X-CSRFToken"];
    } catch (e) {
      /* fall through to the cookie */
    }
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function toast(level, message) {
    document.dispatchEvent(new CustomEvent("toast", { detail: { level: level, message: message } }));
  }

  // The views explain refusals through HX-Trigger, as they do for htmx requests.
  function announce(header) {
    if (!header) return;
    var events;
    try {
      events = JSON.parse(header);
    } catch (e) {
      events = {};
      events[header] = null;
    }
    Object.keys(events).forEach(function (name) {
      document.dispatchEvent(new CustomEvent(name, { detail: events[name] }));
    });
  }

  function send(url, values) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true" },
      body: new URLSearchParams(values),
    }).then(
      function (response) {
        var trigger = response.headers.get("HX-Trigger");
        announce(trigger);
        if (!response.ok) {
          if (!trigger) toast("error", "The server refused that (" + response.status + "). The camera was not moved.");
          throw new Error("refused");
        }
        return response.text();
      },
      function (error) {
        toast("error", "The server cannot be reached. The camera was not moved; try again.");
        throw error;
      }
    );
  }

  function place(url, values) {
    inflight++;
    queue = queue
      .then(function () {
        return send(url, values);
      })
      .then(
        function (html) {
          freshHtml = html;
        },
        function () {
          freshHtml = null;
          failed = true;
        }
      )
      .then(function () {
        inflight--;
        settle();
      });
  }

  function swapMap(html) {
    var map = currentMap();
    if (!map) return;
    // htmx hands focus back to the element with the same id, and processes the new content.
    htmx.swap(map, html, { swapStyle: "outerHTML" });
    restore();
  }

  function refresh() {
    var map = currentMap();
    var url = map && map.dataset.refreshUrl;
    if (!url) return;
    fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        if (busy()) {
          held = true; // the operator started moving again: the next settle fetches anew
          return;
        }
        swapMap(html);
      })
      .catch(function () {
        /* the socket's resync brings the map back when the server returns */
      });
  }

  // Once nothing is moving or in flight, show the server's truth.
  function settle() {
    if (busy()) return;
    if (held || failed) {
      // A push was held back (it may carry other operators' changes), or a post was refused:
      // the newest map comes from the server, not from an answer we kept.
      held = failed = false;
      freshHtml = null;
      refresh();
    } else if (freshHtml !== null) {
      var html = freshHtml;
      freshHtml = null;
      swapMap(html);
    }
  }

  // --- pointer drag ------------------------------------------------------------------------

  document.addEventListener("pointerdown", function (evt) {
    if (drag || evt.button !== 0 || !evt.target.closest) return;
    var cam = evt.target.closest(CAM);
    if (!cam) return;
    evt.preventDefault(); // no text selection, no native drag, no scrolling on touch
    cam.focus({ preventScroll: true });
    cam.setPointerCapture(evt.pointerId);
    var start = parseFloat(cam.dataset.azimuth) || 0;
    drag = { cam: cam, pointerId: evt.pointerId, start: start, azimuth: start };
    cam.classList.add("is-dragging");
  });

  document.addEventListener("pointermove", function (evt) {
    if (!drag || evt.pointerId !== drag.pointerId) return;
    var azimuth = azimuthAt(drag.cam.ownerSVGElement, evt.clientX, evt.clientY);
    if (azimuth === null || azimuth === drag.azimuth) return;
    drag.azimuth = azimuth;
    show(drag.cam, azimuth);
  });

  function endDrag(commit) {
    var done = drag;
    drag = null;
    done.cam.classList.remove("is-dragging");
    if (done.cam.hasPointerCapture(done.pointerId)) done.cam.releasePointerCapture(done.pointerId);
    if (commit && done.azimuth !== done.start) {
      place(done.cam.dataset.placeUrl, { azimuth_deg: done.azimuth });
    } else {
      if (!commit) show(done.cam, done.start);
      settle();
    }
  }

  document.addEventListener("pointerup", function (evt) {
    if (drag && evt.pointerId === drag.pointerId) endDrag(true);
  });

  document.addEventListener("pointercancel", function (evt) {
    if (drag && evt.pointerId === drag.pointerId) endDrag(false);
  });

  // --- keyboard ----------------------------------------------------------------------------

  document.addEventListener("keydown", function (evt) {
    if (drag && evt.key === "Escape") {
      evt.preventDefault();
      endDrag(false);
      return;
    }
    if (!evt.target.closest || evt.altKey || evt.ctrlKey || evt.metaKey) return;
    var cam = evt.target.closest(CAM);
    if (!cam || drag) return;
    var step = evt.shiftKey ? KEY_FINE_STEP : KEY_STEP;
    // As on any slider: right and up increase, here clockwise seen from above.
    var delta = { ArrowRight: step, ArrowUp: step, ArrowLeft: -step, ArrowDown: -step }[evt.key];
    if (delta === undefined) return;
    evt.preventDefault();
    var azimuth = normalize((parseFloat(cam.dataset.azimuth) || 0) + delta);
    show(cam, azimuth);
    var id = cam.dataset.deviceId;
    var nudge = nudges[id] || (nudges[id] = {});
    clearTimeout(nudge.timer);
    nudge.url = cam.dataset.placeUrl;
    nudge.azimuth = azimuth;
    // Held keys repeat fast; the server hears only where the camera came to rest.
    nudge.timer = setTimeout(function () {
      delete nudges[id];
      place(nudge.url, { azimuth_deg: nudge.azimuth });
    }, KEY_DEBOUNCE_MS);
  });

  // Leaving a field with an unsent value lets held pushes through (the value is dropped).
  document.addEventListener("focusout", function (evt) {
    if (evt.target.matches && evt.target.matches("input") && evt.target.closest(MAP)) {
      setTimeout(settle, 0);
    }
  });

  // --- pushes: hold them while busy, give back focus and open panels after -----------------

  document.addEventListener("htmx:oobBeforeSwap", function (evt) {
    var target = evt.detail.target;
    if (!target || !target.matches || !target.matches(MAP)) return;
    if (busy()) {
      evt.detail.shouldSwap = false;
      held = true;
      return;
    }
    pendingFocus = focusedId();
    // The open state as it is now: a click on a summary opens it at once, but its "toggle"
    // event comes a task later, after this swap would have closed the panel again.
    target.querySelectorAll("details[data-details-key]").forEach(function (details) {
      openDetails[details.dataset.detailsKey] = details.open;
    });
  });

  function restore() {
    var map = currentMap();
    if (!map || map === restored) return;
    restored = map;
    map.querySelectorAll("details[data-details-key]").forEach(function (details) {
      if (openDetails[details.dataset.detailsKey]) details.open = true;
    });
    if (pendingFocus) {
      var el = document.getElementById(pendingFocus);
      var lost = !document.activeElement || document.activeElement === document.body;
      if (el && lost) el.focus({ preventScroll: true });
      pendingFocus = null;
    }
  }

  document.addEventListener(
    "toggle",
    function (evt) {
      var details = evt.target;
      if (details.dataset && details.dataset.detailsKey && details.closest(MAP)) {
        openDetails[details.dataset.detailsKey] = details.open;
      }
    },
    true // toggle does not bubble
  );

  ["htmx:oobAfterSwap", "htmx:afterSwap", "htmx:wsAfterMessage"].forEach(function (name) {
    document.addEventListener(name, function () {
      restore();
      countWebcams();
    });
  });

  // --- "Show webcams" ----------------------------------------------------------------------
  // Webcams are not photoshoot cameras: hidden by default from the cards and the map. The
  // switch sets an attribute on the page's scope element, which pushes never replace, and CSS
  // hides [data-kind=webcam] inside it, so swapped-in cards and markers follow the switch.

  function webcamsShown() {
    try {
      return window.localStorage.getItem(WEBCAM_KEY) === "1";
    } catch (e) {
      return false;
    }
  }

  function rememberWebcams(shown) {
    try {
      window.localStorage.setItem(WEBCAM_KEY, shown ? "1" : "0");
    } catch (e) {
      /* private mode: the switch still works for this page */
    }
  }

  function countWebcams() {
    var ids = new Set();
    document.querySelectorAll('[data-kind="webcam"][data-device-id]').forEach(function (el) {
      ids.add(el.dataset.deviceId);
    });
    var shown = document.querySelector("[data-webcam-scope][data-show-webcams]") !== null;
    document.querySelectorAll("[data-webcam-count]").forEach(function (el) {
      el.textContent = ids.size === 0 ? "" : "(" + ids.size + (shown ? ")" : " hidden)");
    });
  }

  function applyWebcams(shown) {
    document.querySelectorAll("[data-webcam-scope]").forEach(function (scope) {
      if (shown) scope.setAttribute("data-show-webcams", "");
      else scope.removeAttribute("data-show-webcams");
    });
    document.querySelectorAll("[data-webcam-toggle]").forEach(function (input) {
      input.checked = shown;
    });
    countWebcams();
  }

  document.addEventListener("change", function (evt) {
    if (!evt.target.matches || !evt.target.matches("[data-webcam-toggle]")) return;
    rememberWebcams(evt.target.checked);
    applyWebcams(evt.target.checked);
  });

  applyWebcams(webcamsShown());
})();
