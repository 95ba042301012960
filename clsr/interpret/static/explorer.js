// The clsr concept explorer page. Plain JS, no dependencies: every request goes to this server's /api.
"use strict";

const state = { query: "", k: 10, steering: {}, lastHits: null, queryConcepts: [], activeChip: null, info: null,
                infoLoaded: null };
const $ = (selector, root = document) => root.querySelector(selector);
const SEGMENTS = 8;  // concepts drawn as their own bar segments; the rest form one grey "other" segment

// Chips and sliders show a description's first few keywords and contrast words ("; not: ..."); the full one is in
// the tooltip and on the concept page.
function short(description, words = 4, contrastWords = 2) {
  const text = description || "";
  const marker = /^(broad|unclear): /.exec(text);
  const rest = marker ? text.slice(marker[0].length) : text;
  const [positive, contrast] = rest.split("; not: ");
  const first = (part, n) => {
    const parts = part.split(", ");
    return parts.slice(0, n).join(", ") + (parts.length > n ? ", …" : "");
  };
  return (marker ? marker[0] : "") + first(positive, words) + (contrast ? "; not: " + first(contrast, contrastWords) : "");
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function colour(concept) {
  // A stable colour per concept, so one concept looks the same in every bar and chip.
  let h = 0;
  for (const c of concept) h = (h * 31 + c.charCodeAt(0)) % 360;
  return `hsl(${(h * 137) % 360}, 62%, 58%)`;
}

async function api(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach(v => url.searchParams.append(key, v));
    else if (value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

function showError(error) {
  const box = $("#error");
  box.hidden = !error;
  box.textContent = error ? error.message || String(error) : "";
}

function steerParams() {
  return Object.entries(state.steering).map(([concept, factor]) => `${concept}=${factor}`);
}

// The words that drive a concept most are highlighted, more strongly the more they drive it; words below a
// fifth of the strongest are left plain, so the eye goes to the evidence rather than to every positive word.
const HIGHLIGHT_FLOOR = 0.2;
function highlight(text, words) {
  const top = Math.max(...(words || []).map(w => w.score), 1e-9);
  const shown = (words || []).filter(w => w.score > 0 && w.score >= HIGHLIGHT_FLOOR * top);
  let html = "", last = 0;
  for (const w of [...shown].sort((a, b) => a.start - b.start)) {
    html += escapeHtml(text.slice(last, w.start));
    const alpha = (0.2 + 0.8 * w.score / top).toFixed(2);
    html += `<mark style="background: rgba(245, 158, 11, ${alpha})" title="${w.score.toFixed(4)}">` +
            `${escapeHtml(text.slice(w.start, w.end))}</mark>`;
    last = w.end;
  }
  return html + escapeHtml(text.slice(last));
}

async function loadInfo() {
  state.info = await api("/api/info");
  const i = state.info;
  $("#info").textContent = `${i.index} · ${i.documents} passages · doc K ${i.doc_k} · query K ${i.query_k} · ` +
    `SAE ${i.sae}${i.described ? "" : " · no descriptions (run clsr describe)"}`;
}

// The page's state lives in its URL, so a view can be linked to, bookmarked and reloaded:
// /?q=QUERY&k=K&steer=cID=FACTOR...#concept/cID. A hand-written /#q=QUERY&k=K works too.
function stateUrl() {
  const url = new URL(window.location.href);
  url.search = "";
  if (state.query) url.searchParams.set("q", state.query);
  if (state.query && state.k !== 10) url.searchParams.set("k", state.k);
  for (const item of steerParams()) url.searchParams.append("steer", item);
  if (url.hash.startsWith("#q=")) url.hash = "#search";
  return url;
}

function saveState(push = false) {
  const url = stateUrl();
  if (url.href !== window.location.href) {
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }
  shownSearch = window.location.search;
}

function loadState() {
  const params = new URLSearchParams(window.location.search);
  if (window.location.hash.startsWith("#q=")) {
    for (const [key, value] of new URLSearchParams(window.location.hash.slice(1))) params.append(key, value);
  }
  state.query = (params.get("q") || "").trim();
  state.k = parseInt(params.get("k") || "10", 10) || 10;
  state.steering = {};
  for (const item of params.getAll("steer")) {
    const at = item.lastIndexOf("=");
    const factor = parseFloat(item.slice(at + 1));
    if (at > 0 && Number.isFinite(factor)) state.steering[item.slice(0, at)] = factor;
  }
  $("#query").value = state.query;
  const select = $("#k");
  if (![...select.options].some(o => o.value === String(state.k))) select.add(new Option(String(state.k)));
  select.value = String(state.k);
}

async function search() {
  if (!state.query) return;
  saveState();
  showError(null);
  $("#status").textContent = "searching...";
  try {
    const result = await api("/api/search", { q: state.query, k: state.k, steer: steerParams() });
    await state.infoLoaded;  // the sliders' range comes from /api/info
    state.lastHits = result.hits;
    state.queryConcepts = result.query_concepts;
    renderQuery(result);
    renderHits(result);
    $("#status").textContent = `${result.hits.length} hits in ${result.took_ms} ms` +
      (Object.keys(state.steering).length ? " · steered: " + steerParams().join(", ") : "");
    if ($("#compare-toggle").checked) await compare();
  } catch (error) {
    showError(error);
    $("#status").textContent = "";
  }
}

function renderQuery(result) {
  $("#query-panel").hidden = false;
  $("#query-text").textContent = result.query;
  const shown = new Map(result.query_concepts.slice(0, 12).map(c => [c.concept, c]));
  // Steered concepts stay on screen even when suppressed (a suppressed concept leaves the query).
  for (const concept of Object.keys(state.steering)) {
    if (!shown.has(concept)) shown.set(concept, { concept, weight: 0, description: "" });
  }
  const [low, high] = state.info.steer_range;  // what the API accepts (STEER_RANGE in explorer.py)
  $("#sliders").innerHTML = [...shown.values()].map(c => {
    const factor = state.steering[c.concept] ?? 1;
    return `<div class="slider" data-concept="${c.concept}">
      <span class="swatch" style="background:${colour(c.concept)};width:10px;height:10px;display:inline-block"></span>
      <a href="#concept/${c.concept}">${c.concept}</a>
      <input type="range" min="${low}" max="${high}" step="0.25" value="${factor}" aria-label="steer ${c.concept}">
      <span class="factor">×${factor}</span>
      <span class="desc" title="${escapeHtml(c.description)}">${escapeHtml(short(c.description))}</span></div>`;
  }).join("");
  for (const row of document.querySelectorAll("#sliders .slider")) {
    const input = $("input", row), concept = row.dataset.concept;
    input.addEventListener("input", () => { $(".factor", row).textContent = `×${input.value}`; });
    input.addEventListener("change", () => {
      const value = parseFloat(input.value);
      if (value === 1) delete state.steering[concept]; else state.steering[concept] = value;
      search();
    });
  }
}

function movedBadge(hit) {
  if (!("previous_rank" in hit)) return `<span class="moved"></span>`;
  if (hit.previous_rank === null) return `<span class="moved new" title="not in the unsteered top 100">new</span>`;
  const delta = hit.previous_rank - hit.rank;
  if (delta > 0) return `<span class="moved up" title="was ${hit.previous_rank}">▲${delta}</span>`;
  if (delta < 0) return `<span class="moved down" title="was ${hit.previous_rank}">▼${-delta}</span>`;
  return `<span class="moved" title="unchanged">=</span>`;
}

function renderHits(result) {
  $("#hits").innerHTML = result.hits.map(hit => {
    const shown = hit.concepts.slice(0, SEGMENTS);
    const rest = hit.concepts.slice(SEGMENTS).reduce((sum, c) => sum + c.contribution, 0);
    const segments = shown.map(c =>
      `<div class="seg${c.kind === "word" ? " word" : ""}" data-concept="${c.concept}" data-contribution="${c.contribution}"
            style="width:${100 * c.contribution / hit.score}%;background:${c.kind === "word" ? "#64748b" : colour(c.concept)}"
            title="${c.concept} ${c.query_weight}×${c.doc_weight} = ${c.contribution}: ${escapeHtml(c.description)}"></div>`)
      .join("") + (rest ? `<div class="seg other" data-contribution="${rest}" style="width:${100 * rest / hit.score}%"
            title="${hit.concepts.length - SEGMENTS} more concepts: ${rest}"></div>` : "");
    // In the order a person reads evidence: the words the hit shares, then its specific concepts, then its broad
    // ones folded into one chip with their share of the score.
    const share = value => `${(100 * value / hit.score).toFixed(1)}%`;
    const words = hit.concepts.filter(c => c.kind === "word");
    const specific = hit.concepts.filter(c => c.kind === "specific");
    const broad = hit.concepts.filter(c => c.kind === "broad");
    const wordChips = words.slice(0, 8).map(c =>
      `<span class="chip word" title="the word ${escapeHtml(c.concept.slice(2))}: ${c.query_weight}×${c.doc_weight} = ${c.contribution}">
         ${escapeHtml(c.concept.slice(2))} <span class="muted">${share(c.contribution)}</span></span>`).join("");
    const conceptChips = specific.slice(0, 5).map(c =>
      `<span class="chip" data-concept="${c.concept}"
             title="${c.query_weight}×${c.doc_weight} = ${c.contribution}: ${escapeHtml(c.description || "")}">
         <span class="swatch" style="background:${colour(c.concept)}"></span>${c.concept}
         <span>${escapeHtml(short(c.description))}</span>
         <a class="concept-link" href="#concept/${c.concept}" title="concept page">↗</a></span>`).join("");
    const broadCarried = broad.reduce((sum, c) => sum + c.contribution, 0);
    const broadChip = broad.length ? `<span class="chip broad" title="${broad.length} broad concepts (each fires on a fifth of the passages or more): ${escapeHtml(broad.slice(0, 5).map(c => `${c.concept} ${c.description}`).join("; "))}">
         ${broad.length} broad concept${broad.length > 1 ? "s" : ""} <span class="muted">${share(broadCarried)}</span></span>` : "";
    const chips = wordChips + conceptChips + broadChip;
    return `<li class="hit" data-docid="${escapeHtml(hit.docid)}">
      <div class="hit-head"><span class="rank">${hit.rank}</span>${movedBadge(hit)}
        <span class="title">${escapeHtml(hit.title)}</span><span class="muted">${escapeHtml(hit.docid)}</span>
        <span class="score">${hit.score}</span></div>
      <div class="snippet">${escapeHtml(hit.snippet)}</div>
      <div class="bar">${segments}</div>
      <div class="chips">${chips}</div></li>`;
  }).join("");
  for (const chip of document.querySelectorAll("#hits .chip[data-concept]")) {
    chip.addEventListener("click", event => {
      if (event.target.closest("a")) return;  // the ↗ link opens the concept page instead
      showEvidence(chip);
    });
  }
}

async function showEvidence(chip) {
  const hit = chip.closest(".hit"), concept = chip.dataset.concept;
  document.querySelectorAll(".chip.active").forEach(c => c.classList.remove("active"));
  chip.classList.add("active");
  try {
    const evidence = await api("/api/evidence", { concept, q: state.query, docid: hit.dataset.docid });
    $("#query-text").innerHTML = highlight(evidence.query_text, evidence.query.words);
    $(".snippet", hit).innerHTML = highlight(evidence.document_text, evidence.document.words);
  } catch (error) { showError(error); }
}

async function compare() {
  const box = $("#compare");
  box.hidden = false;
  box.innerHTML = `<span class="muted">comparing...</span>`;
  const result = await api("/api/compare", { q: state.query, k: state.k });
  const all = Object.values(result.methods).map(list => new Set(list.map(h => h.docid)));
  const inAll = docid => all.every(set => set.has(docid));
  box.innerHTML = `<h2>Same query, every method <span class="muted">(green: in every list; hybrid α = ${result.alpha})</span></h2>
    <div class="columns">` + Object.entries(result.methods).map(([name, hits]) =>
      `<div class="method" data-method="${name}"><h2>${name}</h2><ol>` + hits.map(h =>
        `<li class="${inAll(h.docid) ? "shared" : ""}" title="${escapeHtml(h.snippet)}">${escapeHtml(h.title)}
           <span class="muted">${escapeHtml(h.docid)} · ${h.score}</span></li>`).join("") + `</ol></div>`).join("") +
    `</div>`;
}

async function addConcept(words) {
  try {
    const found = await api("/api/concepts", { match: words });
    $("#add-concept-results").innerHTML = found.concepts.length ? found.concepts.map(c =>
      `<span class="chip add" data-concept="${c.concept}"><span class="swatch" style="background:${colour(c.concept)}"></span>
       ${c.concept} ${escapeHtml(short(c.description, 6))} <span class="muted">df ${c.df}</span> <b>+ boost</b></span>`).join(" ")
      : `<span class="muted">no concept description matches "${escapeHtml(words)}"</span>`;
    for (const chip of document.querySelectorAll("#add-concept-results .chip")) {
      chip.addEventListener("click", () => { state.steering[chip.dataset.concept] = 2; search(); });
    }
  } catch (error) { showError(error); }
}

async function showConcept(term) {
  $("#search-view").hidden = true;
  const view = $("#concept-view");
  view.hidden = false;
  view.innerHTML = `<section><span class="muted">loading ${escapeHtml(term)}...</span></section>`;
  try {
    const c = await api(`/api/concepts/${encodeURIComponent(term)}`);
    const counts = c.histogram.counts, edges = c.histogram.edges, top = Math.max(...counts, 1);
    const width = 560, height = 140, barWidth = width / Math.max(counts.length, 1);
    const bars = counts.map((n, i) => `<rect x="${i * barWidth + 1}" y="${height - 20 - (height - 30) * n / top}"
        width="${barWidth - 2}" height="${(height - 30) * n / top}"><title>${edges[i]}–${edges[i + 1]}: ${n}</title></rect>`).join("");
    const axis = edges.length ? `<text x="0" y="${height - 5}">${edges[0].toFixed(3)}</text>
        <text x="${width - 40}" y="${height - 5}">${edges[edges.length - 1].toFixed(3)}</text>` : "";
    view.innerHTML = `<section>
      <p><a href="#search">← back to the results</a></p>
      <h2 id="concept-title"><span class="swatch" style="background:${colour(c.concept)};width:12px;height:12px;display:inline-block"></span>
        ${c.concept}: ${escapeHtml(c.description || "(no description)")}</h2>
      <div class="facts"><span>df <b>${c.df}</b> (${(100 * c.df_share).toFixed(1)}% of passages)</span>
        <span>region <b>${c.region}</b></span><span>rank <b>${c.rank}</b></span>
        <span>mean activation <b>${c.mean_activation}</b></span><span>max <b>${c.max_activation}</b></span>
        ${c.label ? `<span title="how well the label predicts the concept on this corpus (ROC AUC; its words read by the ${c.label.simulator || "keyword-count"} simulator)">label ${c.label.kind}:
          AUC fires <b>${c.label.auc_fires}</b>, strong <b>${c.label.auc_strong}</b>${c.label.count_auc_fires != null ?
          ` (keyword count: ${c.label.count_auc_fires} / ${c.label.count_auc_strong})` : ""}</span>` : ""}
        ${c.inherited ? `<span title="kept through adaptation: the concept's decoder direction stayed above cosine 0.9">description
          inherited from SAE <b>${escapeHtml((c.described_with || {}).sae || "?")}</b>; this corpus has not described it</span>` : ""}
        ${c.description ? `<span class="muted">words strongest evidence first</span>` : ""}</div>
      <h2>Activation histogram <span class="muted">(passages where it is in the top-K code)</span></h2>
      <svg class="histogram" width="${width}" height="${height}">${bars}${axis}</svg>
      <p><button id="boost-this">Boost this concept in the current query</button></p>
      <h2>Top passages <span class="muted">(highlighted: the words that drive this concept)</span></h2>
      ${c.top_passages.map(p => `<div class="passage" data-docid="${escapeHtml(p.docid)}"><b>${escapeHtml(p.title)}</b>
        <span class="muted">${escapeHtml(p.docid)} · activation ${p.activation}</span>
        <div class="evidence-text">${highlight(p.text, p.words)}</div></div>`).join("")}
      </section>`;
    $("#boost-this").addEventListener("click", () => {
      state.steering[c.concept] = 2;
      window.location.hash = "#search";
      search();
    });
  } catch (error) {
    view.innerHTML = `<section><p><a href="#search">← back</a></p></section>`;
    showError(error);
  }
}

function route() {
  const hash = window.location.hash;
  if (hash.startsWith("#concept/")) {
    showConcept(decodeURIComponent(hash.slice("#concept/".length)));
  } else {
    $("#concept-view").hidden = true;
    $("#search-view").hidden = false;
  }
}

$("#search-form").addEventListener("submit", event => {
  event.preventDefault();
  const query = $("#query").value.trim();
  if (query !== state.query) state.steering = {};  // a new query starts unsteered
  state.query = query;
  state.k = parseInt($("#k").value, 10);
  if (window.location.hash.startsWith("#concept/")) window.location.hash = "#search";
  if (!query) { showError(new Error("the query is empty")); return; }
  saveState(true);  // a new entry in the history: Back returns to the previous search
  search();
});
$("#compare-toggle").addEventListener("change", () => {
  if ($("#compare-toggle").checked && state.query) compare().catch(showError);
  else $("#compare").hidden = true;
});
$("#add-concept-form").addEventListener("submit", event => {
  event.preventDefault();
  addConcept($("#add-concept").value);
});
window.addEventListener("hashchange", route);
// Back and Forward between searches; a move between the results and a concept page is hashchange's.
let shownSearch = window.location.search;
window.addEventListener("popstate", () => {
  if (window.location.search === shownSearch) return;
  loadState();
  route();
  search();
});
state.infoLoaded = loadInfo().catch(showError);
loadState();
route();
search();
