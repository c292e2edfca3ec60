// instyle web page: plain JS on the public HTTP API (no build step, no external resources).
"use strict";

const $ = (sel) => document.querySelector(sel);

class ApiError extends Error {
  constructor(status, problem, retryAfterS = null) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.retryAfterS = retryAfterS;  // the answer's Retry-After, in seconds, if it had one
  }

  // the server will likely answer again soon: unreachable, or a 503 (its Redis away)
  get transient() { return this.status === 0 || this.status === 503; }
}

// fetch that turns a problem+json answer into an ApiError carrying its `detail`
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, { detail: `the server cannot be reached (${err.message})` });
  }
  if (!response.ok) {
    let problem = { detail: response.statusText };
    try { problem = await response.json(); } catch (_) { /* not JSON */ }
    const retryAfter = Number.parseFloat(response.headers.get("Retry-After"));
    throw new ApiError(response.status, problem, Number.isFinite(retryAfter) ? retryAfter : null);
  }
  return response;
}

function show(el, visible) { el.hidden = !visible; }
function showError(el, err) { el.textContent = err instanceof Error ? err.message : String(err); show(el, true); }
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function formatSeconds(s) {
  if (s === undefined || s === null || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// --- tabs ------------------------------------------------------------------------------------
function selectTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.tab === name);
  for (const panel of document.querySelectorAll(".panel")) show(panel, panel.id === `panel-${name}`);
}
for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => selectTab(tab.dataset.tab));

// --- styles ----------------------------------------------------------------------------------
let selectedStyle = null;

async function loadStyles() {
  let styles;
  try {
    styles = await (await api("/v1/styles")).json();
  } catch (err) {
    showError($("#stylize-error"), err);
    return;
  }
  const picker = $("#style-picker");
  picker.replaceChildren();
  const list = $("#style-list");
  list.replaceChildren();
  if (!styles.some((s) => s.id === selectedStyle)) selectedStyle = styles.length ? styles[0].id : null;
  for (const style of styles) {
    const card = document.createElement("div");
    card.className = "style-card";
    card.setAttribute("role", "radio");
    card.tabIndex = 0;
    card.dataset.style = style.id;
    card.setAttribute("aria-checked", String(style.id === selectedStyle));
    const img = document.createElement("img");
    img.src = style.style_url;
    img.alt = style.title;
    img.loading = "lazy";
    const label = document.createElement("span");
    label.textContent = style.title;
    card.append(img, label);
    const choose = () => {
      selectedStyle = style.id;
      for (const c of picker.children) c.setAttribute("aria-checked", String(c.dataset.style === style.id));
    };
    card.addEventListener("click", choose);
    card.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
    picker.append(card);

    const row = document.createElement("div");
    row.className = "style-row";
    row.dataset.style = style.id;
    const painting = document.createElement("img");
    painting.src = style.style_url;
    painting.alt = `${style.title} (style image)`;
    const preview = document.createElement("img");
    preview.src = style.preview_url;
    preview.alt = `${style.title} applied to a photo`;
    preview.className = "style-preview";
    const text = document.createElement("div");
    const h3 = document.createElement("h3");
    h3.textContent = `${style.title} `;
    if (style.shipped) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "shipped";
      h3.append(badge);
    }
    const ref = document.createElement("p");
    ref.textContent = `${style.id}@${style.version} · ${style.arch}/${style.norm} · versions ${style.versions.join(", ")}`;
    const recipe = document.createElement("p");
    recipe.className = "summary";
    recipe.textContent = style.summary;
    text.append(h3, ref, recipe);
    row.append(painting, preview, text);
    list.append(row);
  }
  if (!styles.length) list.textContent = "No styles yet: train one.";
}

// --- stylize ---------------------------------------------------------------------------------
let photoFile = null;
let resultUrl = null;

function setPhoto(file) {
  if (!file) return;
  photoFile = file;
  const preview = $("#photo-preview");
  preview.src = URL.createObjectURL(file);
  show(preview, true);
  $("#drop-text").textContent = file.name;
}

$("#photo").addEventListener("change", (e) => setPhoto(e.target.files[0]));
const drop = $("#drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  setPhoto(e.dataTransfer.files[0]);
});

// How long polling rides out a server that does not answer, or answers 503, before it gives up.
const POLL_OUTAGE_MS = 120000;

// Poll a job until it ends. A brief outage (no answer, or a 503 while Redis is away) does not
// lose the job: the page says it is reconnecting (onUpdate(null, error)) and asks again after
// the answer's Retry-After, for up to POLL_OUTAGE_MS.
async function pollJob(statusUrl, onUpdate, intervalMs) {
  let outageSince = null;
  for (;;) {
    let job;
    try {
      job = await (await api(statusUrl)).json();
    } catch (err) {
      if (!(err instanceof ApiError) || !err.transient) throw err;
      outageSince ??= Date.now();
      if (Date.now() - outageSince > POLL_OUTAGE_MS) throw err;
      onUpdate(null, err);
      await sleep(Math.max(intervalMs, 1000 * (err.retryAfterS ?? 1)));
      continue;
    }
    outageSince = null;
    onUpdate(job, null);
    if (["finished", "failed", "canceled"].includes(job.status)) return job;
    await sleep(intervalMs);
  }
}

// The 202 of a submission; a 503 that names the job it did queue (Redis went away right after)
// counts as one, so the page follows that job instead of failing.
async function submitJob(path, body) {
  try {
    return await (await api(path, { method: "POST", body })).json();
  } catch (err) {
    if (err instanceof ApiError && err.transient && err.problem.status_url) return err.problem;
    throw err;
  }
}

function reconnecting(err) {
  return `reconnecting (${err.message})…`;
}

function jobFailure(job) {
  const error = job.error || {};
  return new Error(job.status === "canceled" ? "The job was canceled." : (error.message || `the job ${job.status}`));
}

$("#stylize-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = $("#stylize-error");
  show(error, false);
  if (!photoFile) return showError(error, "Pick a photo first.");
  if (!selectedStyle) return showError(error, "Pick a style first.");
  // what is sent: picking another photo or style while the job runs must not relabel its result
  const photo = photoFile, style = selectedStyle;
  const form = new FormData();
  form.append("image", photo);
  form.append("style", style);
  form.append("max_size", $("#max-size").value);
  form.append("format", $("#format").value);
  form.append("preserve_color", $("#preserve-color").checked ? "true" : "false");
  const button = $("#stylize-button");
  button.disabled = true;
  show($("#result"), false);
  show($("#stylize-progress"), true);
  $("#stylize-bar").value = 0;
  $("#stylize-status").textContent = "uploading";
  try {
    const accepted = await submitJob("/v1/stylize", form);
    stylizeJob = accepted.job_id;
    const job = await pollJob(accepted.status_url, (j, err) => {
      if (!j) {
        $("#stylize-status").textContent = reconnecting(err);
        return;
      }
      $("#stylize-bar").value = j.progress;
      $("#stylize-status").textContent = j.status;
    }, 250);
    if (job.status !== "finished") throw jobFailure(job);
    const blob = await (await api(job.result_url)).blob();
    if (resultUrl) URL.revokeObjectURL(resultUrl);
    resultUrl = URL.createObjectURL(blob);
    $("#before").src = URL.createObjectURL(photo);
    $("#after").src = resultUrl;
    const ext = { "image/png": "png", "image/webp": "webp" }[blob.type] || "jpg";
    const download = $("#download");
    download.href = resultUrl;
    download.download = `${photo.name.replace(/\.[^.]+$/, "")}-${style}.${ext}`;
    show($("#result"), true);
    $("#stylize-status").textContent = "done";
  } catch (err) {
    showError(error, err);
    show($("#stylize-progress"), false);
  } finally {
    button.disabled = false;
    stylizeJob = null;
  }
});

let stylizeJob = null;

// A Cancel button: DELETE the job ``currentJob()`` names, if any; a refusal shows in ``errorBox``.
function cancelButton(button, currentJob, errorBox) {
  button.addEventListener("click", async () => {
    const job = currentJob();
    if (!job) return;
    try {
      await api(`/v1/jobs/${job}`, { method: "DELETE" });
    } catch (err) {
      showError(errorBox, err);
    }
  });
}

cancelButton($("#stylize-cancel"), () => stylizeJob, $("#stylize-error"));

// a page left while it stylizes: nobody will see the result, and the job would hold a worker
// (a training goes on: it publishes a style, which outlives the page)
window.addEventListener("pagehide", () => {
  if (stylizeJob) fetch(`/v1/jobs/${stylizeJob}`, { method: "DELETE", keepalive: true }).catch(() => {});
});

// --- train -----------------------------------------------------------------------------------
const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("instyle-api-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("instyle-api-key", keyInput.value));

function drawLossCurve(points) {
  const canvas = $("#loss-curve");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 32;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#6e6e73";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText("training loss (log scale)", pad, 16);
  const pts = (points || []).filter((p) => p[1] > 0);
  if (pts.length < 2) return;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => Math.log10(p[1]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + ((x - x0) / Math.max(x1 - x0, 1e-9)) * (w - 2 * pad);
  const sy = (y) => h - pad - ((y - y0) / Math.max(y1 - y0, 1e-9)) * (h - 2 * pad);
  ctx.strokeStyle = "#d8d8dc";
  ctx.strokeRect(pad, pad, w - 2 * pad, h - 2 * pad);
  ctx.fillText(Math.pow(10, y1).toPrecision(3), 2, pad + 4);
  ctx.fillText(Math.pow(10, y0).toPrecision(3), 2, h - pad);
  ctx.fillText(String(x1), w - pad - 20, h - pad + 16);
  ctx.strokeStyle = "#2747c7";
  ctx.lineWidth = 2;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(sx(p[0]), sy(Math.log10(p[1]))) : ctx.moveTo(sx(p[0]), sy(Math.log10(p[1])))));
  ctx.stroke();
}

let trainingJob = null;

$("#train-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = $("#train-error");
  show(error, false);
  const form = new FormData(e.target);
  for (const [key, value] of [...form.entries()]) if (value === "" || (value instanceof File && !value.name)) form.delete(key);
  const headers = keyInput.value ? { Authorization: `Bearer ${keyInput.value}` } : {};
  const button = $("#train-button");
  button.disabled = true;
  show($("#train-done"), false);
  try {
    const accepted = await (await api("/v1/styles", { method: "POST", body: form, headers })).json();
    trainingJob = accepted.job_id;
    show($("#train-live"), true);
    drawLossCurve([]);
    // the previous run's preview and figures must not stand for this one's
    const preview = $("#train-preview");
    show(preview, false);
    preview.removeAttribute("src");
    $("#train-bar").value = 0;
    $("#train-iter").textContent = `0 / ${accepted.recipe.iterations}`;
    $("#train-eta").textContent = "–";
    $("#train-loss").textContent = "–";
    let previewIteration = null;
    const job = await pollJob(accepted.status_url, (j, err) => {
      if (!j) {
        $("#train-status").textContent = reconnecting(err);
        return;
      }
      const d = j.detail || {};
      $("#train-bar").value = j.progress;
      $("#train-status").textContent = j.status;
      $("#train-iter").textContent = `${d.iteration ?? 0} / ${d.total ?? accepted.recipe.iterations}`;
      $("#train-eta").textContent = formatSeconds(d.eta_s);
      $("#train-loss").textContent = d.losses ? d.losses.total.toPrecision(4) : "–";
      drawLossCurve(d.loss_history);
      if (j.preview_url && d.preview_iteration !== previewIteration) {
        previewIteration = d.preview_iteration;
        const img = $("#train-preview");
        img.src = `${j.preview_url}?iteration=${previewIteration}`;
        show(img, true);
      }
    }, 1000);
    if (job.status !== "finished") throw jobFailure(job);
    const done = $("#train-done");
    done.textContent = `Published ${job.detail.style}: it is now in the style gallery.`;
    await loadStyles(); // first, so that the gallery holds it when the message says so
    show(done, true);
  } catch (err) {
    showError(error, err);
  } finally {
    button.disabled = false;
    trainingJob = null;
  }
});

cancelButton($("#train-cancel"), () => trainingJob, $("#train-error"));

loadStyles();
