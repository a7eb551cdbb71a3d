// The hero feed on the Live Director: WHEP playback of the session's hero.
//
// The server keeps one continuous track per session and switches cameras inside it, so this
// module connects once and stays connected; it reconnects with a backoff when the connection
// fails. The facts about the hero (name, flip, tally, publishing) come from the #hero-meta
// element, which the session socket replaces on every change; the player itself is preserved.
(() => {
  "use strict";

  const RETRY_MAX_S = 10;
  const DISCONNECTED_GRACE_MS = 3000;
  const GATHER_TIMEOUT_MS = 3000;
  const STALL_MS = 2000;

  let pc = null;
  let resource = null;
  let attempt = 0;
  let retryTimer = null;
  let graceTimer = null;
  let running = false;
  let frames = 0;
  let lastFrameAt = 0;
  let windowFrames = 0;

  const player = () => document.getElementById("hero-player");
  const meta = () => document.getElementById("hero-meta");

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (match) return decodeURIComponent(match[1]);
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function facts() {
    const m = meta();
    const d = m ? m.dataset : {};
    return {
      status: d.sessionStatus || "draft",
      hero: d.heroDevice || "",
      name: d.heroName || "",
      flipH: d.flipH === "1",
      flipV: d.flipV === "1",
      tally: d.tally || "off",
      publishing: d.publishing === "1",
    };
  }

  function setState(state, text) {
    const el = player();
    if (!el) return;
    el.dataset.state = state;
    const slate = el.querySelector("[data-hero-slate]");
    const label = el.querySelector("[data-hero-slate-text]");
    if (slate) slate.hidden = state === "playing";
    if (label && text) label.textContent = text;
  }

  // What the operator should see when there is no picture, from what the server says.
  function idleText(f) {
    if (f.status === "draft") return "The hero goes live when the session starts.";
    if (f.status === "ended") return "The session has ended.";
    if (!f.hero) return "No camera is on air.";
    if (!f.publishing) return `No hero publishing: ${f.name} sends no video.`;
    return "Waiting for the first frame…";
  }

  function applyFacts() {
    const el = player();
    if (!el) return;
    const f = facts();
    const video = el.querySelector("video");
    video.classList.toggle("flip-h", f.flipH);
    video.classList.toggle("flip-v", f.flipV);
    el.classList.toggle("tally-live", f.tally === "live");
    el.classList.toggle("tally-preview", f.tally === "preview");
    const name = el.querySelector("[data-hero-overlay-name]");
    if (name) name.textContent = f.name;
    el.dataset.hero = f.hero;
    if (f.status === "live" && !running) start();
    if (f.status !== "live" && running) stop(idleText(f));
    if (el.dataset.state !== "playing" && el.dataset.state !== "error" && running) {
      setState(el.dataset.state || "connecting", idleText(f));
    }
    if (!running) setState("idle", idleText(f));
  }

  function countFrames(video) {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const onFrame = () => {
      frames += 1;
      windowFrames += 1;
      lastFrameAt = performance.now();
      const el = player();
      if (el) el.dataset.frames = String(frames);
      if (running) video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }

  // Once a second: the live frame rate, and whether the picture stalled.
  setInterval(() => {
    const el = player();
    if (!el) return;
    const fps = el.querySelector("[data-hero-fps]");
    if (fps) fps.textContent = running && windowFrames ? `${windowFrames} fps` : "";
    el.dataset.fps = String(windowFrames);
    windowFrames = 0;
    if (!running) return;
    const stalled = performance.now() - lastFrameAt > STALL_MS;
    if (el.dataset.state === "playing" && stalled) setState("waiting", idleText(facts()));
    else if (el.dataset.state === "waiting" && !stalled) setState("playing");
  }, 1000);

  function waitForCandidates(peer) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (peer.iceGatheringState === "complete") {
          peer.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      peer.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, GATHER_TIMEOUT_MS);
    });
  }

  async function connect() {
    const el = player();
    if (!el) return;
    const video = el.querySelector("video");
    const peer = new RTCPeerConnection({ iceServers: JSON.parse(el.dataset.iceServers || "[]") });
    pc = peer;
    peer.addTransceiver("video", { direction: "recvonly" });
    peer.ontrack = (event) => {
      video.srcObject = event.streams[0] || new MediaStream([event.track]);
      video.play().catch(() => {});
    };
    peer.onconnectionstatechange = () => {
      if (peer !== pc) return;
      const state = peer.connectionState;
      if (state === "failed" || state === "closed") reconnect(`The connection ${state}.`);
      else if (state === "disconnected") {
        clearTimeout(graceTimer);
        graceTimer = setTimeout(() => {
          if (peer === pc && peer.connectionState === "disconnected") reconnect("The connection dropped.");
        }, DISCONNECTED_GRACE_MS);
      } else if (state === "connected") attempt = 0;
    };
    await peer.setLocalDescription(await peer.createOffer());
    await waitForCandidates(peer);
    const response = await fetch(el.dataset.whepUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/sdp", "X-CSRFToken": csrfToken() },
      body: peer.localDescription.sdp,
    });
    if (response.status !== 201) {
      let detail = `HTTP ${response.status}`;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    resource = response.headers.get("Location");
    await peer.setRemoteDescription({ type: "answer", sdp: await response.text() });
    countFrames(video);
  }

  function start() {
    running = true;
    clearTimeout(retryTimer);
    setState("connecting", "Connecting to the hero feed…");
    connect()
      .then(() => {
        const el = player();
        if (el) el.dataset.connects = String(Number(el.dataset.connects || 0) + 1);
      })
      .catch((error) => reconnect(error.message));
  }

  function release() {
    if (resource) {
      fetch(resource, {
        method: "DELETE",
        credentials: "same-origin",
        keepalive: true,
        headers: { "X-CSRFToken": csrfToken() },
      }).catch(() => {});
      resource = null;
    }
    if (pc) {
      const old = pc;
      pc = null;
      old.close();
    }
  }

  function reconnect(reason) {
    release();
    if (!running) return;
    const delay = Math.min(RETRY_MAX_S, 2 ** attempt);
    attempt += 1;
    setState("error", `Hero feed unavailable: ${reason} Retrying in ${delay} s.`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => {
      if (running) start();
    }, delay * 1000);
  }

  function stop(text) {
    running = false;
    clearTimeout(retryTimer);
    release();
    setState("idle", text);
  }

  function init() {
    const el = player();
    if (!el) return;
    const video = el.querySelector("video");
    video.addEventListener("playing", () => {
      lastFrameAt = performance.now();
      setState("playing");
    });
    applyFacts();
  }

  document.addEventListener("DOMContentLoaded", init);
  // The socket replaces #hero-meta (and the rest of the hero area) on every hero change.
  document.body.addEventListener("htmx:oobAfterSwap", applyFacts);
  document.body.addEventListener("htmx:afterSettle", applyFacts);
  window.addEventListener("pagehide", () => {
    running = false;
    release();
  });
})();
