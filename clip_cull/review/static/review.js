// clipcull review: the grid, the viewer and the keys. Plain JavaScript, no build step.
// Text from the server (file names, folders, labels) only ever goes into textContent.
// Every URL is relative: the whole review lives under a random path prefix (/r/<random>/).
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;  // what is on disk, re-read while the page is in view (a stat a photo: cheap)
const COLOURS = { 6: "Red", 7: "Yellow", 8: "Green", 9: "Blue" };  // Lightroom's keys
const MAX_COMPARE = 4;
const state = {
  photos: [], byId: new Map(), view: [], cur: 0, curId: null, sort: "best",
  filter: "all", ratingOp: "any", ratingN: 3, colour: "any", check: "any",
  hits: null, burst: null, cells: new Map(), curCell: null, moveArmed: 0,
  mode: "single",  // single, compare (2-4 photos side by side) or survey (every marked photo)
  zoom: null,  // null, or {fx, fy}: every photo shown at 100 % around that point (0-1 of its width, height)
  marked: new Set(),  // the photos chosen for compare and survey (S)
  auto: false,  // auto-advance: a rating, flag or label moves on to the next photo
  info: new Map(),  // the info panel's facts, by id and version
  pickLabel: "Green",
  rev: -1, polling: true,  // the tests pause polling to press a key on a page that has not looked yet
};
let loupe = false;  // kept for the tests of the single view: whether it shows 100 %

// This page's id, new with every load: each tab of the review is a page of its own, and its keys
// are checked against what it showed (a duplicated or reloaded tab showed nothing yet). U undoes
// this tab's own actions: those of its earlier loads too (their ids kept in the tab's sessionStorage).
function newId() { return Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join(""); }
const CLIENT = newId();
const OWN = (() => {
  let earlier = [];
  try { earlier = JSON.parse(sessionStorage.getItem("clipcull-pages") || "[]"); } catch (e) { /* storage off */ }
  const ids = [CLIENT, ...(Array.isArray(earlier) ? earlier : [])].filter((id) => /^[0-9a-f]{24}$/.test(id)).slice(0, 16);
  try { sessionStorage.setItem("clipcull-pages", JSON.stringify(ids)); } catch (e) { /* as above */ }
  return ids;
})();

if (location.search) history.replaceState(null, "", location.pathname);  // the token leaves the address bar

// A name is shown as it is spelled: bidi controls (U+202E turns "a\u202Egpj.exe" into what reads
// "aexe.jpg"), zero-width and other invisible characters, and control characters (newlines)
// appear as their code points, not as their effect.
const UNSEEN = /[\u0000-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]/g;
function shown(text) {
  return String(text).replace(UNSEEN, (c) => `⟨U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`);
}
function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }
function isStars(n) { return Number.isInteger(n) && n >= 1 && n <= 5; }
function stars(n) { return isStars(n) ? "★".repeat(n) + "☆".repeat(5 - n) : ""; }
// Another program may have written any rating (7, -5, 2.5, a word): it is shown as it is, and
// never breaks the page (repeat() of a negative count throws, and blanked it).
function ratingText(r) {
  if (r === null || r === undefined || r === 0) return "unrated";
  if (r === -1) return "reject";
  if (isStars(r)) return stars(r);
  const numeric = typeof r === "number" || (typeof r === "string" && r.trim() !== "" && !isNaN(Number(r)));
  return `${shown(String(r))} (${numeric ? "out of range" : "not a rating"})`;
}
function colourOf(p) { return p.colour && !p.picked ? p.colour : null; }  // a label that is not the pick
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
// ?v= names the content: the browser may keep the image (an id alone is a place in this ranking,
// and a photo replaced under its name has another v).
function imageUrl(p, size) { return `img/${p.id}/${size}` + (p.v ? `?v=${encodeURIComponent(p.v)}` : ""); }
function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function request(path, init) {
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw Object.assign(new Error(data.error || r.statusText), { data });
  return data;
}

function post(path, body) {
  return request(path, {
    method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(body),
  });
}

// Changing requests go to the server one after another, in the order of the keys: fired at
// once, "3" then "0" could arrive as "0" then "3" and leave the wrong rating in the sidecar.
let writes = Promise.resolve();

function api(path, body) {
  if (body === undefined) return request(path, {});
  const mine = writes.then(() => post(path, body));
  writes = mine.catch(() => {});
  return mine;
}

// --- which photos are shown, in which order ------------------------------------------------

function ordered() {
  const list = state.photos.slice();
  if (state.sort === "time") {
    list.sort((a, b) => (a.captured || "\uffff").localeCompare(b.captured || "\uffff") || a.rank - b.rank);
  }
  return list;
}

// The filters, each a test; combined, a photo must pass them all. `except` leaves one out (to
// count what each of its options would show with the others as they are).
const FILTERS = {
  filter: (p, v) => v === "all" || (v === "unrated" ? p.rating === null : v === "rejects" ? p.rating === -1
    : v === "picks" ? p.picked : v === "unflagged" ? !p.picked && p.rating !== -1 : true),
  rating: (p, [op, n]) => op === "any" || (isStars(p.rating) &&
    (op === "ge" ? p.rating >= n : op === "le" ? p.rating <= n : p.rating === n)),
  colour: (p, v) => v === "any" || (v === "none" ? !p.colour : p.colour === v),
  check: (p, v) => v === "any" || (v === "none" ? p.flags.length === 0 : p.flags.includes(v)),
};
function filterValues() {
  return { filter: state.filter, rating: [state.ratingOp, state.ratingN], colour: state.colour, check: state.check };
}
function passes(p, values = filterValues(), except = null) {
  return Object.entries(FILTERS).every(([name, test]) => name === except || test(p, values[name]));
}

function computeView() {
  if (state.burst !== null) {
    return state.photos.filter((p) => p.group === state.burst).sort((a, b) => a.rank - b.rank).map((p) => p.id);
  }
  if (state.hits) return state.hits.filter((id) => state.byId.has(id) && passes(state.byId.get(id)));
  // Bursts stacked: the best (lowest rank) member that passes the filter stands for its burst.
  const top = new Map();
  for (const p of state.photos) {
    if (p.group !== null && passes(p) && (!top.has(p.group) || p.rank < top.get(p.group).rank)) top.set(p.group, p);
  }
  return ordered().filter((p) => passes(p) && (p.group === null || top.get(p.group) === p)).map((p) => p.id);
}

function burstMembers(group) { return state.photos.filter((p) => p.group === group).sort((a, b) => a.rank - b.rank); }

// What the grid shows, counted as the terminal counts it: photos, and the stacks they are in
// where bursts and near-duplicates are stacked ("23 stacks (30 photos)").
function counted() {
  const stacked = state.burst === null && !state.hits;
  const photos = stacked ? state.photos.filter((p) => passes(p)).length : state.view.length;
  const cells = state.view.length;
  return cells === photos ? plural(photos, "photo") : `${plural(cells, "stack")} (${plural(photos, "photo")})`;
}

// Each filter option says how many photos it would show, the other filters as they are.
function drawCounts() {
  const values = filterValues();
  const pool = state.hits ? state.hits.map((id) => state.byId.get(id)).filter(Boolean) : state.photos;
  for (const [select, name, value] of [["filter", "filter", (o) => o], ["rating-op", "rating", (o) => [o, state.ratingN]],
    ["colour", "colour", (o) => o], ["check", "check", (o) => o]]) {
    for (const option of $(select).options) {
      const base = option.dataset.text || (option.dataset.text = option.textContent);
      const trial = { ...values, [name]: value(option.value) };
      const n = pool.filter((p) => passes(p, trial)).length;
      option.textContent = `${base} (${n})`;
    }
  }
}

// --- drawing the grid --------------------------------------------------------------------

function cellFor(p) {
  let c = state.cells.get(p.id);
  if (!c) {
    c = el("div", "cell");
    c.dataset.id = p.id;
    const img = el("img");
    img.loading = "lazy";
    img.alt = "";
    img.src = imageUrl(p, "thumb");
    img.addEventListener("error", soon);  // replaced on disk since the listing? look again
    c.append(img, el("div", "badges"), el("div", "name", shown(p.name)));
    c.title = shown(p.name);
    c.addEventListener("click", () => {  // a photo not compared: back to one photo, that one
      if (state.mode !== "single" && !compared(p).includes(p.id)) state.mode = "single";
      selectId(p.id);
    });
    state.cells.set(p.id, c);
  }
  drawBadges(p, c);
  return c;
}

function drawBadges(p, c) {
  const b = c.querySelector(".badges");
  b.replaceChildren();
  if (p.rating === -1) b.append(el("span", "reject", "✕ reject "));
  else if (isStars(p.rating)) b.append(el("span", "", stars(p.rating) + " "));
  else if (ratingText(p.rating) !== "unrated") b.append(el("span", "odd", ratingText(p.rating) + " "));
  if (p.picked) b.append(el("span", "pick", "● pick "));
  if (colourOf(p)) b.append(el("span", `label ${String(colourOf(p)).toLowerCase()}`, `■ ${shown(colourOf(p))} `));
  if (p.flags.length) b.append(el("span", "flag", p.flags.join(" ")));
  c.classList.toggle("reject", p.rating === -1);
  c.classList.toggle("marked", state.marked.has(p.id));
  let s = c.querySelector(".stack");
  if (p.group !== null && state.burst === null) {
    if (!s) { s = el("span", "stack"); c.append(s); }
    s.textContent = stackText(p);
  } else if (s) s.remove();
}

// A stack stands for its burst: it says what its hidden frames hold (stars, picks, rejects),
// so a decision made inside the burst is seen from the grid.
function stackText(p) {
  const members = burstMembers(p.group);
  const hidden = members.filter((q) => q.id !== p.id);
  const rated = hidden.filter((q) => isStars(q.rating)).length;
  const rejects = hidden.filter((q) => q.rating === -1).length;
  const picks = hidden.filter((q) => q.picked).length;
  const parts = [`burst ×${members.length}`];
  if (rated) parts.push(`${rated} ★`);
  if (picks) parts.push(plural(picks, "pick"));
  if (rejects) parts.push(plural(rejects, "reject"));
  return parts.join(" · ");
}

function render() {
  state.view = computeView();
  const i = state.view.indexOf(state.curId);
  if (i >= 0) state.cur = i;
  else if (state.cur >= state.view.length) state.cur = Math.max(0, state.view.length - 1);
  $("grid").replaceChildren(...state.view.map((id) => cellFor(state.byId.get(id))));
  const what = state.burst !== null ? `burst ${state.burst}` : state.hits ? "search results" : filterName();
  status(`${counted()} · ${what}`);
  drawCounts();
  if (i >= 0 && state.mode !== "single") show(state.curId);
  else select(state.cur);
}

function filterName() {
  const parts = [];
  if (state.filter !== "all") parts.push(state.filter);
  if (state.ratingOp !== "any") parts.push(`stars ${{ ge: "≥", eq: "=", le: "≤" }[state.ratingOp]} ${state.ratingN}`);
  if (state.colour !== "any") parts.push(state.colour === "none" ? "no label" : state.colour.toLowerCase());
  if (state.check !== "any") parts.push(state.check === "none" ? "no flags" : state.check);
  return parts.length ? parts.join(" + ") : "all";
}

function current() { return state.byId.get(state.curId); }

function select(i) {
  state.cur = Math.max(0, Math.min(i, state.view.length - 1));
  show(state.view[state.cur]);
}

function selectId(id) {
  const i = state.view.indexOf(id);
  if (i >= 0) state.cur = i;
  show(id);
}

// Make a photo the current one: its cell outlined, the viewer and the info panel on it. In compare
// and survey the current photo is always one of those shown (the outlined panel: the keys act on
// it): a photo that is not compared gives way to the nearest that is, and with fewer than two
// photos to compare the view is one photo again.
function show(id) {
  if (state.curCell) state.curCell.classList.remove("current");  // the view may have changed since
  state.curId = id === undefined ? null : onPanels(id);
  const p = current();
  if (!p) { state.curCell = null; $("preview").removeAttribute("src"); $("compare").replaceChildren(); clearInfo(); return; }
  const c = state.cells.get(p.id);
  state.curCell = c && c.isConnected ? c : null;
  if (state.curCell) {
    c.classList.add("current");
    c.scrollIntoView({ block: "nearest" });
  }
  drawViewer(p);
  prefetch();
}

function onPanels(id) {
  if (state.mode === "single" || !state.byId.has(id)) return id;
  const ids = compared(state.byId.get(id));
  if (ids.length < 2) { state.mode = "single"; return id; }
  if (ids.includes(id)) return id;
  const order = ordered().map((q) => q.id), at = order.indexOf(id);
  return ids.find((other) => order.indexOf(other) >= at) ?? ids[ids.length - 1];
}

// --- the viewer: one photo, compare, survey; 100 % anywhere ------------------------------------

// The photos compare or survey shows: those marked (S), else the photo's burst; in the order of
// the grid (a burst: its order). Compare shows up to four, a window that holds the current photo.
function compared(p) {
  if (!p) return [];
  if (state.marked.size >= 2) return ordered().map((q) => q.id).filter((id) => state.marked.has(id));
  if (p.group !== null) return burstMembers(p.group).map((q) => q.id);
  return [];
}

function panelIds() {
  const p = current();
  if (!p || state.mode === "single") return p ? [p.id] : [];
  let ids = compared(p);
  if (state.mode === "compare" && ids.length > MAX_COMPARE) {
    const at = Math.max(0, ids.indexOf(p.id));
    const start = Math.min(Math.max(0, at - 1), ids.length - MAX_COMPARE);
    ids = ids.slice(start, start + MAX_COMPARE);
  }
  return ids;
}

// What ← → (and Home, End, ↑ ↓) move through: the photos compared or surveyed, else the grid.
function navIds() {
  if (state.mode !== "single") {
    const ids = compared(current());
    if (ids.length >= 2) return ids;
  }
  return state.view;
}

// Home, End: the first or last photo shown (the grid's, or those compared)
function jump(last) {
  const ids = navIds();
  if (state.mode !== "single") { if (ids.length) selectId(ids[last ? ids.length - 1 : 0]); }
  else select(last ? state.view.length - 1 : 0);
}

// ↑ ↓: a row of the grid; in compare and survey the previous or next photo compared
function row(delta) {
  if (state.mode !== "single") step(delta);
  else select(state.cur + delta * columns());
}

function step(delta) {
  const ids = navIds();
  const at = ids.indexOf(state.curId);
  const next = ids[Math.max(0, Math.min(ids.length - 1, (at < 0 ? 0 : at) + delta))];
  if (next !== undefined) selectId(next);
}

function drawViewer(p) {
  const ids = panelIds();
  const multi = state.mode !== "single" && ids.length > 1;
  $("single").hidden = multi || loupe;
  $("loupe").hidden = multi || !loupe;
  $("compare").hidden = !multi;
  $("viewer").classList.toggle("multi", multi);
  if (multi) drawPanels(ids, p);
  else if (loupe) zoomInto($("loupe"), $("full"), p);
  else setSrc($("preview"), imageUrl(p, "preview"));
  drawInfo(p);
  drawFaces(p);
}

function setSrc(img, url) { if (img.getAttribute("src") !== url) img.src = url; }

function drawPanels(ids, p) {
  const box = $("compare");
  box.dataset.count = ids.length;
  box.classList.toggle("survey", state.mode === "survey");
  box.dataset.ready = "0";
  const cols = state.mode === "survey" ? Math.ceil(Math.sqrt(ids.length * box.clientWidth / Math.max(1, box.clientHeight))) : ids.length;
  box.style.gridTemplateColumns = `repeat(${Math.max(1, Math.min(cols, ids.length))}, minmax(0, 1fr))`;
  const panels = ids.map((id) => {
    let f = box.querySelector(`figure[data-id="${id}"]`);
    if (!f) {
      f = el("figure", "panel");
      f.dataset.id = id;
      const frame = el("div", "frame");
      const img = el("img");
      img.alt = "";
      frame.append(img);
      f.append(frame, el("figcaption"));
      wireFrame(frame, img, () => { if (state.curId !== id) selectId(id); });
    }
    const q = state.byId.get(id);
    f.classList.toggle("current", id === p.id);
    f.querySelector("figcaption").textContent = `${shown(q.name)}  ${ratingText(q.rating)}${q.picked ? " · pick" : ""}`;
    const frame = f.querySelector(".frame"), img = f.querySelector("img");
    if (state.zoom) zoomInto(frame, img, q);
    else { frame.classList.remove("zoomed"); img.style.width = ""; setSrc(img, imageUrl(q, "preview")); }
    return f;
  });
  box.replaceChildren(...panels);
  if (!state.zoom) box.dataset.ready = "1";
}

// 100 %: one image pixel on one screen pixel, the point {fx, fy} of the photo in the middle of
// its frame; every frame shown goes to the same point (linked zoom), and panning one pans all.
function zoomInto(frame, img, p) {
  const z = state.zoom || (state.zoom = { fx: 0.5, fy: 0.5 });
  frame.classList.add("zoomed");
  const url = imageUrl(p, "full");
  const place = () => {
    img.style.width = img.naturalWidth / devicePixelRatio + "px";
    centre(frame, img, z.fx, z.fy);
    zoomReady();
  };
  if (img.getAttribute("src") === url && img.complete && img.naturalWidth) place();
  else { img.onload = place; img.src = url; }
}

function centre(frame, img, fx, fy) {
  const left = fx * img.offsetWidth - frame.clientWidth / 2, top = fy * img.offsetHeight - frame.clientHeight / 2;
  frame.scrollLeft = left;
  frame.scrollTop = top;
  frame.dataset.sx = frame.scrollLeft;  // where it was put: its scroll event is no pan of the user's
  frame.dataset.sy = frame.scrollTop;
}

function zoomReady() {  // the bench and the tests wait for every frame at 100 %
  const frames = state.mode !== "single" && !$("compare").hidden ? [...$("compare").querySelectorAll(".frame")] : [$("loupe")];
  const done = frames.every((f) => { const i = f.querySelector("img"); return i.complete && i.naturalWidth && f.classList.contains("zoomed"); });
  if (done) { $("compare").dataset.ready = "1"; $("loupe").dataset.ready = "1"; }
}

function zoomedFrames() { return [...document.querySelectorAll(".frame.zoomed")].filter((f) => f.offsetParent !== null); }

// A frame: a click zooms to 100 % at the point clicked (or back to the whole photo), a drag pans,
// and a pan (drag, wheel, scrollbar) moves every other frame shown to the same point.
let drag = null;  // the frame a mouse button went down on, and where
function wireFrame(frame, img, choose) {
  frame.addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    drag = { frame, img, choose, x: e.clientX, y: e.clientY, left: frame.scrollLeft, top: frame.scrollTop, moved: false };
  });
  frame.addEventListener("scroll", () => {
    if (!frame.classList.contains("zoomed") || !img.offsetWidth) return;
    if (Math.abs(frame.scrollLeft - frame.dataset.sx) < 1 && Math.abs(frame.scrollTop - frame.dataset.sy) < 1) return;
    state.zoom = { fx: (frame.scrollLeft + frame.clientWidth / 2) / img.offsetWidth,
      fy: (frame.scrollTop + frame.clientHeight / 2) / img.offsetHeight };
    frame.dataset.sx = frame.scrollLeft;
    frame.dataset.sy = frame.scrollTop;
    for (const other of zoomedFrames()) {
      if (other !== frame) centre(other, other.querySelector("img"), state.zoom.fx, state.zoom.fy);
    }
  });
}
window.addEventListener("mousemove", (e) => {
  if (!drag || !drag.frame.classList.contains("zoomed")) return;
  if (Math.abs(e.clientX - drag.x) + Math.abs(e.clientY - drag.y) > 3) drag.moved = true;
  drag.frame.scrollLeft = drag.left - (e.clientX - drag.x);
  drag.frame.scrollTop = drag.top - (e.clientY - drag.y);
});
window.addEventListener("mouseup", (e) => {
  if (!drag) return;
  const { frame, img, choose, moved } = drag;
  drag = null;
  if (moved) return;
  choose();
  if (frame.classList.contains("zoomed")) { zoomOut(); return; }
  const r = img.getBoundingClientRect();
  if (e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom) return;
  zoomAt((e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height);
});

function zoomAt(fx, fy) {
  state.zoom = { fx: Math.min(1, Math.max(0, fx)), fy: Math.min(1, Math.max(0, fy)) };
  loupe = true;
  $("loupe").dataset.ready = "0";
  if (current()) drawViewer(current());
}

function zoomOut() {
  state.zoom = null;
  loupe = false;
  $("loupe").classList.add("zoomed");  // the single view's 100 % frame keeps its class
  if (current()) drawViewer(current());
}

function toggleZoom() { if (state.zoom) zoomOut(); else zoomAt(0.5, 0.5); }

function setMode(mode) {
  if (state.mode === mode) mode = "single";  // C or N again: back to one photo
  if (mode !== "single") {
    const p = current();
    const enough = state.marked.size >= 2 || (p && p.group !== null && burstMembers(p.group).length > 1);
    if (!enough) { status("mark 2 or more photos with S (or stand on a burst) to compare or survey them"); return; }
  }
  state.mode = mode;
  if (current()) show(state.curId);  // a photo not compared gives way to one that is
}

function toggleMark() {
  const p = current();
  if (!p) return;
  if (state.marked.has(p.id)) state.marked.delete(p.id); else state.marked.add(p.id);
  redraw(p);
  status(`${plural(state.marked.size, "photo")} marked for compare and survey`);
  if (state.mode !== "single") show(p.id);  // unmarked: the outline goes to a photo still compared
}

function toggleAuto() {
  state.auto = !state.auto;
  $("auto").textContent = `auto-advance ${state.auto ? "on" : "off"}`;
  $("auto").setAttribute("aria-pressed", String(state.auto));
  document.body.classList.toggle("auto", state.auto);
}

// --- the info panel and the faces ------------------------------------------------------------

// Nothing shown (a filter that leaves no photo): no photo's facts either.
function clearInfo() {
  for (const id of ["info-name", "info-rank", "info-suggested", "info-yours", "info-captured", "info-camera",
    "info-lens", "info-exposure", "info-focus"]) $(id).textContent = "";
  const canvas = $("histogram");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.v;
  $("faces").replaceChildren();
  $("faces").hidden = true;
  clearTimeout(drawInfo.timer);
}

function drawInfo(p) {
  $("info-name").textContent = p.folder ? `${shown(p.name)}  (${shown(p.folder)})` : shown(p.name);
  $("info-rank").textContent = `#${p.rank} · score ${p.score.toFixed(4)} · ${p.label}` +
    (p.group !== null ? ` · burst ${p.group}` : "") +
    (p.changed ? " · changed on disk since clipcull ranked it (the score is of the earlier photo)" : "");
  $("info-suggested").textContent = [stars(p.suggested), ...p.flags].filter(Boolean).join(" · ");
  $("info-yours").textContent = ratingText(p.rating) + (p.picked ? " · pick" : "") +
    (colourOf(p) ? ` · label ${shown(colourOf(p))}` : "") + (p.problem ? ` · ${shown(p.problem)}` : "");
  $("info-captured").textContent = (p.captured || "").replace("T", " ");
  $("info-camera").textContent = p.camera ? shown(p.camera) : "";
  $("info-focus").textContent = p.focus === null ? "" : `${p.focus} (variance of the Laplacian; higher is sharper)`;
  const known = state.info.get(`${p.id}:${p.v}`);
  if (known) drawFacts(known);
  else {
    for (const id of ["info-lens", "info-exposure"]) $(id).textContent = "";
    clearTimeout(drawInfo.timer);  // keys held down: only the photo stopped on asks the server
    drawInfo.timer = setTimeout(() => loadInfo(p), 120);
  }
}

async function loadInfo(p) {
  try {
    const facts = await request(`api/info/${p.id}`);
    state.info.set(`${p.id}:${facts.v}`, facts);
    const now = current();
    if (now && now.id === p.id && now.v === facts.v) drawFacts(facts);
  } catch (e) { /* the photo cannot be read: the row says why */ }
}

function exposureText(f) {
  const parts = [];
  if (f.exposure_time) parts.push(f.exposure_time >= 1 ? `${+f.exposure_time.toFixed(1)} s` : `1/${Math.round(1 / f.exposure_time)} s`);
  if (f.f_number) parts.push(`f/${+f.f_number.toFixed(1)}`);
  if (f.iso) parts.push(`ISO ${Math.round(f.iso)}`);
  if (f.focal_length) parts.push(`${+f.focal_length.toFixed(1)} mm`);
  return parts.join(" · ");
}

function drawFacts(f) {
  $("info-lens").textContent = f.lens ? shown(f.lens) : "";
  $("info-exposure").textContent = exposureText(f);
  const canvas = $("histogram"), g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const h = f.histogram, peak = Math.max(1, ...["r", "g", "b"].flatMap((c) => h[c].slice(1, 255)));
  g.globalCompositeOperation = "lighter";
  for (const [c, colour] of [["r", "#c33"], ["g", "#3c3"], ["b", "#35d"]]) {
    g.fillStyle = colour;
    h[c].forEach((n, x) => {
      const bar = Math.min(canvas.height, canvas.height * n / peak);
      g.fillRect(x, canvas.height - bar, 1, bar);
    });
  }
  g.globalCompositeOperation = "source-over";
  canvas.dataset.v = f.v;
}

// The faces beside the photo (the faces extra): each judged face of the photo close up, or for a
// burst its main face in every frame, in the burst's order; each with its eyes and focus.
function drawFaces(p) {
  const box = $("faces");
  let cards = [];
  if (p.group !== null) cards = burstMembers(p.group).filter((q) => q.faces && q.faces.length).map((q) => [q, 0]);
  else if (p.faces) cards = p.faces.map((_, i) => [p, i]);
  box.hidden = cards.length === 0;
  box.replaceChildren(...cards.map(([q, i]) => faceCard(q, i, p.group !== null && q.id === p.id)));
}

function faceCard(q, i, isCurrent) {
  const f = q.faces[i];
  const card = el("figure", "face" + (f.closed ? " closed" : "") + (f.soft ? " soft" : "") + (isCurrent ? " current" : ""));
  const img = el("img");
  img.alt = `face ${i + 1} of ${shown(q.name)}`;
  img.src = `face/${q.id}/${i}` + (q.v ? `?v=${encodeURIComponent(q.v)}` : "");
  const eyes = f.closed === null || f.closed === undefined ? "eyes ?"
    : `eyes ${f.closed ? "closed" : "open"} ${f.openness === null ? "" : f.openness.toFixed(2)}`.trim();
  const focus = `${f.soft ? "soft" : "sharp"} ${Math.round(f.focus)}`;
  card.append(img, el("figcaption", "", `${eyes} · ${focus}`));
  card.title = shown(q.name);
  card.addEventListener("click", () => selectId(q.id));
  return card;
}

// Previews of the photos either side of the current one, loaded before they are asked for.
const prefetched = [];
function prefetch() {
  const ids = navIds(), at = ids.indexOf(state.curId);
  prefetched.length = 0;
  for (const k of [1, -1, 2, -2, 3]) {
    const id = ids[at + k];
    if (id === undefined || at < 0) continue;
    const img = new Image();
    img.src = imageUrl(state.byId.get(id), state.zoom ? "full" : "preview");
    prefetched.push(img);  // kept until the next move: the browser may not drop the request
  }
}

function redraw(p) {
  const c = state.cells.get(p.id);
  if (c) drawBadges(p, c);
  if (p.group !== null) {  // its stack says what its hidden frames hold
    for (const q of burstMembers(p.group)) if (q.id !== p.id && state.cells.has(q.id)) drawBadges(q, state.cells.get(q.id));
  }
  const now = current();
  if (now && now.id === p.id) drawInfo(p);
  if (now && state.mode !== "single" && panelIds().includes(p.id)) {
    const f = $("compare").querySelector(`figure[data-id="${p.id}"] figcaption`);
    if (f) f.textContent = `${shown(p.name)}  ${ratingText(p.rating)}${p.picked ? " · pick" : ""}`;
  }
  clearTimeout(redraw.counts);
  redraw.counts = setTimeout(drawCounts, 100);
}

// --- what is on disk -------------------------------------------------------------------

// A row from the server: the photo as it is on disk. An older one (a poll answered before a
// decision's answer arrived) never overwrites a newer one.
function apply(row) {
  const p = state.byId.get(row.id);
  if (!p || row.rev < p.rev) return;
  const replaced = row.v !== p.v;
  Object.assign(p, row);  // state.rev moves with whole polls only: a row's rev may pass others unseen
  if (replaced) reloadImages(p);
  redraw(p);
}

function reloadImages(p) {  // the photo was replaced on disk: its new content under its new v
  const c = state.cells.get(p.id);
  if (c) c.querySelector("img").src = imageUrl(p, "thumb");
  const cur = current();
  if (cur && (cur.id === p.id || panelIds().includes(p.id) || (state.burst !== null && state.view.includes(p.id)))) drawViewer(cur);
}

let polled = null;

async function poll() {
  if (document.body.dataset.ready !== "1") return;  // the listing itself is still on its way
  if (polled) return polled;
  polled = (async () => {
    try {
      const r = await request(`api/changes?since=${state.rev}`);
      for (const row of r.photos) apply(row);
      state.rev = Math.max(state.rev, r.rev);
    } catch (e) { /* the next poll tries again; a decision still checks on disk first */ }
  })();
  try { await polled; } finally { polled = null; }
}

let soonTimer = 0;
function soon() { clearTimeout(soonTimer); soonTimer = setTimeout(poll, 200); }

setInterval(() => { if (state.polling && document.visibilityState === "visible") poll(); }, POLL_MS);
window.addEventListener("focus", () => poll());  // back from darktable or the terminal: look again
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") poll(); });

// --- decisions -------------------------------------------------------------------------

function decisionText(row) {
  const label = row.colour && !row.picked ? ` · label ${shown(row.colour)}` : "";
  return `${shown(row.name)}: ${ratingText(row.rating)}${row.picked ? " · pick" : ""}${label}`;
}

// What a key does to the page's copy of a photo, shown at once and confirmed by the server:
// Lightroom's flags (a pick is no reject and a reject no pick), a colour key again takes it off.
function foresee(p, action, value) {
  if (action === "stars") p.rating = value;
  else if (action === "reject") { p.rating = -1; if (p.picked) { p.picked = false; p.colour = null; } }
  else if (action === "clear") p.rating = null;
  else if (action === "pick") {
    p.picked = !p.picked;
    p.colour = p.picked ? state.pickLabel : null;
    if (p.picked && p.rating === -1) p.rating = null;
  } else if (action === "colour") {
    p.colour = p.colour === value ? null : value;
    p.picked = p.colour === state.pickLabel;
    if (p.picked && p.rating === -1) p.rating = null;
  }
}

async function decide(action, value) {
  const p = current();
  if (!p) return;
  // What the photographer sees now: the server refuses the key if the disk holds something else.
  const seen = { v: p.v, gen: p.gen };
  const before = { rating: p.rating, picked: p.picked, colour: p.colour };
  foresee(p, action, value);
  redraw(p);
  if (state.auto) step(1);  // auto-advance: on to the next photo at once, the answer comes meanwhile
  try {
    const row = await api("api/decide", { id: p.id, action, value, ...seen, client: CLIENT });
    apply(row);
    status(decisionText(row));  // a later success replaces an earlier error
  } catch (e) {
    Object.assign(p, before);
    if (e.data && e.data.photo) apply(e.data.photo);  // changed on disk: shown as it is now
    else redraw(p);
    status(`not saved: ${shown(e.message)}`, true);
  }
}

async function undo() {
  try {
    const row = await api("api/undo", { client: CLIENT, earlier: OWN.slice(1) });
    if (row.nothing) { status("nothing to undo"); return; }
    apply(row);
    if (state.view.includes(row.id) || navIds().includes(row.id)) selectId(row.id);
    status(`undone: ${decisionText(row)}`);
  } catch (e) { status(`undo failed: ${shown(e.message)}`, true); }
}

async function moveRejects() {
  const n = state.photos.filter((p) => p.rating === -1).length;
  if (Date.now() - state.moveArmed > 3000) {
    state.moveArmed = Date.now();
    status(`press M again to move ${plural(n, "reject")} to _rejects`);
    return;
  }
  state.moveArmed = 0;
  try {
    const r = await api("api/move-rejects", { since: state.rev });
    for (const row of r.changed) apply(row);  // a reject changed on disk since it was shown stays
    dropMoved(r.moved);
    const left = state.photos.filter((p) => p.rating === -1).length;
    status((r.run ? `moved ${plural(r.moved.length, "reject")} (move run ${r.run}; clipcull undo puts them back)`
      : "no rejects to move") + (left ? `; ${left} changed on disk since shown, left in place` : ""));
  } catch (e) {
    if (e.data && e.data.moved) dropMoved(e.data.moved);  // stopped part way: those that went, go
    status(`move failed: ${shown(e.message)}`, true);
  }
}

function dropMoved(ids) {
  const moved = new Set(ids);
  state.photos = state.photos.filter((p) => !moved.has(p.id));
  for (const id of moved) { state.byId.delete(id); state.cells.delete(id); state.marked.delete(id); }
  render();
}

// --- search ----------------------------------------------------------------------------

async function search(text) {
  if (!text.trim()) { clearSearch(); return; }
  status("searching…");
  try {
    const r = await post("api/search", { q: text });  // a POST: it keeps the text's embedding
    state.hits = r.hits.map((h) => h.id);
    state.burst = null;
    state.cur = 0;
    state.curId = null;
    render();
  } catch (e) { status(`search failed: ${shown(e.message)}`, true); }
}

function clearSearch() {
  $("search").value = "";
  if (state.hits) { state.hits = null; state.cur = 0; state.curId = null; render(); }
}

// --- keys ------------------------------------------------------------------------------

function columns() {
  const cells = $("grid").children;
  if (cells.length < 2) return 1;
  const top = cells[0].offsetTop;
  let n = 0;
  while (n < cells.length && cells[n].offsetTop === top) n++;
  return n;
}

function toggleBurst() {
  const p = current();
  if (state.burst !== null) {
    state.burst = null;
    state.mode = "single";
    render();
    const i = state.view.findIndex((id) => state.byId.get(id).group === p.group);
    select(i >= 0 ? i : 0);
  } else if (p && p.group !== null) {
    state.burst = p.group;
    state.mode = "compare";  // a burst's frames side by side, in its order
    state.cur = 0;
    state.curId = null;
    render();
  }
}

function back() {
  if (state.zoom) zoomOut();
  else if (state.burst !== null) toggleBurst();
  else if (state.mode !== "single") setMode("single");
  else clearSearch();
}

const KEYS = {
  ArrowRight: () => step(1), ArrowLeft: () => step(-1), j: () => step(1), k: () => step(-1),
  ArrowDown: () => row(1), ArrowUp: () => row(-1), Home: () => jump(false), End: () => jump(true),
  1: () => decide("stars", 1), 2: () => decide("stars", 2), 3: () => decide("stars", 3),
  4: () => decide("stars", 4), 5: () => decide("stars", 5), 0: () => decide("clear"),
  6: () => decide("colour", COLOURS[6]), 7: () => decide("colour", COLOURS[7]),
  8: () => decide("colour", COLOURS[8]), 9: () => decide("colour", COLOURS[9]),
  x: () => decide("reject"), p: () => decide("pick"), u: () => undo(),
  z: toggleZoom, " ": toggleZoom,  // Space zooms, as in Lightroom
  Enter: toggleBurst, Escape: back,
  c: () => setMode("compare"), n: () => setMode("survey"), s: toggleMark, a: toggleAuto,
  i: () => { $("info").hidden = !$("info").hidden; },
  "/": () => $("search").focus(),
  m: () => moveRejects(),
};

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const t = event.target;
  if (t === $("search")) {
    if (event.key === "Enter") { event.preventDefault(); t.blur(); search(t.value); }
    else if (event.key === "Escape") { t.blur(); clearSearch(); }
    return;
  }
  if (t.tagName === "SELECT") { if (event.key === "Escape") t.blur(); else return; }
  const handler = KEYS[event.key.length === 1 ? event.key.toLowerCase() : event.key];
  if (!handler) return;
  event.preventDefault();
  handler();
  if (window.__latencies) {  // bench: key press to the frame after the change is drawn
    const pressed = event.timeStamp;
    requestAnimationFrame(() => setTimeout(() => window.__latencies.push(performance.now() - pressed), 0));
  }
});

function onFilter(id, apply) {
  $(id).addEventListener("change", (e) => { apply(e.target.value); state.cur = 0; e.target.blur(); render(); });
}
onFilter("filter", (v) => { state.filter = v; });
onFilter("rating-op", (v) => { state.ratingOp = v; $("rating-n").disabled = v === "any"; });
onFilter("rating-n", (v) => { state.ratingN = Number(v); });
onFilter("colour", (v) => { state.colour = v; });
onFilter("check", (v) => { state.check = v; });
onFilter("sort", (v) => { state.sort = v; });
$("move").addEventListener("click", () => { state.moveArmed = Date.now(); moveRejects(); });
$("auto").addEventListener("click", toggleAuto);
for (const b of $("actions").querySelectorAll("button[data-key]")) b.addEventListener("click", () => KEYS[b.dataset.key]());
// A button never keeps the keyboard: Space after a click is the page's (zoom), not a second click.
for (const b of document.querySelectorAll("button")) {
  b.addEventListener("mousedown", (e) => e.preventDefault());
  b.addEventListener("click", () => b.blur());
}
wireFrame($("single"), $("preview"), () => {});
wireFrame($("loupe"), $("full"), () => {});
window.addEventListener("resize", () => { if (current() && state.mode === "survey") drawViewer(current()); });

(async function start() {
  try {
    const data = await api("api/photos");
    $("title").textContent = shown(data.title);
    state.pickLabel = data.pick_label;
    state.photos = data.photos;
    state.rev = data.rev;
    for (const p of data.photos) state.byId.set(p.id, p);
    render();
    document.body.dataset.ready = "1";
  } catch (e) { status(`could not load the photos: ${shown(e.message)}`); }
})();
