// socialfeat explorer: plain JS, no build step. Every text from the run goes in with textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { offset: 0, query: "", split: "all", health: null, searchTimer: null, uploadSeq: 0, lastFile: null, vocabulary: [] };
const HEAD_HOW = "— users most likely to engage, from the learned factors head";
const FIELDS = { title: "item-title", text: "item-text", tags: "item-tags" };

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// A request's failure as a sentence a person understands (the API's JSON "detail", else the HTTP status).
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error("the server cannot be reached; is `socialfeat serve` still running?");
  }
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(`${detail} (HTTP ${response.status})`);
  }
  return body;
}

const enc = encodeURIComponent;
const thumb = (id, size = 160) => `/api/items/${enc(id)}/thumbnail?size=${size}`;

function showError(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = !message;
}

function setStatus(node, message, kind = "") {
  node.className = "status " + kind;
  node.textContent = message;
}

function card(item, extra = {}) {
  const img = el("img", { src: thumb(item.id), alt: item.title || item.id, loading: "lazy", width: 150, height: 150 });
  img.addEventListener("error", () => { img.removeAttribute("src"); img.alt = "no image"; }, { once: true });
  const badges = el("span");
  if (item.split === "cold") badges.append(el("span", { class: "badge cold", text: "cold", title: "never trained on" }));
  if (item.split === "live") badges.append(el("span", { class: "badge live", text: "live", title: "added since the batch run" }));
  if (extra.shared) badges.append(el("span", { class: "badge shared", text: "both", title: "also a neighbour under the other features" }));
  if (extra.factors) badges.append(el("span", { class: "badge", text: extra.factors === "predicted" ? "predicted" : "warm" }));
  const sub = el("span", { class: "sub" }, [
    el("span", { text: item.score !== undefined ? `${item.rank}. ${Number(item.score).toFixed(3)}` : item.id }),
    badges,
  ]);
  const link = el("a", { class: "card", href: `#item/${enc(item.id)}`, title: `${item.title} (${item.id})`, "data-id": item.id }, [
    img,
    el("span", { class: "cap" }, [el("span", { class: "title", text: item.title || item.id }), sub]),
  ]);
  return link;
}

function fill(container, items, options = {}) {
  container.replaceChildren();
  if (!items.length) {
    container.append(el("p", { class: "empty", text: options.empty || "nothing to show" }));
    return;
  }
  const shared = options.shared || new Set();
  for (const item of items) container.append(card(item, { shared: shared.has(item.id), factors: item.factors }));
}

function loading(container, message) {
  container.replaceChildren(el("p", { class: "status loading", text: message }));
}

function audienceList(list, users) {
  list.replaceChildren();
  const top = users.length ? Math.max(...users.map((u) => u.score), 1e-9) : 1;
  for (const u of users) {
    const width = Math.max(2, Math.round(60 * Math.max(0, u.score) / top));
    const bar = el("span", { class: "bar" });
    bar.style.width = `${width}px`;
    list.append(el("li", { title: `score ${u.score.toFixed(4)}` }, [el("span", { text: String(u.user_id) }), bar]));
  }
}

// ------------------------------------------------------------------------------------------------ views
function show(view) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  const tab = view === "detail" ? "browse" : view;
  for (const a of document.querySelectorAll("nav .tab")) a.classList.toggle("active", a.dataset.tab === tab);
}

async function route() {
  showError("");
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("item/")) return openItem(hash.slice(5));
  if (hash === "upload") return show("upload");
  if (hash.startsWith("user")) {
    show("user");
    const id = hash.slice(5);
    if (id) { $("user-id").value = id; recommend(id); }
    return;
  }
  show("browse");
  if (!$("grid").childElementCount) loadItems(false);
}

async function loadHealth() {
  try {
    const h = await api("/api/health");
    state.health = h;
    const sources = Object.keys(h.sources).join(" and ");
    $("run-info").textContent =
      `run “${h.run}”: ${h.items.toLocaleString()} items (${h.cold.toLocaleString()} cold), ` +
      `${h.users.toLocaleString()} users, features: ${sources}` +
      (h.live && h.live.items ? `; ${h.live.items.toLocaleString()} added live` : "");
    if (!h.audience) $("run-info").textContent += " — no audience predictions: " + (h.audience_note || "");
    if (h.content && h.content.present && h.content.fields.length && h.audience) offerFields(h.content);
  } catch (e) {
    $("run-info").textContent = "";
    showError("The run could not be loaded: " + e.message);
  }
}

// The sources of a content model or score: each one's share in a late fusion, or the sources of one joint ridge.
const share = (c) => c.weights
  ? Object.entries(c.weights).map(([s, w]) => `${s} ${Math.round(100 * w)}%`).join(" · ")
  : `${c.sources.join(" + ")}, one joint ridge`;

// The run has a content model: offer the fields it reads, say which sources it fuses, suggest its tags.
async function offerFields(content) {
  for (const [field, input] of Object.entries(FIELDS)) $(input).parentElement.hidden = !content.fields.includes(field);
  $("describe-note").textContent =
    `Optional: describe the item too and its audience comes from the content model (${share(content)}).`;
  $("describe").hidden = false;
  if (!content.fields.includes("tags")) return;
  try { state.vocabulary = (await api("/api/content")).vocabulary || []; } catch (e) { /* suggestions are a convenience */ }
}

// Suggestions for the tag being typed (after the last comma), completed into the whole field's value.
function suggestTags() {
  const value = $("item-tags").value;
  const cut = value.lastIndexOf(",") + 1;
  const head = value.slice(0, cut) + (cut ? " " : "");
  const part = value.slice(cut).trim().toLowerCase();
  const found = state.vocabulary.filter((t) => t.startsWith(part)).slice(0, 20);
  $("tag-list").replaceChildren(...found.map((t) => el("option", { value: head + t })));
}

function describedFields(form) {
  if ($("describe").hidden) return [];
  const given = [];
  for (const [field, input] of Object.entries(FIELDS)) {
    const value = $(input).value;
    if (!$(input).parentElement.hidden && value.trim()) { form.append(field, value); given.push(field); }
  }
  return given;
}

function showContent(content) {
  const note = $("upload-content");
  const notes = $("upload-notes");
  notes.replaceChildren(...(content ? content.notes : []).map((n) => el("li", { text: n })));
  note.hidden = !content;
  $("upload-how").textContent = content ? "— users most likely to engage, from the content model" : HEAD_HOW;
  note.textContent = content ? `scored from ${share(content)}` : "";
}

async function loadItems(append) {
  const grid = $("grid");
  if (!append) { state.offset = 0; loading(grid, "loading items…"); }
  const params = new URLSearchParams({ q: state.query, split: state.split, offset: state.offset });
  try {
    const page = await api(`/api/items?${params}`);
    if (!append) grid.replaceChildren();
    if (!page.items.length && !append) grid.append(el("p", { class: "empty", text: `no item matches “${state.query}”` }));
    for (const item of page.items) grid.append(card(item));
    state.offset += page.items.length;
    $("count").textContent = `${page.total.toLocaleString()} items`;
    $("more").hidden = state.offset >= page.total;
  } catch (e) {
    grid.replaceChildren();
    showError("Items could not be loaded: " + e.message);
  }
}

async function openItem(id) {
  show("detail");
  window.scrollTo(0, 0);
  const k = $("detail-k").value;
  $("detail-title").textContent = id;
  $("detail-meta").textContent = "loading…";
  $("detail-tags").replaceChildren();
  $("detail-image").src = thumb(id, 320);
  $("detail-image").alt = id;
  $("detail-audience-box").hidden = true;
  loading($("similar-learned"), "finding neighbours…");
  loading($("similar-imagenet"), "finding neighbours…");
  try {
    const item = await api(`/api/items/${enc(id)}?k=10`);
    $("detail-title").textContent = item.title;
    const splits = { cold: "cold — never trained on", live: "live — added since the batch run" };
    const split = splits[item.split] || item.split || "";
    const users = item.n_users !== null ? `${item.n_users.toLocaleString()} users engaged` : "";
    $("detail-meta").textContent = [`id ${item.id}`, split, users].filter(Boolean).join(" · ");
    for (const tag of item.tags) $("detail-tags").append(el("span", { text: tag }));
    if (item.predicted_audience) {
      audienceList($("detail-audience"), item.predicted_audience);
      $("detail-audience-box").hidden = false;
    }
  } catch (e) {
    $("detail-meta").textContent = "";
    $("similar-learned").replaceChildren();
    $("similar-imagenet").replaceChildren();
    showError(`Item “${id}”: ${e.message}`);
    return;
  }
  const sources = Object.keys((state.health || { sources: { learned: 1, imagenet: 1 } }).sources);
  const results = {};
  await Promise.all(["learned", "imagenet"].map(async (source) => {
    const box = $(`similar-${source}`);
    if (!sources.includes(source)) {
      box.replaceChildren(el("p", { class: "empty", text: `this run has no ${source} features` }));
      return;
    }
    try {
      results[source] = (await api(`/api/items/${enc(id)}/similar?k=${k}&source=${source}`)).similar;
    } catch (e) {
      box.replaceChildren(el("p", { class: "error", text: e.message }));
    }
  }));
  const ids = (s) => new Set((results[s] || []).map((x) => x.id));
  const both = new Set([...ids("learned")].filter((x) => ids("imagenet").has(x)));
  for (const source of Object.keys(results)) fill($(`similar-${source}`), results[source], { shared: both });
}

// ---------------------------------------------------------------------------------------------- upload
async function upload(file) {
  const status = $("upload-status");
  const seq = ++state.uploadSeq;
  $("upload-results").hidden = true;
  if (!file) return;
  state.lastFile = file;
  $("rescore").disabled = false;
  if (!file.type.startsWith("image/") && file.type) {
    setStatus(status, `“${file.name}” does not look like an image (${file.type}); the server will check its content.`, "muted");
  }
  setStatus(status, `embedding “${file.name}” (${(file.size / 1e6).toFixed(2)} MB)…`, "loading");
  const form = new FormData();
  form.append("image", file);
  const described = describedFields(form);
  const sources = Object.keys((state.health || { sources: { learned: 1 } }).sources);
  const params = new URLSearchParams({ k: 12 });
  for (const s of sources) params.append("source", s);
  try {
    const result = await api(`/api/upload?${params}`, { method: "POST", body: form });
    if (seq !== state.uploadSeq) return; // a newer upload replaced this one
    const preview = $("upload-preview");
    if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    const shared = new Set((result.similar.learned || []).map((x) => x.id)
      .filter((x) => (result.similar.imagenet || []).some((y) => y.id === x)));
    for (const source of ["learned", "imagenet"]) {
      fill($(`upload-${source}`), result.similar[source] || [], { empty: `no ${source} features in this run`, shared });
    }
    if (result.audience) audienceList($("upload-audience"), result.audience);
    else $("upload-audience").replaceChildren();
    $("upload-audience-note").textContent = result.audience ? "" : result.audience_note || "";
    showContent(result.content);
    $("upload-results").hidden = false;
    const withFields = described.length ? ` with its ${described.join(", ")}` : "";
    setStatus(status, `“${file.name}”${withFields}: done in ${result.ms} ms`, "muted");
  } catch (e) {
    if (seq !== state.uploadSeq) return;
    setStatus(status, `“${file.name}” could not be used: ${e.message}`, "error");
  }
}

// ------------------------------------------------------------------------------------------------- user
async function recommend(id) {
  const status = $("user-status");
  setStatus(status, `ranking items for ${id}…`, "loading");
  $("user-grid").replaceChildren();
  const params = new URLSearchParams({ user: id, k: 24, include_seen: $("user-seen").checked });
  try {
    const result = await api(`/api/recommendations?${params}`); // a query carries any id: "..", "/", newlines
    fill($("user-grid"), result.items, { empty: "nothing left to recommend" });
    const cold = result.items.filter((x) => x.factors === "predicted").length;
    setStatus(status, `${result.items.length} items for ${id}; ${cold} of them cold (scored from their pixels)`, "muted");
  } catch (e) {
    setStatus(status, e.message, "error");
  }
}

async function suggestUsers(q) {
  try {
    const { users } = await api(`/api/users?${new URLSearchParams({ q, limit: 20 })}`);
    $("user-list").replaceChildren(...users.map((u) => el("option", { value: u })));
  } catch (e) { /* suggestions are a convenience */ }
}

// ------------------------------------------------------------------------------------------------- wiring
function wire() {
  window.addEventListener("hashchange", route);
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); });
  $("search").addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => { state.query = $("search").value; loadItems(false); }, 200);
  });
  $("split").addEventListener("change", () => { state.split = $("split").value; loadItems(false); });
  $("more").addEventListener("click", () => loadItems(true));
  $("detail-k").addEventListener("change", () => route());
  const drop = $("drop");
  $("file").addEventListener("change", () => upload($("file").files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) upload(file);
  });
  $("describe").addEventListener("submit", (e) => {
    e.preventDefault();
    if (state.lastFile) upload(state.lastFile);
  });
  $("item-tags").addEventListener("input", suggestTags);
  $("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("user-id").value.trim();
    if (!id) return;
    if (location.hash === `#user/${enc(id)}`) recommend(id);
    else location.hash = `user/${enc(id)}`;
  });
  $("user-id").addEventListener("input", () => suggestUsers($("user-id").value));
}

wire();
loadHealth().then(() => {
  const h = state.health;
  if (h && h.max_upload_bytes) $("upload-limit").textContent = `up to ${(h.max_upload_bytes / 1e6).toFixed(0)} MB`;
  suggestUsers("");
  route();
});
