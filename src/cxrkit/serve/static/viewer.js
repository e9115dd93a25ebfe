// cxrkit viewer: upload X-rays to this server's /v1 API; read them large, with honest heatmaps and numbers.
// Plain JavaScript, no external resources: it works on a hospital network without internet. Every number
// shown comes from the API's answers (/v1/model, /v1/predict, /v1/feedback), none is typed here.
"use strict";

const state = { model: null, results: [], current: null, key: sessionStorage.getItem("cxr-key") || "" };
const $ = (sel) => document.querySelector(sel);
const RULES = {
  max_f1: "max F1 on validation",
  max_f3: "max F3 on validation",
  youden: "Youden's J on validation",
  "0.5": "fixed 0.5 (the run stores no tuned thresholds)",
};
const pct = (x) => `${(100 * x).toFixed(0)}%`;
const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? "—" : Number(x).toFixed(d));

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== "") {
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
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

// ---- the model: summary line, warnings, model card ------------------------------------------------
async function loadModel() {
  try {
    state.model = await api("/v1/model");
  } catch (err) {
    $("#model").textContent = `model not loaded: ${err.message}`;
    return;
  }
  const m = state.model;
  const op = m.operating_point;
  $("#model").textContent = `${m.name} (${m.model}, ${m.labels.length} labels, engine ${m.engine}); `
    + `triage flags at sensitivity ${pct(op.target_sensitivity)} on validation`;
  $("#warnings").replaceChildren(...m.warnings.map((w) => el("p", { class: "banner warn", role: "alert" }, w)));
  $("#card-body").replaceChildren(modelCard(m));
}

function modelCard(m) {
  const v = m.validation || {};
  const op = m.operating_point;
  const d = m.data || {};
  const ci = v.macro_auc_ci;
  const rows = [
    ["model", `${m.model} (run ${m.name}, digest ${m.digest})`],
    ["validation macro AUC", `${fmt(v.macro_auc)}` + (ci ? ` (${pct(v.ci_level)} CI ${fmt(ci[0])}–${fmt(ci[1])}, `
      + `${v.n_boot} ${v.bootstrap_unit} bootstrap)` : " (no interval stored)") + ` on ${v.images} images`],
    ["triage operating point", `score ≥ ${fmt(op.threshold)}: sensitivity ${fmt(op.val_sensitivity)}, `
      + `specificity ${fmt(op.val_specificity)} on ${op.val_images} validation images `
      + `(target ${pct(op.target_sensitivity)}${op.reached ? "" : ", NOT reached"})`],
    ["borderline band", m.borderline_band ? `${fmt(m.borderline_band[0])}–${fmt(m.borderline_band[1])} `
      + `(${pct(v.ci_level)} bootstrap interval of the threshold)` : "not stored"],
    ["per-label thresholds", RULES[m.threshold_rule] || m.threshold_rule],
    ["calibration", `temperature scaling; ECE ${fmt(v.ece_before)} → ${fmt(v.ece_after)} on validation`],
    ["training data", d.source ? `${d.source}${d.synthetic ? " (synthetic)" : ""}: `
      + ["train", "val", "test"].filter((s) => d[s]).map((s) => `${s} ${d[s].images} images`
        + (d[s].patients ? ` / ${d[s].patients} patients` : "")).join(", ") : "not stored"],
    ["intended use", "research tool output, not a diagnostic device"],
  ];
  const table = el("table", { class: "facts", "data-testid": "model-card" });
  for (const [k, val] of rows) table.append(el("tr", {}, el("th", {}, k), el("td", {}, val)));
  if (d.prevalence) {
    const prev = Object.entries(d.prevalence).filter(([, p]) => p !== null).sort((a, b) => b[1] - a[1]);
    table.append(el("tr", {}, el("th", {}, "prevalence in training"),
      el("td", {}, prev.map(([l, p]) => `${l} ${pct(p)}`).join(", "))));
  }
  return table;
}

// what a probability has meant on held-out (validation) studies, from the run's reliability bins
function meaning(label, p) {
  const rel = state.model && state.model.validation && state.model.validation.reliability;
  const bins = rel && rel.bins && rel.bins[label];
  if (!bins) return "no reliability data stored for this run (`cxr package RUN` adds it)";
  // the bin the server counted it in: [low, high), the last one closed (edges as stored, unrounded)
  const bin = bins.find(([lo, hi], k) => p >= lo && (p < hi || k === bins.length - 1));
  if (!bin) return `no reliability bin holds ${fmt(p)}`;
  const [lo, hi, n, pos] = bin;
  const range = `${lo.toFixed(1)}–${hi.toFixed(1)}`;
  if (!n) return `no validation study was scored ${range} for ${label}: this probability has no track record`;
  return `of ${n} validation studies scored ${range}, ${pos} (${pct(pos / n)}) had ${label}`;
}

// ---- uploads and the worklist ----------------------------------------------------------------------
function uploadForm(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  return form;
}

async function heatmap(item, label) {
  if (!item.heatmaps[label]) {
    const out = await api(`/v1/predict?layer=true&heatmap=${encodeURIComponent(label)}`,
      { method: "POST", body: uploadForm(item.file) });
    item.heatmaps[label] = out.heatmap;
  }
  return item.heatmaps[label];
}

function urgency(item) {
  if (!item.result) return 3; // unreadable: a person must look
  if (item.result.triage.flag === "out of distribution") return 2;
  return item.result.triage.score;
}

function ordered() {
  return [...state.results].sort((a, b) => urgency(b) - urgency(a) || a.id - b.id);
}

function flag(text) {
  return el("span", { class: `flag ${text.replace(/ /g, "-")}` }, text);
}

function worklist() {
  const body = $("#worklist tbody");
  body.replaceChildren();
  ordered().forEach((item, k) => {
    const r = item.result;
    body.append(el("tr", {
      class: item === state.current ? "selected" : "", "data-id": item.id, onclick: () => openStudy(item),
    }, el("td", {}, k + 1), el("td", { class: "file", title: item.file.name }, item.file.name),
    el("td", {}, flag(r ? r.triage.flag : "error"), r && r.triage.borderline ? el("span", { class: "tag" }, "borderline") : ""),
    el("td", {}, r ? fmt(r.triage.score) : "")));
  });
  $("#worklist-section").hidden = state.results.length === 0;
}

function step(delta) {
  const list = ordered();
  if (!list.length) return;
  const k = state.current ? list.indexOf(state.current) : -1;
  openStudy(list[Math.min(list.length - 1, Math.max(0, k + delta))]);
}

async function handle(files) {
  for (const file of files) {
    const item = { id: state.results.length, file, heatmaps: {}, result: null, error: "" };
    state.results.push(item);
    try {
      item.result = await api("/v1/predict?display=true&layer=true&heatmap=top",
        { method: "POST", body: uploadForm(file) });
      item.heatmaps[item.result.heatmap.label] = item.result.heatmap;
    } catch (err) {
      item.error = err.message;
    }
    worklist();
    if (!state.current) await openStudy(item);
  }
}

// ---- one study in the reading view --------------------------------------------------------------------
function presets(item) {
  const d = item.result.display;
  const out = d.windows.map((w) => ({ name: w.name + (d.source === "dicom" ? " (from the file)" : ""),
    center: w.center, width: w.width }));
  out.push({ name: "full range", center: 127.5, width: 255 });
  if (!d.windows.length) { // no window in the file: presets from this film's own histogram
    const q = (x) => view.quantile(x);
    const band = (name, a, b) => ({ name: `${name} (auto)`, center: (q(a) + q(b)) / 2, width: Math.max(8, q(b) - q(a)) });
    out.push(band("lung", 0.02, 0.6), band("mediastinum", 0.35, 0.98), band("bone", 0.6, 1.0));
  }
  return out;
}

async function openStudy(item) {
  state.current = item;
  worklist();
  const panel = $("#study");
  if (!item.result) {
    $("#reading").hidden = true;
    panel.replaceChildren(el("h2", { class: "name" }, item.file.name), flag("error"),
      el("p", { class: "error-msg" }, item.error), el("p", {}, "Read this study manually."));
    return;
  }
  const r = item.result;
  $("#reading").hidden = false;
  await view.load(r.display.png_base64, r.display.width, r.display.height);
  if (state.current !== item) return; // the reader moved on while the film decoded
  const list = presets(item);
  const select = $("#preset");
  select.replaceChildren(...list.map((p, k) => el("option", { value: k }, `${k + 1}. ${p.name}`)));
  const first = list[0];
  view.v.invert = false;
  view.setWindow(first.center, first.width);
  view.fit();
  panel.replaceChildren(...studyPanel(item));
  // by default a map is shown only for a suspected finding of a study like the training images
  await showHeat(item, r.heatmap.label, r.heatmap.above_threshold && r.ood.in_distribution);
}

async function showHeat(item, label, visible) {
  $("#heat-label").value = label;
  const caption = $("#caption");
  caption.textContent = `computing ${label}…`;
  try {
    const h = await heatmap(item, label);
    if (state.current !== item) return;
    $("#heat").src = `data:image/png;base64,${h.png_base64}`;
    setHeatVisible(visible);
    const ood = !item.result.ood.in_distribution;
    caption.textContent = ood ? `Out of distribution: no finding can be suggested; the ${label} map (hidden `
      + `by default) is where the model looked, not a finding (${h.caption}).`
      : h.above_threshold ? `Grad-CAM, ${label} (p ${fmt(h.probability)} ≥ threshold ${fmt(h.threshold)}): ${h.caption}.`
      : `${label} is not suspected (p ${fmt(h.probability)} < threshold ${fmt(h.threshold)}): `
        + `the map is hidden by default; shown, it is where the model looked, not a finding (${h.caption}).`;
  } catch (err) {
    caption.textContent = `heatmap failed: ${err.message}`;
  }
}

function setHeatVisible(on) {
  $("#heat").classList.toggle("off", !on);
  $("#heat-on").checked = on;
}

function studyPanel(item) {
  const r = item.result;
  const h = r.header || {};
  const title = [h.modality, h.view, h.study_date].filter(Boolean).join(" · ") || "study";
  const t = r.triage;
  const out = [el("h2", {}, title), el("p", { class: "muted name" }, item.file.name)];
  if (r.ood && !r.ood.in_distribution) {
    out.push(el("p", { class: "banner ood", role: "alert" }, `Out of distribution — read this study manually: ${r.ood.reason}`));
  }
  out.push(el("p", { class: "triage" }, "triage: ", flag(t.flag), ` score ${fmt(t.score)} `
    + `(threshold ${fmt(t.threshold)}, chosen for sensitivity ${pct(t.target_sensitivity)} on validation)`));
  if (t.borderline) {
    out.push(el("p", { class: "banner borderline", "data-testid": "borderline" }, `Borderline: the score lies within `
      + `${fmt(t.band[0])}–${fmt(t.band[1])}, the ${pct(state.model.validation.ci_level)} bootstrap interval of `
      + "the threshold; validation cannot call "
      + "this study either way."));
  }
  out.push(findings(item));
  out.push(headerPanel(r.header || {}));
  out.push(feedbackForm(item));
  return out;
}

function findings(item) {
  const r = item.result;
  const rule = RULES[state.model.threshold_rule] || state.model.threshold_rule;
  const box = el("section", { class: "findings" }, el("h3", {}, "Findings"),
    el("p", { class: "muted" }, `bar: calibrated probability; mark: the label's threshold (${rule}). `
      + "Hover or tap a finding for what its probability has meant; click its name for its heatmap."));
  const grid = el("div", { class: "bars", "data-testid": "bars" });
  const said = el("p", { class: "meaning", "data-testid": "meaning" });
  for (const [label, p] of Object.entries(r.probabilities).sort((a, b) => b[1] - a[1])) {
    const th = r.thresholds[label];
    const text = meaning(label, p);
    const name = label === "No Finding" ? el("span", {}, label)
      : el("button", { type: "button", class: "link", "data-label": label, onclick: () => showHeat(item, label, true) }, label);
    const bar = el("div", { class: "bar", "data-label": label, title: text, onclick: () => { said.textContent = text; } },
      el("div", { class: "fill" + (p >= th ? " pos" : ""), style: `width:${(100 * p).toFixed(1)}%` }),
      el("div", { class: "mark", style: `left:${(100 * th).toFixed(1)}%` }));
    grid.append(name, bar, el("span", { title: `threshold ${fmt(th)} (${rule})` }, `${fmt(p, 2)} / ${fmt(th, 2)}`));
  }
  box.append(grid, said);
  return box;
}

function headerPanel(h) {
  const names = { modality: "modality", view: "view position", age: "age", sex: "sex", study_date: "study date",
    study_description: "study", body_part: "body part", manufacturer: "manufacturer", model: "model",
    patient_name: "patient name", patient_id: "patient ID" };
  const table = el("table", { class: "facts", "data-testid": "header" });
  for (const [k, label] of Object.entries(names)) if (h[k]) table.append(el("tr", {}, el("th", {}, label), el("td", {}, h[k])));
  return el("section", {}, el("h3", {}, "DICOM header"),
    Object.keys(h).length ? table : el("p", { class: "muted" }, "no DICOM header (PNG/JPEG upload)"));
}

function feedbackForm(item) {
  const box = el("section", { class: "feedback" }, el("h3", {}, "Your verdict"));
  if (!state.model.feedback) {
    box.append(el("p", { class: "muted" }, "Feedback is off on this server (start it with --feedback DB)."));
    return box;
  }
  const r = item.result;
  const choice = (name, value, text) => el("label", {}, el("input", { type: "radio", name, value }), ` ${text} `);
  const tri = `tri-${item.id}`;
  box.append(el("p", {}, `The flag "${r.triage.flag}": `, choice(tri, "agree", "agree"), choice(tri, "disagree", "disagree")));
  const grid = el("div", { class: "verdicts" });
  for (const label of state.model.labels.filter((l) => l !== "No Finding")) {
    grid.append(el("span", {}, label), el("select", { "data-label": label },
      ...["", "present", "absent", "unsure"].map((v) => el("option", { value: v }, v || "—"))));
  }
  const comment = el("textarea", { maxlength: 2000, rows: 2, placeholder: "comment (optional; no patient names)" });
  const status = el("p", { class: "muted", "data-testid": "feedback-status" });
  const send = async () => {
    const picked = box.querySelector(`input[name=${tri}]:checked`);
    const body = { study: r.study, triage: picked ? picked.value : null, findings: {}, comment: comment.value };
    for (const s of grid.querySelectorAll("select")) if (s.value) body.findings[s.dataset.label] = s.value;
    try {
      const saved = await api("/v1/feedback", { method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json" } });
      const back = await api("/v1/feedback?limit=50");
      const row = back.feedback.find((f) => f.id === saved.id);
      status.textContent = row ? `saved ${row.time}: triage ${row.triage || "—"}, `
        + `${Object.keys(row.findings).length} finding(s)` : "saved, but not found when read back";
    } catch (err) {
      status.textContent = `not saved: ${err.message}`;
    }
  };
  box.append(grid, comment, el("button", { type: "button", id: "send-feedback", onclick: send }, "Save verdict"), status);
  return box;
}

// ---- wiring --------------------------------------------------------------------------------------------
let view = null;

function readout(v) {
  // a DICOM's window in its own values (the display's 0..255 spans value_range), else display units
  const d = state.current && state.current.result && state.current.result.display;
  let w = v.width, c = v.center, unit = "";
  if (d && d.source === "dicom") {
    const [lo, hi] = d.value_range, k = (hi - lo) / 255;
    w = v.width * k;
    c = lo + (d.inverted ? 255 - v.center : v.center) * k;
    unit = " (file values)";
  }
  $("#readout").textContent = `zoom ${pct(v.scale)} · window ${fmt(w, 0)} / level ${fmt(c, 0)}${unit}`
    + (v.invert ? " · inverted" : "");
}

function init() {
  view = new window.ReadingView($("#viewport"), readout);
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
  $("#preset").addEventListener("change", (e) => applyPreset(Number(e.target.value)));
  $("#invert").addEventListener("click", toggleInvert);
  $("#fit").addEventListener("click", () => view.fit());
  $("#tool").addEventListener("click", toggleTool);
  $("#heat-on").addEventListener("change", (e) => setHeatVisible(e.target.checked));
  $("#opacity").addEventListener("input", (e) => { $("#heat").style.opacity = e.target.value / 100; });
  $("#heat-label").addEventListener("change", (e) => state.current && showHeat(state.current, e.target.value, true));
  document.addEventListener("keydown", keys);
  loadModel().then(() => {
    const labels = state.model ? state.model.labels.filter((l) => l !== "No Finding") : [];
    $("#heat-label").replaceChildren(...labels.map((l) => el("option", { value: l }, l)));
  });
}

function applyPreset(k) {
  if (!state.current || !state.current.result) return;
  const p = presets(state.current)[k];
  if (!p) return;
  $("#preset").value = k;
  view.setWindow(p.center, p.width);
}

function toggleInvert() {
  view.v.invert = !view.v.invert;
  view.draw();
}

function toggleTool() {
  view.tool = view.tool === "pan" ? "wl" : "pan";
  $("#tool").textContent = view.tool === "pan" ? "drag: pan" : "drag: window/level";
}

function keys(e) {
  const a = document.activeElement;
  const typing = a.tagName === "TEXTAREA" || (a.tagName === "INPUT" && ["text", "password", "search"].includes(a.type));
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return; // letters typed into a field stay there
  const arrows = a.tagName === "SELECT" || (a.tagName === "INPUT" && ["range", "radio"].includes(a.type));
  if (arrows && e.key.startsWith("Arrow")) return; // arrows move the option, slider or radio; j/k still walk
  const actions = {
    ArrowDown: () => step(1), j: () => step(1), ArrowUp: () => step(-1), k: () => step(-1),
    i: toggleInvert, f: () => view.fit(), h: () => setHeatVisible($("#heat").classList.contains("off")),
    w: toggleTool,
  };
  if (/^[1-9]$/.test(e.key)) applyPreset(Number(e.key) - 1);
  else if (actions[e.key]) actions[e.key]();
  else return;
  e.preventDefault();
}

function csvCell(v) {
  let s = String(v ?? "");
  if (/^[=+\-@]/.test(s) && typeof v === "string") s = "'" + s; // no spreadsheet formulas from file names
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportCsv() {
  const labels = state.model ? state.model.labels : [];
  const lines = [["rank", "file", "triage_flag", "triage_score", "borderline", "top_findings", "error", ...labels].join(",")];
  ordered().forEach((item, k) => {
    const r = item.result;
    lines.push([k + 1, item.file.name, r ? r.triage.flag : "error", r ? r.triage.score : "",
      r ? r.triage.borderline : "", r ? r.top_findings.join("; ") : "", item.error || "",
      ...labels.map((l) => (r ? r.probabilities[l] : ""))].map(csvCell).join(","));
  });
  const url = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
  const a = el("a", { href: url, download: "worklist.csv" });
  document.body.append(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

init();
