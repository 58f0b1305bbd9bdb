// The jobs page: history, newest first, with files, durations, errors and captured stderr.

import { api, bytes, duration, el } from "./api.js";

const list = document.getElementById("jobs");
const more = document.getElementById("more");
const filter = document.getElementById("status-filter");
const problem = document.getElementById("jobs-error");
let cursor = null;

function seconds(from, to) {
  if (!from) return null;
  const end = to ? Date.parse(to) : Date.now();
  return (end - Date.parse(from)) / 1000;
}

function jobItem(job) {
  const took = seconds(job.startedAt, job.finishedAt);
  return el(
    "li",
    { class: `job state-${job.status}`, "data-job": job.jobId },
    el(
      "header",
      {},
      el("h3", { text: job.modelId ?? job.files[0]?.repo ?? job.jobId }),
      el("span", { class: "state", "data-state": job.status, text: job.status }),
      el("span", { class: "muted", text: new Date(job.createdAt).toLocaleString() }),
      took !== null ? el("span", { class: "muted duration", text: duration(took) }) : null,
    ),
    job.error ? el("p", { class: "error", role: "alert", text: job.error }) : null,
    el(
      "ul",
      { class: "files" },
      job.files.map((f) =>
        el(
          "li",
          { class: `file state-${f.status}`, "data-file": f.fileId },
          el("span", { class: "name", text: `${f.repo}/${f.fileName}` }),
          el("span", { class: "state", "data-state": f.status, text: f.status }),
          el("span", { class: "muted", text: ` ${bytes(f.bytesDownloaded)} / ${bytes(f.size)} · attempts ${f.attempts}` }),
          f.error ? el("p", { class: "error file-error", text: f.error }) : null,
          f.stderr
            ? el("details", { class: "stderr" }, el("summary", { text: "Captured stderr" }), el("pre", { text: f.stderr }))
            : null,
        ),
      ),
    ),
  );
}

async function load(reset) {
  if (reset) {
    cursor = null;
    list.replaceChildren();
  }
  const params = new URLSearchParams({ limit: "25" });
  if (filter.value) params.set("status", filter.value);
  if (cursor) params.set("cursor", cursor);
  try {
    const page = await api(`/api/models/download/jobs?${params}`);
    list.append(...page.jobs.map(jobItem));
    cursor = page.nextCursor;
    more.hidden = !cursor;
    problem.hidden = true;
    if (!list.children.length) list.append(el("li", { class: "muted", text: "No jobs yet." }));
  } catch (err) {
    problem.textContent = `Could not load the jobs: ${err.message}`;
    problem.hidden = false;
  }
}

more.addEventListener("click", () => load(false));
filter.addEventListener("change", () => load(true));
load(true);
