// cxrkit viewer: upload X-rays to this server's /v1 API; show probabilities, triage and Grad-CAM.
// Plain JavaScript, no external resources: it works on a hospital network without internet.
"use strict";

const state = { model: null, results: [], key: sessionStorage.getItem("cxr-key") || "" };
const $ = (sel) => document.querySelector(sel);

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: "bad_response", message: `HTTP ${response.status}` };
  }
  if (response.status === 401) $("#keybox").hidden = false;
  if (!response.ok) throw Object.assign(new Error(body.message || `HTTP ${response.status}`), { body });
  return body;
}

async function loadModel() {
  try {
    state.model = await api("/v1/model");
    const m = state.model;
    const op = m.operating_point;
    $("#model").textContent =
      `${m.name} (${m.model}, ${m.labels.length} labels, engine ${m.engine}); triage flags at ` +
      `sensitivity ${(100 * op.target_sensitivity).toFixed(0)}% on validation`;
  } catch (err) {
    $("#model").textContent = `model not loaded: ${err.message}`;
  }
}

function uploadForm(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return form;
}

async function predict(item) {
  // one request: probabilities, the preview and the top finding's heatmap
  const out = await api("/v1/predict?preview=true&heatmap=top", { method: "POST", body: uploadForm(item.file) });
  item.heatmaps[out.heatmap.label] = out.heatmap.png_base64;
  return out;
}

async function heatmap(item, label) {
  if (!item.heatmaps[label]) {
    const query = `/v1/predict?heatmap=${encodeURIComponent(label)}`;
    const out = await api(query, { method: "POST", body: uploadForm(item.file) });
    item.heatmaps[label] = out.heatmap.png_base64;
  }
  return item.heatmaps[label];
}

function bars(result) {
  const probs = Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]);
  const grid = el("div", { class: "bars", "data-testid": "bars" });
  for (const [label, p] of probs) {
    const t = result.thresholds[label];
    const fill = el("div", { class: "fill" + (p >= t ? " pos" : ""), style: `width:${(100 * p).toFixed(1)}%` });
    const mark = el("div", { class: "mark", style: `left:${(100 * t).toFixed(1)}%`, title: `threshold ${t.toFixed(3)}` });
    grid.append(el("span", {}, label), el("div", { class: "bar", "data-label": label }, fill, mark),
      el("span", {}, p.toFixed(3)));
  }
  return grid;
}

function flag(text) {
  return el("span", { class: `flag ${text}` }, text);
}

function card(item) {
  const r = item.result;
  const node = el("article", { class: "card", id: `card-${item.id}` });
  if (!r) {
    node.append(el("div", {}, el("h3", {}, item.file.name), flag("error"),
      el("p", { class: "error-msg" }, item.error)));
    return node;
  }
  const base = el("img", { alt: `${item.file.name}`, src: `data:image/png;base64,${r.preview_png_base64}` });
  const overlay = el("img", { class: "overlay", alt: "Grad-CAM overlay", hidden: "" });
  const view = el("div", { class: "view" }, base, overlay);
  const buttons = el("div", { class: "labels" });
  const toggle = el("label", {}, el("input", { type: "checkbox", checked: "" }), " heatmap");
  const status = el("span", { class: "muted" });
  const show = async (label) => {
    for (const b of buttons.children) b.classList.toggle("on", b.dataset.label === label);
    status.textContent = `computing ${label}…`;
    try {
      overlay.src = `data:image/png;base64,${await heatmap(item, label)}`;
      overlay.hidden = !toggle.querySelector("input").checked;
      status.textContent = `Grad-CAM: ${label}`;
    } catch (err) {
      status.textContent = `heatmap failed: ${err.message}`;
    }
  };
  const order = Object.entries(r.probabilities).sort((a, b) => b[1] - a[1]).map(([l]) => l);
  for (const label of order.filter((l) => l !== "No Finding")) {
    buttons.append(el("button", { type: "button", "data-label": label, onclick: () => show(label) }, label));
  }
  toggle.querySelector("input").addEventListener("change", (e) => { overlay.hidden = !e.target.checked; });
  const left = el("div", {}, view, el("div", {}, toggle, " ", status), buttons);
  const right = el("div", {},
    el("h3", {}, item.file.name),
    r.ood && !r.ood.in_distribution
      ? el("p", { class: "banner ood", role: "alert" },
        `Out of distribution — read this study manually: ${r.ood.reason}`)
      : "",
    el("p", {}, "triage: ", flag(r.triage.flag), ` score ${r.triage.score.toFixed(3)} (threshold ${r.triage.threshold.toFixed(3)})`),
    el("p", { class: "muted" }, `top findings: ${r.top_findings.join(", ") || "none"}; bars: probability, `
      + "mark: the label's threshold (chosen on validation)"),
    bars(r));
  node.append(left, right);
  show(r.heatmap.label);
  return node;
}

function worklist() {
  const rows = [...state.results].sort((a, b) => urgency(b) - urgency(a));
  const body = $("#worklist tbody");
  body.replaceChildren();
  rows.forEach((item, k) => {
    const r = item.result;
    body.append(el("tr", { onclick: () => $(`#card-${item.id}`).scrollIntoView({ behavior: "smooth" }) },
      el("td", {}, k + 1), el("td", {}, item.file.name),
      el("td", {}, flag(r ? r.triage.flag : "error")),
      el("td", {}, r ? r.triage.score.toFixed(3) : ""),
      el("td", {}, r ? r.top_findings.join(", ") : item.error)));
  });
  $("#worklist-section").hidden = rows.length === 0;
}

function urgency(item) {
  return item.result ? item.result.triage.score : 2; // unreadable files first: a person must look
}

function csvCell(v) {
  let s = String(v ?? "");
  if (/^[=+\-@]/.test(s) && typeof v === "string") s = "'" + s; // no spreadsheet formulas from file names
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportCsv() {
  const labels = state.model ? state.model.labels : [];
  const lines = [["rank", "file", "triage_flag", "triage_score", "top_findings", "error", ...labels].join(",")];
  [...state.results].sort((a, b) => urgency(b) - urgency(a)).forEach((item, k) => {
    const r = item.result;
    lines.push([k + 1, item.file.name, r ? r.triage.flag : "error", r ? r.triage.score : "",
      r ? r.top_findings.join("; ") : "", item.error || "",
      ...labels.map((l) => (r ? r.probabilities[l] : ""))].map(csvCell).join(","));
  });
  const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  const a = el("a", { href: url, download: "worklist.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

async function handle(files) {
  for (const file of files) {
    const item = { id: state.results.length, file, heatmaps: {}, result: null, error: "" };
    state.results.push(item);
    try {
      item.result = await predict(item);
    } catch (err) {
      item.error = err.message;
    }
    $("#cards").append(card(item));
    worklist();
  }
}

function init() {
  const drop = $("#drop");
  $("#files").addEventListener("change", (e) => handle([...e.target.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    handle([...e.dataTransfer.files]);
  });
  $("#csv").addEventListener("click", exportCsv);
  $("#apikey").value = state.key;
  $("#apikey").addEventListener("change", (e) => {
    state.key = e.target.value.trim();
    sessionStorage.setItem("cxr-key", state.key);
    loadModel();
  });
  loadModel();
}

init();
