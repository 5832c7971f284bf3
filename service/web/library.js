// facerec web page, photo library views: People (subjects with thumbnails, rename, erase, their photos) and
// Unnamed (clusters of faces nobody has named yet: "who is this?", "not this person", "same person as…"). Uses app.js's api(), esc(),
// bidi() and $(); loaded after it. Face thumbnails are fetched with the API key and shown as blob URLs.
"use strict";

const thumbUrls = new Map();   // crop URL -> object URL
const PAGE = 48;               // people and groups listed at a time; "More" lists the next ones

async function thumb(cropUrl) {
  if (!thumbUrls.has(cropUrl)) {
    const headers = apiKey() ? { "X-API-Key": apiKey() } : {};
    const res = await fetchRetrying(cropUrl, { method: "GET", headers });
    if (!res.ok) return "";  // not remembered: a later view tries again (with the right key, say)
    thumbUrls.set(cropUrl, URL.createObjectURL(await res.blob()));
  }
  return thumbUrls.get(cropUrl);
}

// Run `fn` on each item, at most `n` at a time (a long list must not burst past the rate limit).
async function eachLimited(items, n, fn) {
  const queue = [...items];
  await Promise.all(Array.from({ length: n }, async () => { while (queue.length) await fn(queue.shift()); }));
}

// <img> elements with data-crop (the crop's URL) are filled in once their crops arrive.
async function fillThumbs(root) {
  await eachLimited(root.querySelectorAll("img[data-crop]:not([src]):not(.missing)"), 6, async (img) => {
    const url = await thumb(img.dataset.crop).catch(() => "");
    if (url) img.src = url; else img.classList.add("missing");
  });
}

// a face of an indexed photo (photo library ids), or an enrolled face of a person (gallery ids)
const faceImg = (id) => `<img class="face" data-crop="/v1/photos/faces/${Number(id)}/crop" alt="face ${Number(id)}">`;
const enrolledFaceImg = (id, name) =>
  `<img class="face" data-crop="/v1/faces/${Number(id)}/crop" alt="a face of ${esc(name)}">`;

function libraryError(target, e) {
  const off = e.code === "photo_library_disabled";
  target.innerHTML = `<p class="${off ? "unknown" : "error"}">${esc(e.message)}</p>`;
}

// A listing shown a page at a time: `load(more)` lists the first page, or appends the next one; a newer load
// makes an older one still in flight stop (clicking the tab twice lists each person once).
function pagedList({ list, more, empty, fetchPage, render, after }) {
  let cursor = null, generation = 0;
  return async (appending = false) => {
    const gen = ++generation;
    if (!appending) { cursor = null; list.innerHTML = `<p class="small">Loading…</p>`; }
    more.hidden = true;
    try {
      const page = await fetchPage(appending ? cursor : null);
      if (gen !== generation) return;
      if (!appending) list.innerHTML = page.items.length ? "" : `<p class="small">${empty}</p>`;
      const added = render(page, appending);
      list.append(...added);
      cursor = page.next_cursor; more.hidden = !cursor;
      await after(added, () => gen === generation);
    } catch (e) { if (gen === generation) libraryError(list, e); }
  };
}

const fromHtml = (html) => { const t = document.createElement("template"); t.innerHTML = html; return [...t.content.children]; };
const cursorParam = (cursor) => cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";

// ---- People ---------------------------------------------------------------------------------------------------
// Each person's thumbnail is the crop of the face the listing names (`sample_face_id`): no request per person.
const personCard = (s) => `<div class="card person" data-subject="${esc(s.id)}">
  ${s.sample_face_id == null ? `<div class="face none">no photo</div>` : enrolledFaceImg(s.sample_face_id, s.name)}
  <div class="name" dir="auto">${esc(s.name)}</div><div class="small">${s.face_count} enrolled</div>
  <input class="rename-input" dir="auto" value="${esc(s.name)}" aria-label="new name for ${esc(s.name)}">
  <button class="rename" type="button">Rename</button>
  <button class="photos" type="button">Photos</button>
  <label class="small"><input type="checkbox" class="erase-photos"> with photo faces</label>
  <button class="erase" type="button">Erase</button>
  <button class="export" type="button">Export data</button></div>`;

const loadPeople = pagedList({
  list: $("#people-list"),
  more: $("#people-more"),
  empty: "Nobody is enrolled or named yet.",
  fetchPage: (cursor) => api("GET", `/v1/subjects?limit=${PAGE}${cursorParam(cursor)}`),
  render: (page) => fromHtml(page.items.map(personCard).join("")),
  after: async (added, current) => { if (current()) await fillThumbs($("#people-list")); },
});

// A click on a button of a `.card.<kind>` runs `actions[<one of the button's classes>](card, out, button)`;
// a failure is shown in `out`.
function onCardButton(kind, outSelector, actions) {
  return async (ev) => {
    const card = ev.target.closest(`.card.${kind}`); if (!card || ev.target.tagName !== "BUTTON") return;
    const action = Object.keys(actions).find((name) => ev.target.classList.contains(name));
    const out = $(outSelector);
    if (!action) return;
    const button = ev.target;
    button.disabled = true;  // a double click acts once (a second Erase would answer "no subject")
    try { await actions[action](card, out, button); } catch (e) { libraryError(out, e); } finally { button.disabled = false; }
  };
}

const personActions = {
  rename: async (card, out) => {
    const name = card.querySelector(".rename-input").value.trim();
    const s = await api("PATCH", `/v1/subjects/${card.dataset.subject}`, { name });
    out.innerHTML = `<p class="ok verdict">Renamed to ${bidi(s.name)}.</p>`;
    if ($("#person-photos").dataset.subject === s.id) showPersonPhotos(s.id, s.name);
    await loadPeople();
  },
  erase: async (card, out) => {
    const withPhotos = card.querySelector(".erase-photos").checked;
    await api("DELETE", `/v1/subjects/${card.dataset.subject}?erase_photo_faces=${withPhotos}`);
    out.innerHTML = `<p class="ok verdict">Erased${withPhotos ? ", with their faces in photos" : ""}.</p>`;
    const shown = $("#person-photos");
    if (shown.dataset.subject === card.dataset.subject) { shown.innerHTML = ""; delete shown.dataset.subject; }
    await loadPeople();
  },
  photos: (card) => showPersonPhotos(card.dataset.subject, card.querySelector(".name").textContent),
  export: async (card, out) => {
    const id = card.dataset.subject, name = card.querySelector(".name").textContent;
    const res = await api("GET", `/v1/subjects/${encodeURIComponent(id)}/export`, null, { raw: true });
    const blob = await res.blob();
    const file = attachmentName(res.headers.get("Content-Disposition")) || `subject-${id}.zip`;
    saveBlob(blob, file);
    out.innerHTML = `<p class="ok verdict">Downloaded ${esc(file)} (${fileSize(blob.size)}): everything held about ` +
      `${bidi(name)}.</p>`;
  },
};

// The file name a Content-Disposition header gives (filename*=UTF-8''… first, then filename="…"), or "".
function attachmentName(header) {
  const h = header || "";
  const star = h.match(/filename\*\s*=\s*UTF-8''([^;]+)/i);
  if (star) { try { return decodeURIComponent(star[1].trim()); } catch (e) { /* malformed: the plain name */ } }
  const plain = h.match(/filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/i);
  return plain ? (plain[1] !== undefined ? plain[1].replace(/\\(.)/g, "$1") : plain[2]) : "";
}

const fileSize = (bytes) => bytes < 1024 ? `${bytes} bytes`
  : bytes < 1024 * 1024 ? `${Math.round(bytes / 1024)} KB` : `${(bytes / (1024 * 1024)).toFixed(1)} MB`;

// Save a Blob as a download named `name`: a link to its object URL, clicked (a plain link to the API would not
// carry the X-API-Key header). The URL is revoked once the download has surely started with it.
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url; a.download = name; a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}

async function showPersonPhotos(id, name) {
  const out = $("#person-photos");
  out.dataset.subject = id;
  try {
    const page = await api("GET", `/v1/subjects/${id}/photos?limit=200`), items = page.items;
    if (out.dataset.subject !== id) return;  // erased, or another person's photos asked for, meanwhile
    out.innerHTML = `<h3>Photos of ${bidi(name)} (${items.length}${page.next_cursor ? "+" : ""})</h3>` + (items.length
      ? `<div class="grid">${items.map((p) => `<div class="card photo">${p.faces.map((f) => faceImg(f.id)).join("")}
          <div class="small" dir="auto">${esc(p.external_id || p.id.slice(0, 8))}</div></div>`).join("")}</div>`
      : `<p class="small">No indexed photo of ${bidi(name)} yet.</p>`);
    fillThumbs(out);
  } catch (e) { libraryError(out, e); }
}

// ---- Unnamed ----------------------------------------------------------------------------------------------------
const clusterCard = (c) => `<div class="card cluster" data-cluster="${c.id}" data-size="${c.size}">
  <div class="faces">${c.sample_face_ids.map((f) => `<span class="pick-face">${faceImg(f)}
    <button class="not-this" type="button" data-face="${f}" title="Not this person" aria-label="not this person">✕</button></span>`).join("")}</div>
  <div class="small">${c.size} face${c.size === 1 ? "" : "s"}</div>
  <input class="who" placeholder="Who is this?" aria-label="who is this">
  <button class="name-it" type="button">Name</button>
  <button class="merge" type="button">Same person as…</button></div>`;

const loadClusters = pagedList({
  list: $("#unnamed-list"),
  more: $("#unnamed-more"),
  empty: "No unnamed faces.",
  fetchPage: (cursor) => api("GET", `/v1/clusters?limit=${PAGE}${cursorParam(cursor)}`),
  render: (page, appending) => fromHtml((appending || !page.items.length ? "" :
    `<p class="small">${page.total} group${page.total === 1 ? "" : "s"} of unnamed faces, largest first.</p>`) +
    page.items.map(clusterCard).join("")),
  after: async (added, current) => { showMergeChoice(); if (current()) await fillThumbs($("#unnamed-list")); },
});

// "Same person as…" on one group chooses it; the same button on another group then merges the two (once
// confirmed); on the chosen group it reads "Cancel".
let mergeFrom = null;  // the chosen group's id

function showMergeChoice() {
  const cards = [...$("#unnamed-list").querySelectorAll(".card.cluster")];
  if (!cards.some((c) => c.dataset.cluster === mergeFrom)) mergeFrom = null;  // relisted without it
  for (const card of cards) {
    const chosen = card.dataset.cluster === mergeFrom, b = card.querySelector("button.merge"), n = card.dataset.size;
    card.classList.toggle("chosen", chosen);
    b.textContent = chosen ? "Cancel" : mergeFrom ? "Same as the chosen group" : "Same person as…";
    b.setAttribute("aria-label", chosen ? `cancel choosing this group of ${n} faces`
      : `group of ${n} faces: same person as ${mergeFrom ? "the chosen group" : "another group…"}`);
  }
}

async function mergeInto(card, out) {
  const from = $(`#unnamed-list .card.cluster[data-cluster="${mergeFrom}"]`);
  if (!confirm(`Merge these two groups (${from.dataset.size} and ${card.dataset.size} faces) into one? ` +
    "Regrouping will keep them together.")) return;
  const buttons = [...$("#unnamed-list").querySelectorAll("button.merge")];
  buttons.forEach((b) => { b.disabled = true; });  // one merge at a time
  let merged = null;
  try {
    merged = await api("POST", `/v1/clusters/${mergeFrom}/merge`, { cluster_id: Number(card.dataset.cluster) });
  } catch (e) {
    if (e.status !== 404) throw e;  // shown as the other errors are; the choice stays, to try again
  } finally { buttons.forEach((b) => { b.disabled = false; }); }
  mergeFrom = null;
  out.innerHTML = merged ? `<p class="ok verdict">Merged: one group of ${merged.size} faces.</p>`
    : `<p class="error">One of the two groups is no longer there (named, merged or regrouped meanwhile). ` +
      `The list is up to date again.</p>`;
  await loadClusters();
}

const clusterActions = {
  "name-it": async (card, out) => {
    const name = card.querySelector(".who").value.trim();
    if (!name) { out.innerHTML = `<p class="error">Type a name first.</p>`; return; }
    const r = await api("POST", `/v1/clusters/${card.dataset.cluster}/name`, { name });
    out.innerHTML = `<p class="ok verdict">Named ${r.faces} face${r.faces === 1 ? "" : "s"} as ${bidi(r.subject_name)}` +
      ` (${r.enrolled} enrolled for recognition).</p>`;
    await loadClusters();
  },
  "not-this": async (card, out, button) => {
    await api("DELETE", `/v1/clusters/${card.dataset.cluster}/faces/${button.dataset.face}`);
    out.innerHTML = `<p class="ok verdict">Taken out of the group; it will stay out.</p>`;
    await loadClusters();
  },
  merge: async (card, out) => {
    if (mergeFrom && mergeFrom !== card.dataset.cluster) return mergeInto(card, out);
    mergeFrom = mergeFrom ? null : card.dataset.cluster;
    out.innerHTML = mergeFrom ? `<p class="small">Now press “Same as the chosen group” on a group of the same ` +
      `person, or Cancel.</p>` : "";
    showMergeChoice();
  },
};

async function recluster(ev) {
  const out = $("#unnamed-result"), button = ev.currentTarget;
  button.disabled = true;  // a double click regroups once
  try {
    const r = await api("POST", "/v1/clusters/recluster");
    out.innerHTML = `<p class="ok verdict">Regrouped ${r.faces} faces into ${r.clusters} groups.</p>`;
    await loadClusters();
  } catch (e) { libraryError(out, e); } finally { button.disabled = false; }
}

function wireLibrary() {
  $("#tab-people").addEventListener("click", () => loadPeople());
  $("#tab-unnamed").addEventListener("click", () => loadClusters());
  $("#people-more").addEventListener("click", () => loadPeople(true));
  $("#unnamed-more").addEventListener("click", () => loadClusters(true));
  $("#people-list").addEventListener("click", onCardButton("person", "#people-result", personActions));
  $("#unnamed-list").addEventListener("click", onCardButton("cluster", "#unnamed-result", clusterActions));
  $("#unnamed-recluster").addEventListener("click", recluster);
}
wireLibrary();
