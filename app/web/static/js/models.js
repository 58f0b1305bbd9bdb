// The models page: the catalog (missing models hidden unless asked) and live downloads.

import { api, bytes, el } from "./api.js";
import { LiveJobs } from "./live.js";

const list = document.getElementById("models");
const toggle = document.getElementById("show-missing");
const hiddenCount = document.getElementById("hidden-count");
const problem = document.getElementById("models-error");
const STORAGE_KEY = "modelpull.showMissing";

toggle.checked = window.localStorage.getItem(STORAGE_KEY) === "true";
let models = [];

function fileState(file) {
  if (file.present) return "present";
  if (file.partialBytes) return "partial";
  return "missing";
}

function modelItem(model, live) {
  const present = model.allPresent;
  const downloading = [...live.jobs.values()].some(
    (j) => j.modelId === model.id && ["queued", "downloading", "paused"].includes(j.status),
  );
  const action = present
    ? el("span", { class: "badge present", text: "Present" })
    : el("button", {
        type: "button",
        class: "download",
        text: downloading ? "Downloading…" : "Download",
        disabled: downloading,
        "aria-label": `Download ${model.name}`,
        onclick: async (event) => {
          event.target.disabled = true;
          try {
            const job = await api(`/api/models/${model.id}/download`, { method: "POST" });
            if (job.jobId) {
              live.jobs.set(job.jobId, job);
              live.render();
            }
            await load(live);
          } catch (err) {
            problem.textContent = err.message;
            problem.hidden = false;
            event.target.disabled = false;
          }
        },
      });
  return el(
    "li",
    { class: `model ${present ? "present" : "missing"}`, "data-model": model.id, hidden: !present && !toggle.checked },
    el(
      "div",
      { class: "model-head" },
      el("h3", { text: model.name }),
      el("span", { class: "badge", "data-state": present ? "present" : "missing", text: present ? "present" : "missing" }),
      action,
    ),
    model.description ? el("p", { class: "muted", text: model.description }) : null,
    el(
      "ul",
      { class: "model-files" },
      model.files.map((f) =>
        el(
          "li",
          { "data-state": fileState(f) },
          el("span", { class: "name", text: f.dest }),
          el("span", { class: "muted", text: ` ${f.repo}` }),
          el("span", {
            class: "size",
            text: ` · ${f.humanSize ?? "size unknown"} · ${fileState(f)}${f.partialBytes ? ` (${bytes(f.partialBytes)})` : ""}`,
          }),
        ),
      ),
    ),
  );
}

function render(live) {
  list.replaceChildren(...models.map((m) => modelItem(m, live)));
  const hidden = toggle.checked ? 0 : models.filter((m) => !m.allPresent).length;
  hiddenCount.textContent = hidden ? `${hidden} missing model${hidden === 1 ? "" : "s"} hidden` : "";
  list.setAttribute("aria-busy", "false");
}

async function load(live) {
  try {
    models = (await api("/api/models")).models;
    problem.hidden = true;
    render(live);
  } catch (err) {
    problem.textContent = `Could not load the models: ${err.message}`;
    problem.hidden = false;
  }
}

const live = new LiveJobs(document.getElementById("jobs-live"), {
  onJobEnd: () => load(live),
});
toggle.addEventListener("change", () => {
  window.localStorage.setItem(STORAGE_KEY, String(toggle.checked));
  render(live);
});
load(live);
live.connect();
