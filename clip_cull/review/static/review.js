// clipcull review: the grid, the viewer and the keys. Plain JavaScript, no build step.
// Text from the server (file names, folders, labels) only ever goes into textContent.
// Every URL is relative: the whole review lives under a random path prefix (/r/<random>/).
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;  // what is on disk, re-read while the page is in view (a stat a photo: cheap)
const state = {
  photos: [], byId: new Map(), view: [], cur: 0, filter: "all", sort: "best",
  hits: null, burst: null, loupe: false, cells: new Map(), curCell: null, moveArmed: 0,
  rev: -1, polling: true,  // the tests pause polling to press a key on a page that has not looked yet
};

if (location.search) history.replaceState(null, "", location.pathname);  // the token leaves the address bar

// A name is shown as it is spelled: bidi controls (U+202E turns "a\u202Egpj.exe" into what reads
// "aexe.jpg") and control characters (newlines) appear as their code points, not as their effect.
const UNSEEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
function shown(text) {
  return String(text).replace(UNSEEN, (c) => `⟨U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`);
}
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

function passes(p) {
  switch (state.filter) {
    case "unrated": return p.rating === null;
    case "rejects": return p.rating === -1;
    case "picks": return p.picked;
    case "blurry": case "eyes-closed": case "face-soft": return p.flags.includes(state.filter);
    default: return true;
  }
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

function burstSize(group) { return state.photos.filter((p) => p.group === group).length; }

// What the grid shows, counted as the terminal counts it: photos, and the stacks they are in
// where bursts and near-duplicates are stacked ("23 stacks (30 photos)").
function counted() {
  const stacked = state.burst === null && !state.hits;
  const photos = stacked ? state.photos.filter(passes).length : state.view.length;
  const cells = state.view.length;
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  return cells === photos ? plural(photos, "photo") : `${plural(cells, "stack")} (${plural(photos, "photo")})`;
}

// --- drawing ---------------------------------------------------------------------------

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
    c.addEventListener("click", () => { const i = state.view.indexOf(p.id); if (i >= 0) select(i); });
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
  if (p.flags.length) b.append(el("span", "flag", p.flags.join(" ")));
  c.classList.toggle("reject", p.rating === -1);
  let s = c.querySelector(".stack");
  if (p.group !== null && state.burst === null) {
    if (!s) { s = el("span", "stack"); c.append(s); }
    s.textContent = `burst ×${burstSize(p.group)}`;
  } else if (s) s.remove();
}

function render() {
  state.view = computeView();
  if (state.cur >= state.view.length) state.cur = Math.max(0, state.view.length - 1);
  $("grid").replaceChildren(...state.view.map((id) => cellFor(state.byId.get(id))));
  const what = state.burst !== null ? `burst ${state.burst}` : state.hits ? "search results" : state.filter;
  status(`${counted()} · ${what}`);
  select(state.cur);
}

function current() { return state.byId.get(state.view[state.cur]); }

function select(i) {
  if (state.curCell) state.curCell.classList.remove("current");  // the view may have changed since
  state.cur = Math.max(0, Math.min(i, state.view.length - 1));
  const p = current();
  if (!p) { state.curCell = null; $("preview").removeAttribute("src"); return; }
  const c = state.cells.get(p.id);
  c.classList.add("current");
  state.curCell = c;
  c.scrollIntoView({ block: "nearest" });
  drawViewer(p);
  prefetch();
}

function drawViewer(p) {
  const comparing = state.burst !== null && state.view.length > 1;
  $("single").hidden = comparing || state.loupe;
  $("compare").hidden = !comparing || state.loupe;
  $("loupe").hidden = !state.loupe;
  if (state.loupe) {
    const full = $("full");
    full.onload = () => {  // 100%: one image pixel on one screen pixel
      full.style.width = full.naturalWidth / devicePixelRatio + "px";
      const box = $("loupe");
      box.scrollLeft = (box.scrollWidth - box.clientWidth) / 2;
      box.scrollTop = (box.scrollHeight - box.clientHeight) / 2;
    };
    full.src = imageUrl(p, "full");
  } else if (comparing) {
    const other = state.byId.get(state.view[state.cur + 1 < state.view.length ? state.cur + 1 : state.cur - 1]);
    $("left").src = imageUrl(p, "preview");
    $("left-name").textContent = `${shown(p.name)}  ${ratingText(p.rating)}`;
    $("right").src = imageUrl(other, "preview");
    $("right-name").textContent = `${shown(other.name)}  ${ratingText(other.rating)}`;
    $("left").parentElement.classList.add("current");
  } else {
    $("preview").src = imageUrl(p, "preview");
  }
  drawInfo(p);
  drawFaces(p);
}

// The faces beside the photo (the faces extra): each judged face of the photo close up, or for a
// burst its main face in every frame, in the burst's order; each with its eyes and focus.
function drawFaces(p) {
  const box = $("faces");
  let shown = [];
  if (p.group !== null) {
    const frames = state.photos.filter((q) => q.group === p.group).sort((a, b) => a.rank - b.rank);
    shown = frames.filter((q) => q.faces && q.faces.length).map((q) => [q, 0]);
  } else if (p.faces) {
    shown = p.faces.map((_, i) => [p, i]);
  }
  box.hidden = shown.length === 0;
  box.replaceChildren(...shown.map(([q, i]) => faceCard(q, i, p.group !== null && q.id === p.id)));
}

function faceCard(q, i, current) {
  const f = q.faces[i];
  const card = el("figure", "face" + (f.closed ? " closed" : "") + (f.soft ? " soft" : "") + (current ? " current" : ""));
  const img = el("img");
  img.alt = `face ${i + 1} of ${shown(q.name)}`;
  img.src = `face/${q.id}/${i}` + (q.v ? `?v=${encodeURIComponent(q.v)}` : "");
  const eyes = f.closed === null || f.closed === undefined ? "eyes ?"
    : `eyes ${f.closed ? "closed" : "open"} ${f.openness === null ? "" : f.openness.toFixed(2)}`.trim();
  const focus = `${f.soft ? "soft" : "sharp"} ${Math.round(f.focus)}`;
  card.append(img, el("figcaption", "", `${eyes} · ${focus}`));
  if (state.burst === null && q.group !== null) card.title = shown(q.name);
  card.addEventListener("click", () => { const k = state.view.indexOf(q.id); if (k >= 0) select(k); });
  return card;
}

function drawInfo(p) {
  $("info-name").textContent = p.folder ? `${shown(p.name)}  (${shown(p.folder)})` : shown(p.name);
  $("info-rank").textContent = `#${p.rank} · score ${p.score.toFixed(4)} · ${p.label}` +
    (p.group !== null ? ` · burst ${p.group}` : "") +
    (p.changed ? " · changed on disk since clipcull ranked it (the score is of the earlier photo)" : "");
  $("info-suggested").textContent = [stars(p.suggested), ...p.flags].filter(Boolean).join(" · ");
  $("info-yours").textContent = ratingText(p.rating) + (p.picked ? " · pick" : "") +
    (p.problem ? ` · ${shown(p.problem)}` : "");
  $("info-captured").textContent = (p.captured || "").replace("T", " ");
}

function prefetch() {
  for (let k = 1; k <= 3; k++) {
    const id = state.view[state.cur + k];
    if (id !== undefined) new Image().src = imageUrl(state.byId.get(id), "preview");
  }
}

function redraw(p) {
  const c = state.cells.get(p.id);
  if (c) drawBadges(p, c);
  if (current() && current().id === p.id) drawInfo(p);
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
  if (cur && (cur.id === p.id || (state.burst !== null && state.view.includes(p.id)))) drawViewer(cur);
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
  return `${shown(row.name)}: ${ratingText(row.rating)}${row.picked ? " · pick" : ""}`;
}

async function decide(action, value) {
  const p = current();
  if (!p) return;
  // What the photographer sees now: the server refuses the key if the disk holds something else.
  const seen = { v: p.v, gen: p.gen };
  const before = { rating: p.rating, picked: p.picked };
  if (action === "stars") p.rating = value;           // shown at once, confirmed by the server
  else if (action === "reject") p.rating = -1;
  else if (action === "clear") p.rating = null;
  else if (action === "pick") p.picked = !p.picked;
  redraw(p);
  try {
    const row = await api("api/decide", { id: p.id, action, value, ...seen });
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
    const row = await api("api/undo", {});
    if (row.nothing) { status("nothing to undo"); return; }
    apply(row);
    const i = state.view.indexOf(row.id);
    if (i >= 0) select(i);
    status(`undone: ${decisionText(row)}`);
  } catch (e) { status(`undo failed: ${shown(e.message)}`, true); }
}

async function moveRejects() {
  const n = state.photos.filter((p) => p.rating === -1).length;
  if (Date.now() - state.moveArmed > 3000) {
    state.moveArmed = Date.now();
    status(`press M again to move ${n} rejects to _rejects`);
    return;
  }
  state.moveArmed = 0;
  try {
    const r = await api("api/move-rejects", { since: state.rev });
    for (const row of r.changed) apply(row);  // a reject changed on disk since it was shown stays
    dropMoved(r.moved);
    const left = state.photos.filter((p) => p.rating === -1).length;
    status((r.run ? `moved ${r.moved.length} rejects (move run ${r.run}; clipcull undo puts them back)`
      : "no rejects to move") + (left ? `; ${left} changed on disk since shown, left in place` : ""));
  } catch (e) {
    if (e.data && e.data.moved) dropMoved(e.data.moved);  // stopped part way: those that went, go
    status(`move failed: ${shown(e.message)}`, true);
  }
}

function dropMoved(ids) {
  const moved = new Set(ids);
  state.photos = state.photos.filter((p) => !moved.has(p.id));
  for (const id of moved) { state.byId.delete(id); state.cells.delete(id); }
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
    render();
  } catch (e) { status(`search failed: ${shown(e.message)}`, true); }
}

function clearSearch() {
  $("search").value = "";
  if (state.hits) { state.hits = null; state.cur = 0; render(); }
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
    render();
    const i = state.view.findIndex((id) => state.byId.get(id).group === p.group);
    select(i >= 0 ? i : 0);
  } else if (p && p.group !== null) {
    state.burst = p.group;
    state.cur = 0;
    render();
  }
}

const KEYS = {
  ArrowRight: () => select(state.cur + 1), ArrowLeft: () => select(state.cur - 1),
  j: () => select(state.cur + 1), k: () => select(state.cur - 1),
  ArrowDown: () => select(state.cur + columns()), ArrowUp: () => select(state.cur - columns()),
  Home: () => select(0), End: () => select(state.view.length - 1),
  1: () => decide("stars", 1), 2: () => decide("stars", 2), 3: () => decide("stars", 3),
  4: () => decide("stars", 4), 5: () => decide("stars", 5), 0: () => decide("clear"),
  x: () => decide("reject"), p: () => decide("pick"), u: () => undo(),
  z: () => { state.loupe = !state.loupe; if (current()) drawViewer(current()); },
  " ": () => KEYS.z(),  // Space zooms, as in Lightroom
  Enter: toggleBurst,
  Escape: () => { if (state.loupe) KEYS.z(); else if (state.burst !== null) toggleBurst(); else clearSearch(); },
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

$("filter").addEventListener("change", (e) => { state.filter = e.target.value; state.cur = 0; e.target.blur(); render(); });
$("sort").addEventListener("change", (e) => { state.sort = e.target.value; state.cur = 0; e.target.blur(); render(); });
$("move").addEventListener("click", () => { state.moveArmed = Date.now(); moveRejects(); });
// A button never keeps the keyboard: Space after a click is the page's (zoom), not a second click.
for (const b of document.querySelectorAll("button")) {
  b.addEventListener("mousedown", (e) => e.preventDefault());
  b.addEventListener("click", () => b.blur());
}

(async function start() {
  try {
    const data = await api("api/photos");
    $("title").textContent = shown(data.title);
    state.photos = data.photos;
    state.rev = data.rev;
    for (const p of data.photos) state.byId.set(p.id, p);
    render();
    document.body.dataset.ready = "1";
  } catch (e) { status(`could not load the photos: ${shown(e.message)}`); }
})();
