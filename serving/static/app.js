// MoMu search page: plain DOM, no framework. Text from the server is inserted with textContent; drawings are
// parsed as SVG documents and imported (never through innerHTML), so nothing in a response can run as script.
"use strict";

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem("momu-api-key") || "";

async function post(path, body) {
  const headers = {"Content-Type": "application/json"};
  if (apiKey) headers["x-api-key"] = apiKey;
  const response = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok) {
    if (response.status === 401) $("key-section").hidden = false;
    const details = payload && payload.detail ? payload.detail.map(d => (d.field ? d.field + ": " : "") + d.reason) : [];
    throw new Error(details.join("; ") || `HTTP ${response.status}`);
  }
  return payload;
}

function svgNode(svgText) {
  if (!svgText) return null;
  const doc = new DOMParser().parseFromString(svgText, "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.nodeName.toLowerCase() !== "svg" || doc.getElementsByTagName("parsererror").length) return null;
  for (const bad of Array.from(root.querySelectorAll("script, foreignObject"))) bad.remove();
  return document.importNode(root, true);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

async function searchMolecules(event) {
  event.preventDefault();
  const query = $("query").value;
  const k = parseInt($("k").value, 10) || 10;
  const status = $("text-status");
  const results = $("molecule-results");
  status.textContent = "searching…";
  status.classList.remove("error");
  $("search-button").disabled = true;
  const started = performance.now();
  try {
    const data = await post("/v1/search/molecules", {query, k, draw: true});
    results.replaceChildren();
    for (const hit of data.results) {
      const card = el("figure", "molecule");
      card.dataset.id = hit.id;
      const drawing = svgNode(hit.svg);
      if (drawing) card.appendChild(drawing);
      const caption = el("figcaption");
      caption.appendChild(el("span", "rank", `#${hit.rank}`));
      caption.appendChild(el("span", "score", hit.score.toFixed(3)));
      caption.appendChild(el("span", "mol-id", hit.id));
      caption.appendChild(el("code", "smiles", hit.smiles));
      card.appendChild(caption);
      results.appendChild(card);
    }
    const ms = Math.round(performance.now() - started);
    status.textContent = `${data.results.length} of ${data.index_size.toLocaleString()} molecules (${ms} ms)`;
  } catch (err) {
    results.replaceChildren();
    status.textContent = err.message;
    status.classList.add("error");
  } finally {
    $("search-button").disabled = false;
  }
}

async function searchTexts(event) {
  event.preventDefault();
  const smiles = $("smiles").value;
  const status = $("smiles-status");
  const results = $("text-results");
  status.textContent = "searching…";
  status.classList.remove("error");
  $("smiles-button").disabled = true;
  try {
    const data = await post("/v1/search/texts", {smiles, k: 5, draw: true});
    results.replaceChildren();
    const head = el("div", "query-molecule");
    const drawing = svgNode(data.svg);
    if (drawing) head.appendChild(drawing);
    head.appendChild(el("code", "smiles", data.smiles));
    results.appendChild(head);
    const list = el("ol", "texts");
    for (const hit of data.results) {
      const item = el("li");
      item.appendChild(el("span", "score", hit.score.toFixed(3)));
      item.appendChild(el("span", "mol-id", hit.id));
      item.appendChild(el("p", "description", hit.text));
      list.appendChild(item);
    }
    results.appendChild(list);
    status.textContent = `${data.results.length} of ${data.index_size.toLocaleString()} descriptions`;
  } catch (err) {
    results.replaceChildren();
    status.textContent = err.message;
    status.classList.add("error");
  } finally {
    $("smiles-button").disabled = false;
  }
}

async function captionMolecule(event) {
  event.preventDefault();
  const smiles = $("caption-smiles").value;
  const status = $("caption-status");
  const result = $("caption-result");
  status.textContent = "captioning…";
  status.classList.remove("error");
  $("caption-button").disabled = true;
  try {
    const data = await post("/v1/caption", {smiles: [smiles], k: 1, draw: true});
    const item = data.results[0];
    result.replaceChildren();
    if (item.error) throw new Error((item.error.field ? item.error.field + ": " : "") + item.error.reason);
    const pair = el("div", "caption-pair");
    const query = el("figure", "molecule query-molecule");
    const queryDrawing = svgNode(item.svg);
    if (queryDrawing) query.appendChild(queryDrawing);
    const queryCaption = el("figcaption");
    queryCaption.appendChild(el("span", "rank", "query"));
    queryCaption.appendChild(el("code", "smiles", item.smiles));
    query.appendChild(queryCaption);
    pair.appendChild(query);
    const best = item.neighbours[0];
    const neighbour = el("figure", "molecule neighbour");
    neighbour.dataset.id = best.id;
    const neighbourDrawing = svgNode(best.svg);
    if (neighbourDrawing) neighbour.appendChild(neighbourDrawing);
    const neighbourCaption = el("figcaption");
    neighbourCaption.appendChild(el("span", "rank", "nearest known molecule"));
    neighbourCaption.appendChild(el("span", "score", best.similarity.toFixed(3)));
    neighbourCaption.appendChild(el("span", "mol-id", best.id));
    neighbourCaption.appendChild(el("code", "smiles", best.smiles));
    neighbour.appendChild(neighbourCaption);
    pair.appendChild(neighbour);
    result.appendChild(pair);
    result.appendChild(el("p", "caption-label", `${item.label} (${item.captioner}, ${item.similarity_kind})`));
    result.appendChild(el("blockquote", "caption-text", item.caption));
    status.textContent = `caption from ${best.id}, similarity ${best.similarity.toFixed(3)} ` +
      `(pool of ${data.pool_size.toLocaleString()} molecules)`;
  } catch (err) {
    result.replaceChildren();
    status.textContent = err.message;
    status.classList.add("error");
  } finally {
    $("caption-button").disabled = false;
  }
}

async function generateMolecules(event) {
  event.preventDefault();
  const text = $("generate-text").value;
  const edit = $("generate-edit").value.trim();
  const n = parseInt($("generate-n").value, 10) || 6;
  const status = $("generate-status");
  const results = $("generate-results");
  status.textContent = "generating… (a search takes up to its time budget)";
  status.classList.remove("error");
  $("generate-button").disabled = true;
  try {
    const body = {text, n, draw: true};
    if (edit) body.edit = edit;
    const data = await post("/v1/generate", body);
    results.replaceChildren();
    for (const molecule of data.molecules) {
      const card = el("figure", "molecule generated");
      card.dataset.smiles = molecule.smiles;
      const drawing = svgNode(molecule.svg);
      if (drawing) card.appendChild(drawing);
      const caption = el("figcaption");
      const label = data.mode === "edit" ? `λ ${molecule.lambda}` : `#${molecule.rank}`;
      caption.appendChild(el("span", "rank", label));
      const score = el("span", "score", molecule.score.toFixed(3));
      score.title = "score: MoMu cosine + 0.3 QED - 0.3 (SA-1)/9 - size penalty";
      caption.appendChild(score);
      caption.appendChild(el("span", "mol-id", `cosine ${molecule.cosine.toFixed(3)}`));
      if (data.mode === "edit") caption.appendChild(el("span", "mol-id", `Tanimoto ${molecule.tanimoto.toFixed(2)}`));
      else if (molecule.from_pool) caption.appendChild(el("span", "mol-id", "from the pool"));
      caption.appendChild(el("code", "smiles", molecule.smiles));
      card.appendChild(caption);
      results.appendChild(card);
    }
    const what = data.mode === "edit" ? `best per lambda for editing ${data.edit}` : `${data.molecules.length} molecules`;
    status.textContent = `${what}: ${data.evaluations.toLocaleString()} evaluations in ${data.seconds.toFixed(1)} s ` +
      `(budget ${data.budget_seconds} s, stopped by ${data.stopped_by.split(",").join(", ")}; ${data.method})`;
  } catch (err) {
    results.replaceChildren();
    status.textContent = err.message;
    status.classList.add("error");
  } finally {
    $("generate-button").disabled = false;
  }
}

async function showModel() {
  try {
    const headers = apiKey ? {"x-api-key": apiKey} : {};
    const response = await fetch("/v1/models", {headers});
    if (response.status === 401) { $("key-section").hidden = false; $("model-line").textContent = ""; return; }
    const data = await response.json();
    const parts = [`model ${data.model.name} (${data.model.version})`];
    for (const [name, info] of Object.entries(data.indexes)) parts.push(`${info.size.toLocaleString()} ${name}`);
    if (data.captioner) parts.push(`caption pool ${data.captioner.pool_size.toLocaleString()} (${data.captioner.kind})`);
    if (data.generator) parts.push(`generation from a pool of ${data.generator.pool_size.toLocaleString()} ` +
                                   `(up to ${data.generator.max_seconds} s)`);
    $("model-line").textContent = parts.join(" · ");
  } catch (err) {
    $("model-line").textContent = "";
  }
}

$("text-form").addEventListener("submit", searchMolecules);
$("smiles-form").addEventListener("submit", searchTexts);
$("caption-form").addEventListener("submit", captionMolecule);
$("generate-form").addEventListener("submit", generateMolecules);
$("key-button").addEventListener("click", () => {
  apiKey = $("api-key").value;
  sessionStorage.setItem("momu-api-key", apiKey);
  $("key-section").hidden = true;
  showModel();
});
showModel();
