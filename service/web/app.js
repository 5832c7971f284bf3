// facerec web page: plain JS, no build step. Talks to the REST API under /v1 with the X-API-Key header.
"use strict";

const $ = (sel) => document.querySelector(sel);
const photos = {};            // slot name -> [{blob, name, img}]
const loading = {};           // slot name -> promise of the previews being decoded
let cameraSlot = null;

// ---- API ----------------------------------------------------------------------------------------------------
function apiKey() { return $("#api-key").value.trim(); }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const retryAfterMs = (res) => (Number(res.headers.get("Retry-After")) || 1) * 1000;

// A GET the server refuses with 429 (the page's own burst, e.g. a long list's thumbnails) is retried after the
// wait it asks for, a few times; other requests are not repeated.
async function fetchRetrying(path, options) {
  for (let tries = options.method === "GET" ? 5 : 0; ; tries--) {
    const res = await fetch(path, options);
    if (res.status !== 429 || tries <= 0) return res;
    await sleep(retryAfterMs(res));
  }
}

// The answer's JSON (null for 204); with `raw`, a successful answer's Response itself (a file to read as a Blob).
// A refusal throws an Error with the API's message, its code, the HTTP status and Retry-After's seconds.
async function api(method, path, body, { raw = false } = {}) {
  const headers = {};
  if (apiKey()) headers["X-API-Key"] = apiKey();
  if (body && !(body instanceof FormData)) { headers["Content-Type"] = "application/json"; body = JSON.stringify(body); }
  const res = await fetchRetrying(path, { method, headers, body });
  if (raw && res.ok) return res;
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = (data && data.error) || { code: "http_" + res.status, message: res.statusText };
    const retryAfter = Number(res.headers.get("Retry-After")) || 0;  // seconds; 0 when absent
    throw Object.assign(new Error(err.message), { code: err.code, status: res.status, retryAfter });
  }
  return data;
}

async function checkStatus() {
  const el = $("#status");
  try {
    const r = await fetch("/readyz");
    const body = await r.json();
    el.textContent = body.ready ? `ready · threshold ${body.threshold.toFixed(2)}` : "loading the model…";
    el.className = "status " + (body.ready ? "ready" : "");
    if (!body.ready) setTimeout(checkStatus, 2000);
  } catch (e) {
    el.textContent = "server unreachable"; el.className = "status down"; setTimeout(checkStatus, 5000);
  }
}

// ---- photos: files, webcam, drawing ----------------------------------------------------------------------------
function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("this file is not an image the browser can show"));
    img.src = URL.createObjectURL(blob);
  });
}

// The slot's photos are replaced at once (so a click right after choosing uses them); previews load after.
function setPhotos(slot, files) {
  const list = [...files].map((f) => ({ blob: f, name: f.name || "webcam.jpg", img: null }));
  photos[slot] = list;
  loading[slot] = Promise.all(list.map(async (p) => { p.img = await loadImage(p.blob).catch(() => null); }))
    .then(() => { if (photos[slot] === list) draw(slot, []); });
  return loading[slot];
}

function canvasFor(slot) { return document.querySelector(`[data-slot="${slot}"] canvas`); }

// Draw the slot's first photo with boxes: [{box:{x,y,width,height}, label, color}], box in image pixels.
async function drawWhenLoaded(slot, marks) {
  await loading[slot];
  draw(slot, marks);
}

// The direction of a text by its first letter, as dir="auto" decides it: a canvas label of a right-to-left name.
const RTL_SCRIPT = /[\p{sc=Arabic}\p{sc=Hebrew}\p{sc=Syriac}\p{sc=Thaana}\p{sc=Nko}\p{sc=Adlam}]/u;
function textDir(text) {
  const first = String(text).match(/\p{L}/u);
  return first && RTL_SCRIPT.test(first[0]) ? "rtl" : "ltr";
}

// A label (text on a box `pad` wider each side) placed at `x` on a canvas `canvasWidth` wide, in ctx's font:
// {text, x, width} of a box that stays inside the canvas. A name too long for the canvas is cut, ending in "…";
// a box past the right edge moves left. Only measures: the browser tests call it directly.
function fitLabel(ctx, text, x, canvasWidth, pad = 0) {
  const room = Math.max(0, canvasWidth - 2 * pad);
  const fits = (t) => ctx.measureText(t).width <= room;
  let shown = String(text);
  if (!fits(shown)) {
    const chars = Array.from(shown);  // code points: never half of a surrogate pair
    let lo = 0, hi = chars.length - 1;  // the longest prefix that fits with the ellipsis has lo..hi characters
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (fits(chars.slice(0, mid).join("") + "…")) lo = mid; else hi = mid - 1;
    }
    shown = chars.slice(0, lo).join("").trimEnd() + "…";
  }
  const width = Math.min(ctx.measureText(shown).width, room) + 2 * pad;
  return { text: shown, x: Math.max(0, Math.min(x, canvasWidth - width)), width };
}

// Returns where each label went ({text, x, y, width, height}, canvas pixels).
function draw(slot, marks) {
  const canvas = canvasFor(slot);
  const photo = (photos[slot] || [])[0];
  const ctx = canvas.getContext("2d");
  if (!photo || !photo.img) { canvas.classList.add("empty"); ctx.clearRect(0, 0, canvas.width, canvas.height); return []; }
  canvas.classList.remove("empty");
  const img = photo.img;
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  ctx.drawImage(img, 0, 0);
  const line = Math.max(2, Math.round(img.naturalWidth / 250));
  const pad = 4, th = Math.max(12, Math.round(img.naturalWidth / 30)), lh = th + 2 * pad;
  ctx.font = `bold ${th}px system-ui, sans-serif`;
  const labels = [];
  for (const m of marks) {
    const { x, y, width, height } = m.box;
    ctx.lineWidth = line; ctx.strokeStyle = m.color; ctx.strokeRect(x, y, width, height);
    if (m.label) {
      ctx.direction = textDir(m.label); ctx.textAlign = "left"; ctx.textBaseline = "top";
      const fit = fitLabel(ctx, m.label, x - line / 2, canvas.width, pad);
      const ty = Math.max(0, Math.min(y > lh ? y - lh : y + height, canvas.height - lh));
      ctx.fillStyle = m.color; ctx.fillRect(fit.x, ty, fit.width, lh);
      ctx.fillStyle = "#fff"; ctx.fillText(fit.text, fit.x + pad, ty + pad, fit.width - 2 * pad);
      labels.push({ text: fit.text, x: fit.x, y: ty, width: fit.width, height: lh });
    }
  }
  return labels;
}

async function openCamera(slot) {
  cameraSlot = slot;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" } });
    $("#camera-video").srcObject = stream;
    $("#camera").hidden = false;
  } catch (e) {
    show(slot === "a" || slot === "b" ? "verify" : slot, `<p class="error">The webcam is not available: ${esc(e.message)}</p>`);
  }
}

function closeCamera() {
  const video = $("#camera-video");
  if (video.srcObject) video.srcObject.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
  $("#camera").hidden = true;
}

async function snap() {
  const video = $("#camera-video");
  const c = document.createElement("canvas");
  c.width = video.videoWidth; c.height = video.videoHeight;
  c.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((r) => c.toBlob(r, "image/jpeg", 0.92));
  const slot = cameraSlot;
  closeCamera();
  const existing = slot === "enroll" ? (photos.enroll || []).map((p) => p.blob) : [];
  await setPhotos(slot, [...existing, new File([blob], "webcam.jpg", { type: "image/jpeg" })]);
}

// ---- results in plain words --------------------------------------------------------------------------------
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
// A user-supplied name (of a person, a file) inside a sentence, escaped and direction-isolated: a right-to-left
// name with digits must not reorder the words and numbers around it. An element holding only a name has dir="auto".
const bidi = (s) => `<bdi>${esc(s)}</bdi>`;
const num = (x) => Number(x).toFixed(2);
function show(panel, html) { $(`#${panel}-result`).innerHTML = html; }
function showError(panel, e) { show(panel, `<p class="error">${esc(e.message)} <span class="small">(${esc(e.code || "error")})</span></p>`); }

function need(slot, panel, what) {
  const list = photos[slot] || [];
  if (!list.length) { show(panel, `<p class="error">Choose ${what} first.</p>`); return null; }
  return list;
}

// why a face may go unnamed: the enrolment minimums the probe misses (identify's quality.reasons)
const HINTS = {
  pose: (q) => `the face is turned${q.pose ? ` (${Math.round(Math.abs(q.pose.yaw))}° to the side)` : ""}; a frontal photo is recognised more reliably`,
  face_too_small: () => "the face is small in this photo; a closer photo is recognised more reliably",
  blurry: () => "the photo is blurry",
  low_confidence: () => "the detector is unsure that this is a face",
};
function photoHint(q) {
  const said = (q ? q.reasons : []).filter((r) => HINTS[r]).map((r) => HINTS[r](q));
  return said.length ? ` <span class="small">Note: ${esc(said.join("; "))}.</span>` : "";
}

async function runIdentify() {
  const list = need("identify", "identify", "a photo"); if (!list) return;
  const form = new FormData(); form.append("image", list[0].blob, list[0].name);
  const body = await api("POST", "/v1/identify", form);
  const t = body.threshold;
  // a normalised threshold is compared with each match's score (its distance relative to the model's cohort)
  const normed = body.threshold_scale === "normalised";
  const scored = (c) => normed ? `score ${num(c.score)} (distance ${num(c.distance)})` : `distance ${num(c.distance)}`;
  drawWhenLoaded("identify", body.faces.map((f) => ({ box: f.box, label: f.match ? f.match.name : "unknown", color: f.match ? "#1a7f37" : "#b35900" })));
  if (!body.faces.length) return show("identify", `<p class="verdict unknown">No face was found in this photo.</p>`);
  const items = body.faces.map((f, i) => {
    const near = f.candidates[0];
    if (f.match) return `<li><span class="ok"><b>${bidi(f.match.name)}</b></span>: ${scored(f.match)}, within the threshold ${num(t)}, so this is a match.</li>`;
    const why = near ? `the nearest enrolled person is ${bidi(near.name)} at ${scored(near)}, above the threshold ${num(t)}` : "nobody is enrolled yet";
    return `<li><span class="unknown"><b>unknown</b></span>: ${why}.${photoHint(f.quality)}</li>`;
  });
  const fir = body.estimated_false_identification_rate;
  const firText = fir == null ? "" : ` At this threshold about ${(fir * 100).toPrecision(2)}% of strangers would be mistaken for someone.`;
  show("identify", `<p class="verdict">${body.faces.length} face${body.faces.length > 1 ? "s" : ""} found</p><ul>${items.join("")}</ul>
    <p class="small">Gallery: ${body.gallery_subjects} ${body.gallery_subjects === 1 ? "person" : "people"}. Lower ${normed ? "score" : "distance"} = more alike.${firText}</p>`);
}

async function runVerify() {
  const a = need("a", "verify", "two photos"); if (!a) return;
  const b = need("b", "verify", "two photos"); if (!b) return;
  const form = new FormData();
  form.append("image_a", a[0].blob, a[0].name); form.append("image_b", b[0].blob, b[0].name);
  const r = await api("POST", "/v1/verify", form);
  const color = r.match ? "#1a7f37" : "#b42318";
  drawWhenLoaded("a", r.face_a ? [{ box: r.face_a, label: "", color }] : []);
  drawWhenLoaded("b", r.face_b ? [{ box: r.face_b, label: "", color }] : []);
  const verdict = r.match ? `<span class="ok">Same person</span>` : `<span class="error">Different people</span>`;
  const words = r.match ? `is within the threshold ${num(r.threshold)}` : `is above the threshold ${num(r.threshold)}`;
  show("verify", `<p class="verdict">${verdict}</p><p>The faces are at distance ${num(r.distance)}, which ${words}
    (0 = identical; similarity ${num(r.similarity)}).</p>`);
}

// The subject with exactly this name, if one exists (so enrolling "Ada" twice adds to one person).
async function findSubject(name) {
  let cursor = null;
  for (let page = 0; page < 50; page++) {
    const q = cursor ? `?limit=500&cursor=${encodeURIComponent(cursor)}` : "?limit=500";
    const body = await api("GET", "/v1/subjects" + q);
    const hit = body.items.find((s) => s.name === name);
    if (hit) return hit;
    if (!body.next_cursor) return null;
    cursor = body.next_cursor;
  }
  return null;
}

async function runEnroll() {
  const name = $("#enroll-name").value.trim();
  if (!name) return show("enroll", `<p class="error">Type the person's name first.</p>`);
  const list = need("enroll", "enroll", "one or more photos"); if (!list) return;
  const found = await findSubject(name);
  const subject = found || (await api("POST", "/v1/subjects", { name, metadata: { source: "web" } }));
  // a person created here for photos that all failed (no face, too large...) is removed again, not left empty
  const undo = () => found ? null : api("DELETE", `/v1/subjects/${subject.id}`).catch(() => null);
  const form = new FormData();
  list.forEach((p) => form.append("images", p.blob, p.name));
  const r = await api("POST", `/v1/subjects/${subject.id}/faces`, form).catch(async (e) => { await undo(); throw e; });
  if (!r.faces.length) await undo();
  const firstKept = !r.rejected.some((x) => x.index === 0) && r.faces.length ? r.faces[0] : null;
  drawWhenLoaded("enroll", firstKept && firstKept.box ? [{ box: firstKept.box, label: name, color: "#1a7f37" }] : []);
  const rejected = r.rejected.map((x) => `<li>${bidi(list[x.index].name)}: ${esc(x.message)} <span class="small">(${esc(x.code)})</span></li>`);
  const total = subject.face_count + r.faces.length;
  const now = found || total ? `${bidi(name)} now has ${total} enrolled photo${total === 1 ? "" : "s"}.` : `${bidi(name)} was not added.`;
  show("enroll", `<p class="verdict ${r.faces.length ? "ok" : "error"}">Enrolled ${r.faces.length} photo${r.faces.length === 1 ? "" : "s"} of ${bidi(name)}.</p>
    <p class="small">${now}</p>
    ${rejected.length ? `<p>Not used:</p><ul>${rejected.join("")}</ul>` : ""}`);
}


// ---- live webcam: frames go to /v1/live/frames one after another; boxes follow the faces --------------------
const live = { running: false, session: "", faces: [], width: 0, height: 0, updates: [], stream: null, names: {} };
window.liveState = live;  // read by the browser tests

async function startLive() {
  const video = $("#live-video");
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 } });
  } catch (e) { show("live", `<p class="error">The webcam is not available: ${esc(e.message)}</p>`); return; }
  video.srcObject = live.stream;
  await video.play();
  live.session = "tab-" + Math.random().toString(36).slice(2, 12);
  live.running = true; live.faces = []; live.updates = []; live.names = {};
  $("#live-start").disabled = true; $("#live-stop").disabled = false;
  show("live", `<p class="small">Watching…</p>`);
  requestAnimationFrame(drawLive);
  const grab = document.createElement("canvas");
  let backoffMs = 0;  // grows while the server answers 429/503, back to 0 after an answer
  while (live.running) {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) { await new Promise((r) => setTimeout(r, 50)); continue; }
    const scale = Math.min(1, 640 / w);
    grab.width = Math.round(w * scale); grab.height = Math.round(h * scale);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    const grabbed = performance.now();
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.8));
    const form = new FormData();
    form.append("image", blob, "frame.jpg"); form.append("session", live.session);
    try {
      const r = await api("POST", "/v1/live/frames", form);
      live.faces = r.faces; live.width = r.width; live.height = r.height; live.grabbed = grabbed;
      backoffMs = 0;
      const now = performance.now();
      live.updates.push(now); live.updates = live.updates.filter((t) => now - t < 3000);
      for (const f of r.faces) if (f.decided) live.names[f.track_id] = f.name || "unknown";
      $("#live-rate").textContent = `${(live.updates.length / 3).toFixed(1)} updates/s`;
      const seen = [...new Set(Object.values(live.names))];
      $("#live-result").innerHTML = seen.length ? `<p>Seen: ${seen.map(bidi).join(", ")}</p>` : "";
    } catch (e) {
      showError("live", e);
      if (e.status === 401 || e.status === 403) { stopLive(); break; }
      // busy or rate-limited: wait what the server asks (Retry-After), else back off 0.5 s doubling up to 8 s
      const busy = e.status === 429 || e.status === 503;
      backoffMs = busy ? Math.min(Math.max(backoffMs * 2, 500), 8000) : 1000;
      live.backoffMs = Math.max(backoffMs, (e.retryAfter || 0) * 1000);
      await new Promise((r) => setTimeout(r, live.backoffMs));
    }
  }
}

function stopLive() {
  live.running = false;
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null; live.faces = [];
  $("#live-start").disabled = false; $("#live-stop").disabled = true;
}

function drawLive() {
  const video = $("#live-video"), canvas = $("#live-overlay");
  canvas.width = video.clientWidth; canvas.height = video.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (live.width) {
    const sx = canvas.width / live.width, sy = canvas.height / live.height;
    // the answer describes a frame grabbed a moment ago: move each box on by its velocity since (at most 0.5 s)
    const dt = Math.min((performance.now() - live.grabbed) / 1000, 0.5);
    ctx.lineWidth = 3; ctx.font = "bold 15px system-ui, sans-serif";
    for (const f of live.faces) {
      const label = f.decided ? (f.name || "unknown") : "…";
      ctx.strokeStyle = f.decided ? (f.name ? "#1a7f37" : "#b35900") : "#9aa4b2";
      const x = (f.box.x + f.velocity[0] * dt) * sx, y = (f.box.y + f.velocity[1] * dt) * sy;
      ctx.strokeRect(x, y, f.box.width * sx, f.box.height * sy);
      ctx.fillStyle = ctx.strokeStyle; ctx.direction = textDir(label); ctx.textAlign = "left";
      const fit = fitLabel(ctx, label, x, canvas.width);
      ctx.fillText(fit.text, fit.x, Math.max(14, y - 5), fit.width);
    }
  }
  if (live.running) requestAnimationFrame(drawLive);
}

// ---- wiring ---------------------------------------------------------------------------------------------------
function wire() {
  $("#api-key").value = localStorage.getItem("facerec-api-key") || "";
  $("#api-key").addEventListener("change", () => localStorage.setItem("facerec-api-key", apiKey()));
  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => {
    document.querySelectorAll(".tab, .panel").forEach((el) => el.classList.remove("active"));
    tab.classList.add("active"); $("#" + tab.dataset.tab).classList.add("active");
  }));
  document.querySelectorAll(".slot").forEach((slotEl) => {
    const slot = slotEl.dataset.slot;
    slotEl.querySelector("input[type=file]").addEventListener("change", (ev) => setPhotos(slot, [...ev.target.files]));
    slotEl.querySelector(".cam").addEventListener("click", () => openCamera(slot));
    draw(slot, []);
  });
  $("#camera-snap").addEventListener("click", snap);
  $("#camera-close").addEventListener("click", closeCamera);
  for (const [panel, fn] of [["identify", runIdentify], ["verify", runVerify], ["enroll", runEnroll]]) {
    const button = $(`#${panel}-run`);
    button.addEventListener("click", async () => {
      button.disabled = true; show(panel, `<p class="small">Working…</p>`);
      try { await fn(); } catch (e) { showError(panel, e); } finally { button.disabled = false; }
    });
  }
  $("#live-start").addEventListener("click", startLive);
  $("#live-stop").addEventListener("click", stopLive);
  checkStatus();
}

wire();
