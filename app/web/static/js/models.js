// The models page: the catalog with every file's size before anything is downloaded (missing
// models hidden unless asked), the live downloads, and the picker for any other Hub repo.

import { api, bytes, el } from "./api.js";
import { LiveJobs } from "./live.js";
import { RepoPicker, plural, showJob } from "./picker.js";

const list = document.getElementById("models");
const toggle = document.getElementById("show-missing");
const hiddenCount = document.getElementById("hidden-count");
const pending = document.getElementById("sizes-pending");
const problem = document.getElementById("models-error");
const empty = document.getElementById("models-empty");
const STORAGE_KEY = "modelpull.showMissing";
const ACTIVE = ["queued", "downloading", "paused"];
const STATE_TEXT = { queued: "Queued", downloading: "Downloading…", paused: "Paused" };
// While the Hub has not told the catalog's sizes yet (the first refresh after start-up).
const PENDING_REFETCH_MS = 2000;

toggle.checked = window.localStorage.getItem(STORAGE_KEY) === "true";
let models = [];
let metadataPending = false;
let refetch = null;
let reload = null;

function fileState(file) {
  if (file.present) return "present";
  if (file.partialBytes) return "partial";
  return "missing";
}

function fileSize(file) {
  const size = file.expectedSize ?? file.remoteSize ?? (file.exists ? file.size : null);
  if (size !== null && size !== undefined) return bytes(size);
  return file.humanSize ?? (metadataPending ? "size loading…" : "size unknown");
}

function sizeLine(model) {
  const count = plural(model.files.length, "file");
  const total = model.totalBytes;
  if (total === null || total === undefined) {
    return `${count} · ${metadataPending ? "sizes loading…" : "size unknown"}`;
  }
  if (model.allPresent) return `${count} · ${bytes(total)}, all on this machine`;
  const missing = model.missingBytes;
  if (missing === null || missing === undefined) return `${count} · ${bytes(total)}`;
  if (missing === total) return `${count} · ${bytes(total)} to download`;
  return `${count} · ${bytes(total)} (${bytes(missing)} to download)`;
}

// The model's active job: the live cards follow every change, the list only knows the
// moment it was read (and jobs the page has not seen, e.g. started from the CLI).
function activeJobOf(model) {
  const own =
    typeof live.activeJobFor === "function"
      ? live.activeJobFor(model.id)
      : [...live.jobs.values()].find((j) => j.modelId === model.id && ACTIVE.includes(j.status));
  if (own) return { jobId: own.jobId, status: own.status };
  const listed = model.activeJob;
  const seen = listed && live.jobs.get(listed.jobId);
  return listed && (!seen || ACTIVE.includes(seen.status)) ? listed : null;
}

function reveal(jobId) {
  const job = live.jobs.get(jobId);
  if (job) {
    showJob(live, job);
    return;
  }
  api(`/api/models/download/status/${jobId}`)
    .then((fresh) => showJob(live, fresh))
    .catch((err) => {
      problem.textContent = err.message;
      problem.hidden = false;
    });
}

async function start(model, button) {
  // A keyboard user keeps their place: the button turns disabled, its "Show" takes focus.
  const refocus = document.activeElement === button ? `show:${model.id}` : null;
  button.disabled = true;
  button.textContent = "Starting…";
  try {
    const job = await api(`/api/models/${model.id}/download`, { method: "POST" });
    if (job.jobId) {
      model.activeJob = { jobId: job.jobId, status: job.status };
      showJob(live, job);
    }
    await load();
    if (refocus) list.querySelector(`[data-focus="${refocus}"]`)?.focus({ preventScroll: true });
  } catch (err) {
    problem.textContent = err.message;
    problem.hidden = false;
    render();
  }
}

function action(model) {
  if (model.allPresent) return el("span", { class: "badge present", text: "Present" });
  const job = activeJobOf(model);
  const button = el("button", {
    type: "button",
    class: "download",
    "data-focus": `download:${model.id}`,
    "data-job-state": job?.status,
    text: job ? (STATE_TEXT[job.status] ?? job.status) : "Download",
    disabled: Boolean(job),
    "aria-label": job ? `Download ${model.name}: ${job.status}` : `Download ${model.name}`,
    onclick: (event) => start(model, event.currentTarget),
  });
  if (!job) return button;
  const show = el("button", {
    type: "button",
    class: "link show-job",
    "data-focus": `show:${model.id}`,
    text: "Show",
    "aria-label": `Show the download of ${model.name}`,
    onclick: () => reveal(job.jobId),
  });
  return el("span", { class: "model-actions" }, button, show);
}

function fileItem(file) {
  const state = fileState(file);
  const partial = file.partialBytes ? ` (${bytes(file.partialBytes)})` : "";
  return el(
    "li",
    { "data-state": state },
    el("span", { class: "name", text: file.dest }),
    el("span", { class: "muted", text: ` ${file.repo}` }),
    el("span", { class: "size", text: ` · ${fileSize(file)} · ${state}${partial}` }),
    file.gated ? el("span", { class: "muted", text: " · gated" }) : null,
  );
}

const GATED_NOTE = "Gated on the Hub: accept its terms there and set HF_TOKEN to download it.";

function modelItem(model) {
  const present = model.allPresent;
  const state = present ? "present" : "missing";
  return el(
    "li",
    { class: `model ${state}`, "data-model": model.id, hidden: !present && !toggle.checked },
    el(
      "div",
      { class: "model-head" },
      el("h3", { text: model.name }),
      el("span", { class: "badge", "data-state": state, text: state }),
      model.gated ? el("span", { class: "badge", "data-state": "gated", text: "gated" }) : null,
      action(model),
    ),
    model.description ? el("p", { class: "muted", text: model.description }) : null,
    el("p", { class: "model-size", text: sizeLine(model) }),
    model.gated ? el("p", { class: "model-note gated-note", text: GATED_NOTE }) : null,
    model.hubError
      ? el("p", { class: "model-note hub-error", text: `The Hub could not tell the sizes: ${model.hubError}` })
      : null,
    el("ul", { class: "model-files" }, model.files.map(fileItem)),
  );
}

function render() {
  // The list is rebuilt (every few seconds while sizes load): focus goes back where it was.
  const key = list.contains(document.activeElement) ? document.activeElement.dataset.focus : null;
  list.replaceChildren(...models.map(modelItem));
  const missing = models.filter((m) => !m.allPresent).length;
  const hidden = toggle.checked ? 0 : missing;
  hiddenCount.textContent = hidden ? `${plural(hidden, "missing model")} hidden` : "";
  pending.hidden = !metadataPending;
  const none = models.length > 0 && missing === models.length;
  empty.hidden = !(none && !toggle.checked);
  document.getElementById("models-empty-text").textContent =
    models.length === 1
      ? "The catalog's one model is not on this machine yet."
      : `None of the ${models.length} catalog models is on this machine yet.`;
  list.setAttribute("aria-busy", "false");
  if (key) {
    // A Download button that turned disabled hands focus to its model's "Show".
    const id = key.slice(key.indexOf(":") + 1);
    const again =
      list.querySelector(`[data-focus="${CSS.escape(key)}"]:not([disabled])`) ??
      list.querySelector(`[data-focus="${CSS.escape(`show:${id}`)}"]`);
    again?.focus({ preventScroll: true });
  }
}

async function load() {
  try {
    const data = await api("/api/models");
    models = data.models;
    metadataPending = Boolean(data.metadataPending);
    problem.hidden = true;
    render();
  } catch (err) {
    problem.textContent = `Could not load the models: ${err.message}`;
    problem.hidden = false;
  }
  clearTimeout(refetch);
  refetch = metadataPending ? setTimeout(load, PENDING_REFETCH_MS) : null;
}

const live = new LiveJobs(document.getElementById("jobs-live"), {
  onJobEnd: () => {
    load();
    picker.sync(live.jobs);
  },
});
const picker = new RepoPicker({
  form: document.getElementById("hub-form"),
  input: document.getElementById("hub-repo"),
  error: document.getElementById("hub-error"),
  view: document.getElementById("hub-view"),
  live,
});
if (typeof live.onChange === "function") {
  live.onChange((jobs) => {
    render();
    picker.sync(jobs);
    // A file may have landed: ask again what is on disk (one request for a burst).
    clearTimeout(reload);
    reload = setTimeout(load, 300);
  });
}

toggle.addEventListener("change", () => {
  window.localStorage.setItem(STORAGE_KEY, String(toggle.checked));
  render();
});
document.getElementById("show-catalog").addEventListener("click", () => {
  toggle.checked = true;
  toggle.dispatchEvent(new Event("change"));
  const first = list.querySelector("li.model:not([hidden])");
  first?.scrollIntoView({ block: "nearest" });
  (first?.querySelector("button:not([disabled])") ?? toggle).focus({ preventScroll: true });
});
document.getElementById("open-picker").addEventListener("click", () => picker.focus());
load();
live.connect();
