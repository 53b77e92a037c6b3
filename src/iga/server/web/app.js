// The page of `iga serve`: presets first, the guard's verdicts inline, provenance one click away.
// Plain script, no build step; it only speaks the /iga/v1 contract (notes/api-contract.md).
"use strict";

const API = "/iga/v1";
const TERMINAL = new Set(["done", "failed", "cancelled"]);

const state = {
  token: null,
  models: [],
  model: null,        // the ModelSummary (plus samplers/schedules) shown now
  preset: null,       // the selected preset's name, or null for the recipe's defaults
  job: null,          // {id, kind: "generate"|"replay", source, events, poll}
  lastBody: null,     // the request a refusal answered, resent by the override form
  gallery: [],
  shown: null,        // name of the gallery image open in the detail panel
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c);
  }
  return node;
}

// --- status line and HTTP --------------------------------------------------------------------------------------

function setStatus(text, kind) {
  const s = $("status");
  s.textContent = text || "";
  s.className = kind || "";
}

class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// FastAPI-style validation errors carry a list in `detail`; turn either form into one readable line.
function detailText(body, status) {
  const d = body && body.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d.map((e) => {
      const where = Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "";
      return (where ? where + ": " : "") + (e.msg || JSON.stringify(e));
    }).join("; ");
  }
  return `the server answered HTTP ${status}`;
}

async function api(method, path, body) {
  const headers = {Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (state.token) headers.Authorization = "Bearer " + state.token;
  let resp;
  try {
    resp = await fetch(API + path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (e) {
    throw new ApiError(0, null, "The server cannot be reached (" + e.message + "); is `iga serve` still running?");
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = {detail: text.slice(0, 300)}; }
  }
  if (!resp.ok) {
    let msg = detailText(data, resp.status);
    if (resp.status === 503) {
      const after = resp.headers.get("Retry-After");
      msg = "The queue is full" + (after ? `; try again in ${after} s` : "; try again shortly") + ". " +
            (typeof (data && data.detail) === "string" ? data.detail : "");
    } else if (resp.status === 401 || resp.status === 403) {
      msg += " (open the page as /?token=YOUR_TOKEN when the server was started with --token)";
    }
    throw new ApiError(resp.status, data, msg.trim());
  }
  return data;
}

// <img> cannot send an Authorization header, so with a token the bytes are fetched and shown from a blob URL.
const blobCache = new Map();
async function imageSrc(url) {
  if (!state.token) return url;
  if (blobCache.has(url)) return blobCache.get(url);
  const resp = await fetch(url, {headers: {Authorization: "Bearer " + state.token}});
  if (!resp.ok) throw new ApiError(resp.status, null, `The image ${url} could not be loaded (HTTP ${resp.status}).`);
  const src = URL.createObjectURL(await resp.blob());
  blobCache.set(url, src);
  return src;
}

function report(e) {
  setStatus(e instanceof Error ? e.message : String(e), "error");
}

// --- models, presets and the advanced knobs ---------------------------------------------------------------------

async function loadModels() {
  const data = await api("GET", "/models");
  state.models = data.models || [];
  const sel = $("model");
  sel.replaceChildren();
  for (const m of state.models) {
    const label = m.name + (m.has_recipe ? "" : " (no recipe)") + (m.loaded ? " · loaded" : "");
    sel.append(el("option", {value: m.id, text: label}));
  }
  const current = state.models.some((m) => m.id === data.current) ? data.current : (state.models[0] || {}).id;
  if (current === undefined) {
    setStatus("The server knows no models: start it with a model, or add one with `iga` first.", "error");
    return;
  }
  sel.value = current;
  await selectModel(current);
}

async function selectModel(id) {
  const m = await api("GET", "/models/" + encodeURIComponent(id));
  state.model = m;
  const recipe = m.recipe;
  state.preset = recipe && recipe.default_preset && (recipe.presets || []).some((p) => p.name === recipe.default_preset)
    ? recipe.default_preset : null;
  $("model-note").textContent = [m.architecture, m.weights_sha256 ? "sha256 " + m.weights_sha256.slice(0, 12) : null]
    .filter(Boolean).join(" · ");
  $("no-recipe").hidden = !!(m.has_recipe && recipe);
  renderPresets();
  renderKnobs();
  hideRefusal();
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "time not measured yet";
  return s < 10 ? `≈${s.toFixed(1)} s` : `≈${Math.round(s)} s`;
}

function renderPresets() {
  const box = $("presets");
  box.replaceChildren();
  const recipe = state.model && state.model.recipe;
  const presets = (recipe && recipe.presets) || [];
  if (recipe && presets.length === 0) {
    box.append(el("p", {class: "note", text: "The recipe defines no presets: its defaults are used."}));
  }
  for (const p of presets) {
    const selected = p.name === state.preset;
    const card = el("button", {
      type: "button", class: "card" + (selected ? " selected" : ""), "data-preset": p.name,
      "aria-pressed": selected ? "true" : "false",
      onclick: () => choosePreset(p.name),
    },
      el("span", {class: "card-name", text: p.name + (p.name === recipe.default_preset ? " · default" : "")}),
      el("span", {class: "card-desc", text: p.description || ""}),
      el("span", {class: "card-facts"},
        el("span", {text: `${p.steps} steps`}),
        el("span", {text: `${p.nfe} model calls`}),
        el("span", {text: fmtSeconds(p.expected_seconds)})),
    );
    box.append(card);
  }
}

function choosePreset(name) {
  // A second click on the selected card falls back to the recipe's own defaults.
  state.preset = state.preset === name ? null : name;
  for (const card of document.querySelectorAll("#presets .card")) {
    const on = card.dataset.preset === state.preset;
    card.classList.toggle("selected", on);
    card.setAttribute("aria-pressed", on ? "true" : "false");
  }
  renderKnobs();
}

function currentPreset() {
  const recipe = state.model && state.model.recipe;
  return (recipe && (recipe.presets || []).find((p) => p.name === state.preset)) || null;
}

const STATUS_MARK = {recipe: " (recipe)", override: " (override)", forbidden: " (forbidden)", allowed: ""};

function fillChoice(kind, items, recipeValue, presetValue) {
  const sel = $(kind);
  const keep = sel.value;
  sel.replaceChildren(el("option", {value: "", text: "from the " + (presetValue ? "preset" : "recipe") +
    (presetValue || recipeValue ? ` (${presetValue || recipeValue})` : "")}));
  const forbidden = [];
  for (const it of items || []) {
    const sameName = it.label && it.label.toLowerCase() === it.name.toLowerCase();
    const text = it.name + (it.label && !sameName ? ` — ${it.label}` : "") + (STATUS_MARK[it.status] || "");
    const opt = el("option", {value: it.name, text, class: "st-" + it.status, "data-status": it.status,
                              title: it.reason || null, disabled: it.status === "forbidden"});
    if (it.reason) opt.dataset.reason = it.reason;
    sel.append(opt);
    if (it.status === "forbidden") forbidden.push(it);
  }
  sel.value = [...sel.options].some((o) => o.value === keep && !o.disabled) ? keep : "";
  const list = $(kind + "-forbidden");
  list.textContent = forbidden.length
    ? "Not available: " + forbidden.map((f) => `${f.name}${f.reason ? " — " + f.reason : ""}`).join("; ")
    : "";
  describeChoice(kind);
}

function describeChoice(kind) {
  const opt = $(kind).selectedOptions[0];
  const note = $(kind + "-note");
  if (!opt || !opt.value) { note.textContent = ""; return; }
  const st = opt.dataset.status;
  const why = opt.dataset.reason || "";
  note.textContent = st === "override" ? "a deviation: needs an override with a reason" + (why ? " — " + why : "")
    : st === "recipe" ? "the recipe's own" : why;
  note.className = "hint" + (st === "override" ? " warn" : "");
}

function rangeText(r) {
  if (!r) return "";
  const has = (v) => v !== null && v !== undefined;
  const span = has(r.min) && has(r.max) ? `${r.min}–${r.max}`
    : has(r.min) ? `≥ ${r.min}` : has(r.max) ? `≤ ${r.max}` : "any";
  return `recipe: ${span}` + (has(r.default) ? `, default ${r.default}` : "");
}

function renderKnobs() {
  const m = state.model;
  const recipe = m && m.recipe;
  const p = currentPreset();
  const put = (field, text) => { document.querySelector(`[data-range="${field}"]`).textContent = text; };
  fillChoice("sampler", m && m.samplers, recipe && recipe.sampler, p && p.sampler);
  fillChoice("schedule", m && m.schedules, recipe && recipe.schedule, p && p.schedule);
  if (!recipe) {
    for (const f of ["sampler", "schedule", "steps", "cfg", "size", "clip_skip"]) put(f, "no recipe: free");
    $("steps").placeholder = $("cfg").placeholder = $("size").placeholder = $("clip-skip").placeholder = "";
    return;
  }
  const withPreset = (text, v) => (p && v !== null && v !== undefined ? `${text} · ${p.name}: ${v}` : text);
  put("sampler", withPreset(`recipe: ${recipe.sampler}`, p && p.sampler !== recipe.sampler ? p.sampler : null));
  put("schedule", withPreset(`recipe: ${recipe.schedule}`, p && p.schedule !== recipe.schedule ? p.schedule : null));
  put("steps", withPreset(rangeText(recipe.steps), p && p.steps));
  put("cfg", withPreset(rangeText(recipe.cfg), p && p.cfg));
  put("size", `recipe: ${recipe.size}` + (recipe.max_size ? `, max ${recipe.max_size}` : ""));
  put("clip_skip", recipe.clip_skip === null || recipe.clip_skip === undefined ? "recipe: none"
    : `recipe: ${recipe.clip_skip}`);
  $("steps").placeholder = String(p ? p.steps : recipe.steps.default);
  $("cfg").placeholder = String(p && p.cfg !== null && p.cfg !== undefined ? p.cfg : recipe.cfg.default);
  $("size").placeholder = recipe.size || "WxH";
  $("clip-skip").placeholder = recipe.clip_skip === null || recipe.clip_skip === undefined
    ? "" : String(recipe.clip_skip);
}

// --- generate, refusal and override -----------------------------------------------------------------------------

function numberOrNull(id, parse) {
  const input = $(id);
  const name = input.labels[0].textContent.trim();
  // a number field holding "abc" reports an empty value; without this check it would silently mean "recipe"
  if (input.validity && input.validity.badInput) throw new Error(`${name} must be a number (or empty).`);
  const raw = input.value.trim();
  if (raw === "") return null;
  const v = parse(raw);
  if (!Number.isFinite(v)) throw new Error(`${name} must be a number (or empty).`);
  return v;
}

function buildBody() {
  const batch = numberOrNull("batch", (s) => parseInt(s, 10));
  if (batch !== null && (batch < 1 || batch > 4)) throw new Error("Batch must be between 1 and 4.");
  const size = $("size").value.trim().toLowerCase();
  if (size && !/^\d+x\d+$/.test(size)) throw new Error(`Size must look like 512x512 (width x height), not "${size}".`);
  return {
    model: state.model ? state.model.id : null,
    mode: null,  // the server's --mode (guarded unless its operator chose otherwise)
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    preset: state.preset,
    sampler: $("sampler").value || null,
    schedule: $("schedule").value || null,
    steps: numberOrNull("steps", (s) => parseInt(s, 10)),
    cfg: numberOrNull("cfg", parseFloat),
    seed: numberOrNull("seed", (s) => parseInt(s, 10)),
    size: size || null,
    clip_skip: numberOrNull("clip-skip", (s) => parseInt(s, 10)),
    eta: null,
    batch: batch || 1,
    overrides: [],
    reason: null,
  };
}

function fileAsBase64(id) {
  const file = $(id).files[0];
  if (!file) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);  // a data: URL; the server strips the prefix
    reader.onerror = () => reject(new Error(`${file.name} could not be read.`));
    reader.readAsDataURL(file);
  });
}

// The img2img and hires-fix fields; images travel as base64 and are stored by the server under their hash.
async function passFields() {
  const fields = {
    init_image: await fileAsBase64("init-image"),
    mask: await fileAsBase64("mask"),
    denoise: numberOrNull("denoise", parseFloat),
    hires: numberOrNull("hires", parseFloat),
    hires_steps: numberOrNull("hires-steps", (s) => parseInt(s, 10)),
    hires_denoise: numberOrNull("hires-denoise", parseFloat),
  };
  if (fields.mask && !fields.init_image) throw new Error("A mask needs an init image.");
  if (fields.denoise !== null && !fields.init_image) throw new Error("Denoise needs an init image.");
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== null));
}

async function submit(body) {
  if (state.job) { setStatus("A job is still running: wait for it or cancel it.", "error"); return; }
  state.lastBody = body;
  setBusy(true);
  setStatus("Sending to the guard…");
  try {
    const res = await api("POST", "/generate", body);
    hideRefusal();
    const pos = res.position ? ` (position ${res.position} in the queue)` : "";
    setStatus(`Job ${res.job} accepted${pos}.`);
    startJob(res.job, "generate");
  } catch (e) {
    setBusy(false);
    if (e instanceof ApiError && e.status === 422 && e.body && e.body.refused) {
      showRefusal(e.body);
      setStatus("The guard refused this request: see why below.", "error");
    } else {
      report(e);
    }
  }
}

function valueText(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object" && !Array.isArray(v) && ("min" in v || "max" in v)) {
    return `${v.min ?? "…"}–${v.max ?? "…"}`;  // a recipe range reads better as 15–40 than as JSON
  }
  return typeof v === "string" ? v : JSON.stringify(v);
}

function showRefusal(body) {
  const findings = body.findings || [];
  const refused = findings.filter((f) => f.outcome === "refused");
  const shown = refused.length ? refused : findings;
  // the detail sentence restates the findings; show it only when there is nothing itemised to show
  $("refusal-detail").textContent = findings.length ? "" : (body.detail || "");
  $("refusal-detail").hidden = findings.length > 0;
  const list = $("refusal-findings");
  list.replaceChildren();
  for (const f of shown) {
    list.append(el("li", {class: "finding sev-" + f.severity, "data-field": f.field},
      el("span", {class: "badge", text: f.severity}), " ",
      el("strong", {class: "field", text: f.field}),
      el("span", {class: "values", text: ` ${valueText(f.recipe_value)} → ${valueText(f.requested_value)}`}),
      el("div", {class: "reason", text: f.reason}),
      f.suggestion ? el("div", {class: "fix"}, el("span", {class: "fix-label", text: "fix: "}), f.suggestion) : null));
  }
  // Only soft refusals can become overrides; a single hard one means no reason will make the guard run it.
  const soft = refused.length > 0 && refused.every((f) => f.severity === "soft");
  const box = $("override-box");
  box.hidden = !soft;
  box.dataset.fields = soft ? JSON.stringify([...new Set(refused.map((f) => f.field))]) : "[]";
  $("override-reason").value = "";
  $("refusal").hidden = false;
  $("refusal").scrollIntoView({block: "nearest"});
}

function hideRefusal() {
  $("refusal").hidden = true;
  $("override-box").hidden = true;
}

function submitOverride() {
  const reason = $("override-reason").value.trim();
  if (!reason) {
    setStatus("An override needs a reason: say why this deviation from the recipe is intended.", "error");
    $("override-reason").focus();
    return;
  }
  if (!state.lastBody) return;
  const fields = JSON.parse($("override-box").dataset.fields || "[]");
  const body = {...state.lastBody,
    overrides: [...new Set([...(state.lastBody.overrides || []), ...fields])], reason};
  submit(body);
}

// --- jobs: progress over EventSource, with polling as the fallback -----------------------------------------------

function setBusy(busy) {
  $("generate").disabled = busy;
  $("override-submit").disabled = busy;
  $("replay").disabled = busy;
  $("cancel").disabled = !busy || !state.job;
}

function startJob(id, kind, source) {
  const job = {id, kind, source, events: null, poll: null, finished: false};
  state.job = job;
  setBusy(true);
  $("job").hidden = false;
  $("job-h").textContent = kind === "replay" ? `Replaying ${source}` : "Generating";
  setProgress(0, 1, null, "queued");
  $("preview").hidden = true;
  if (kind === "replay") $("replay-result").textContent = "replaying…";

  let url = `${API}/jobs/${encodeURIComponent(id)}/events`;
  // EventSource cannot send headers; the server takes the token as a query parameter on this endpoint only.
  if (state.token) url += "?token=" + encodeURIComponent(state.token);
  const es = new EventSource(url);
  job.events = es;
  const on = (type, fn) => es.addEventListener(type, (ev) => {
    let data = {};
    try { data = ev.data ? JSON.parse(ev.data) : {}; } catch (e) { data = {}; }
    fn(data);
  });
  on("queued", (d) => setProgress(0, 1, null, d.position ? `queued, position ${d.position}` : "queued"));
  on("started", () => setProgress(0, 1, null, "started"));
  on("step", (d) => setProgress(d.step, d.total, d.sigma, null, d.image));
  on("preview", (d) => {
    if (d.src) { $("preview").src = d.src; $("preview").hidden = false; }
  });
  on("done", (d) => finishJob(job, "done", d));
  on("failed", (d) => finishJob(job, "failed", d));
  on("cancelled", (d) => finishJob(job, "cancelled", d));
  // A dropped stream (or a server that closes it early) is not the end of the job: ask for its state instead.
  es.onerror = () => {
    if (job.finished) return;
    es.close();
    pollJob(job);
  };
}

async function pollJob(job) {
  if (job.finished || job.poll) return;
  job.poll = true;
  let misses = 0;
  while (!job.finished) {
    try {
      const s = await api("GET", "/jobs/" + encodeURIComponent(job.id));
      misses = 0;
      if (s.status === "running") setProgress(s.step, s.total, s.sigma, null);
      if (s.preview) { $("preview").src = s.preview; $("preview").hidden = false; }
      if (TERMINAL.has(s.status)) {
        finishJob(job, s.status, {images: s.images, identical: s.identical, error: s.error});
        return;
      }
    } catch (e) {
      if (++misses >= 5) { report(e); finishJob(job, "failed", {error: e.message}); return; }
    }
    await new Promise((r) => setTimeout(r, 700));
  }
}

function setProgress(step, total, sigma, label, image) {
  const bar = $("progress");
  bar.max = Math.max(1, total || 1);
  bar.value = Math.min(bar.max, step || 0);
  const batch = state.lastBody && state.job && state.job.kind === "generate" ? state.lastBody.batch : 1;
  const parts = [];
  if (label) parts.push(label);
  else {
    if (batch > 1 && image !== undefined && image !== null) parts.push(`image ${image + 1}/${batch}`);
    parts.push(`step ${step}/${total}`);
    if (sigma !== null && sigma !== undefined) parts.push(`σ ${Number(sigma).toFixed(3)}`);
  }
  $("progress-text").textContent = parts.join(" · ");
  bar.setAttribute("aria-valuetext", parts.join(", "));
}

async function finishJob(job, status, data) {
  if (job.finished) return;
  job.finished = true;
  if (job.events) job.events.close();
  if (state.job === job) state.job = null;
  setBusy(false);
  $("job").hidden = status !== "done";
  $("job-h").textContent = job.kind === "replay" ? `Replayed ${job.source}` : "Finished";
  if (status === "done") {
    const bar = $("progress");
    bar.value = bar.max;
    $("progress-text").textContent = "done";
    const n = (data.images || []).length;
    if (job.kind === "replay") {
      const same = data.identical;
      const word = same === true ? "identical" : same === false ? "differs" : "unknown";
      $("replay-result").textContent = word;
      $("replay-result").className = "verdict " + word;
      setStatus(`Replay of ${job.source}: ${word === "identical" ? "identical pixels" :
        word === "differs" ? "the pixels differ from the original" : "no comparison reported"}.`,
        word === "differs" ? "error" : "ok");
    } else {
      setStatus(`Done: ${n} image${n === 1 ? "" : "s"}.`, "ok");
    }
  } else if (status === "failed") {
    setStatus("The job failed: " + (data.error || "no reason given") + ".", "error");
    if (job.kind === "replay") $("replay-result").textContent = "failed";
  } else {
    setStatus("The job was cancelled.");
    if (job.kind === "replay") $("replay-result").textContent = "cancelled";
  }
  const first = status === "done" && job.kind === "generate" && data.images && data.images[0];
  await refreshGallery(first ? first.name : null);
  await refreshAudit();
  await refreshPresetTimes();
}

// Expected times are measured by the server once a model has run, so the cards catch up after a job.
async function refreshPresetTimes() {
  if (!state.model) return;
  try {
    const m = await api("GET", "/models/" + encodeURIComponent(state.model.id));
    if (state.model && m.id === state.model.id) {
      state.model = m;
      renderPresets();
    }
  } catch (e) {
    // the job itself went fine; stale times on the cards are not worth an error line
  }
}

async function cancelJob() {
  const job = state.job;
  if (!job) return;
  try {
    const res = await api("POST", `/jobs/${encodeURIComponent(job.id)}/cancel`);
    if (!res.cancelled) setStatus("The job could not be cancelled (it may have just finished).");
  } catch (e) {
    report(e);
  }
}

// --- gallery and provenance -------------------------------------------------------------------------------------

async function refreshGallery(open) {
  let data;
  try { data = await api("GET", "/gallery"); } catch (e) { report(e); return; }
  state.gallery = data.images || [];
  const box = $("gallery");
  box.replaceChildren();
  $("gallery-empty").hidden = state.gallery.length > 0;
  for (const g of state.gallery) {
    const img = el("img", {class: "pixel thumb", alt: g.plan && g.plan.prompt ? g.plan.prompt : g.name,
                           width: 128, height: 128, loading: "lazy"});
    imageSrc(g.url).then((src) => { img.src = src; }, report);
    const item = el("button", {type: "button", class: "gallery-item" + (g.name === state.shown ? " selected" : ""),
                               "data-name": g.name, title: g.name, "aria-label": "Open " + g.name,
                               onclick: () => showImage(g.name)}, img);
    box.append(item);
  }
  const target = open || state.shown;
  if (target && state.gallery.some((g) => g.name === target)) showImage(target, {keepVerdict: !open});
}

function planRows(plan, g) {
  const rows = [];
  const add = (k, v) => { if (v !== null && v !== undefined && v !== "") rows.push([k, v]); };
  add("model", plan.model && plan.model.name);
  add("preset", plan.preset);
  add("mode", plan.mode);
  add("sampler", plan.sampler);
  add("schedule", plan.schedule);
  add("steps", plan.steps);
  add("cfg", plan.cfg);
  add("seed", plan.seed);
  add("size", plan.width && plan.height ? `${plan.width}x${plan.height}` : null);
  const i2i = plan.img2img;
  if (i2i) {
    add("img2img", `denoise ${i2i.denoise}: ${plan.sigmas.length - 1} of ${i2i.grid_steps} steps ` +
        `(init ${i2i.init_image.sha256.slice(0, 12)})`);
    if (i2i.mask) add("inpaint", `mask ${i2i.mask.sha256.slice(0, 12)}, ${i2i.inpaint_area.replace("_", " ")}`);
  }
  const h = plan.hires;
  if (h) add("hires fix", `x${h.scale} to ${h.width}x${h.height}, ${h.sigmas.length - 1} steps at denoise ${h.denoise}`);
  add("created", g.created);
  return rows;
}

async function showImage(name, opts) {
  const g = state.gallery.find((x) => x.name === name);
  if (!g) return;
  const changed = state.shown !== name;
  state.shown = name;
  for (const item of document.querySelectorAll("#gallery .gallery-item")) {
    item.classList.toggle("selected", item.dataset.name === name);
  }
  const plan = g.plan || {};
  $("detail-h").textContent = name;
  $("detail-img").alt = plan.prompt || name;
  const dl = $("detail-plan");
  dl.replaceChildren();
  for (const [k, v] of planRows(plan, g)) dl.append(el("dt", {text: k}), el("dd", {"data-key": k, text: String(v)}));
  const ov = plan.overrides || [];
  dl.append(el("dt", {text: "overrides"}));
  if (ov.length === 0) dl.append(el("dd", {"data-key": "overrides", text: "none (all from the recipe)"}));
  for (const o of ov) {
    dl.append(el("dd", {"data-key": "overrides", class: "override"},
      el("strong", {text: o.field}), ` ${valueText(o.recipe_value)} → ${valueText(o.requested_value)}`,
      o.reason ? el("span", {class: "reason", text: ` — “${o.reason}”`}) : null));
  }
  $("detail-infotext").textContent = g.infotext || "(no infotext)";
  if (changed && !(opts && opts.keepVerdict)) {
    $("replay-result").textContent = "";
    $("replay-result").className = "";
  }
  $("detail").hidden = false;
  try {
    const src = await imageSrc(g.url);
    $("detail-img").src = src;
    $("download").href = src;
    $("download").setAttribute("download", name);
  } catch (e) {
    report(e);
  }
}

async function replay() {
  const name = state.shown;
  if (!name) return;
  if (state.job) { setStatus("A job is still running: wait for it or cancel it.", "error"); return; }
  $("replay-result").textContent = "";
  setBusy(true);
  try {
    const res = await api("POST", "/replay", {image: name});
    setStatus(`Replaying ${name} (job ${res.job}).`);
    startJob(res.job, "replay", name);
  } catch (e) {
    setBusy(false);
    if (e instanceof ApiError && e.status === 422 && e.body && e.body.refused) {
      showRefusal(e.body);
      $("override-box").hidden = true;  // a replay is the image's own plan: there is no request to amend
      setStatus("The guard refused to replay this image; see below.", "error");
    } else {
      report(e);
    }
  }
}

// --- audit ------------------------------------------------------------------------------------------------------

function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

async function refreshAudit() {
  let data;
  try { data = await api("GET", "/audit?tail=20"); } catch (e) { report(e); return; }
  $("audit-path").textContent = data.path ? "Log: " + data.path : "";
  const body = $("audit-rows");
  body.replaceChildren();
  const recs = (data.records || []).slice().reverse();  // newest first reads better in a table
  if (recs.length === 0) {
    body.append(el("tr", {}, el("td", {colspan: 6, class: "note", text: "No overrides recorded yet."})));
  }
  for (const r of recs) {
    body.append(el("tr", {class: "audit-row"},
      el("td", {text: shortTime(r.time), title: r.time || ""}),
      el("td", {text: r.action || ""}),
      el("td", {text: r.field || ""}),
      el("td", {text: `${valueText(r.recipe_value)} → ${valueText(r.requested_value)}`}),
      el("td", {text: r.mode || ""}),
      el("td", {class: "reason", text: r.reason || ""})));
  }
}

// --- start ------------------------------------------------------------------------------------------------------

function readToken() {
  const params = new URLSearchParams(location.search);
  const t = params.get("token");
  if (t) {
    sessionStorage.setItem("iga-token", t);
    // Keep the secret out of the address bar, history and anything copied from it.
    params.delete("token");
    const q = params.toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + location.hash);
  }
  return sessionStorage.getItem("iga-token");
}

function wire() {
  $("gen-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    Promise.resolve().then(async () => ({...buildBody(), ...await passFields()}))
      .then(submit, report);
  });
  $("cancel").addEventListener("click", cancelJob);
  $("override-submit").addEventListener("click", submitOverride);
  $("override-reason").addEventListener("input", () => {
    if ($("status").textContent.startsWith("An override needs a reason")) {
      setStatus("The guard refused this request: see why below.", "error");
    }
  });
  $("override-reason").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); submitOverride(); }
  });
  $("replay").addEventListener("click", replay);
  $("model").addEventListener("change", (ev) => selectModel(ev.target.value).catch(report));
  for (const kind of ["sampler", "schedule"]) $(kind).addEventListener("change", () => describeChoice(kind));
  $("audit").addEventListener("toggle", () => { if ($("audit").open) refreshAudit(); });
}

async function init() {
  state.token = readToken();
  wire();
  try {
    await loadModels();
  } catch (e) {
    report(e);
  }
  await refreshGallery(null);
  if ($("audit").open) await refreshAudit();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", init);
