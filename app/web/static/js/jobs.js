// The jobs page: the history, newest first, with files, durations, errors and captured
// stderr, kept live over the WebSocket: states, bars and bytes move as events arrive, and a
// job started meanwhile appears at the top.

import { api, setHidden } from "./api.js";
import { JobView } from "./cards.js";
import { JobFeed } from "./feed.js";

const list = document.getElementById("jobs");
const more = document.getElementById("more");
const filter = document.getElementById("status-filter");
const problem = document.getElementById("jobs-error");
const empty = document.getElementById("no-jobs");
const views = new Map(); // jobId -> JobView of a job on the page
let cursor = null; // the next page of older jobs, if any
let loaded = false;
let frame = null;

const feed = new JobFeed({
  onUpdate: ({ job, removed }) => (removed ? forget(job.jobId) : show(job)),
  onTick: () => schedule(),
  onState: () => render(),
});

function newer(a, b) {
  return (a.createdAt ?? "") > (b.createdAt ?? "");
}

// Put a job on the page in its place by creation time, unless it is older than the last
// one shown while older pages are still to load ("Load more" brings it), or the filter
// says no. A job once shown stays (and keeps changing) until the list is reloaded.
function show(job, { force = false } = {}) {
  if (!views.has(job.jobId)) {
    if (!force && (!loaded || (filter.value && job.status !== filter.value))) return;
    const before = [...list.children].find((node) => newer(job, feed.jobs.get(node.dataset.job) ?? {}));
    if (!force && !before && cursor) return;
    const view = new JobView(job, { history: true });
    views.set(job.jobId, view);
    list.insertBefore(view.root, before ?? null);
  }
  schedule();
}

function forget(jobId) {
  views.get(jobId)?.root.remove();
  views.delete(jobId);
  schedule();
}

function schedule() {
  if (frame === null) frame = requestAnimationFrame(render);
}

function render() {
  if (frame !== null) cancelAnimationFrame(frame);
  frame = null;
  for (const [jobId, view] of views) {
    const job = feed.jobs.get(jobId);
    if (job) view.update(job, { offline: feed.offline, rate: feed.rate(job), fileSpeed: feed.fileSpeed });
  }
  setHidden(empty, !loaded || views.size > 0);
}

async function load(reset) {
  if (reset) {
    cursor = null;
    loaded = false;
    views.clear();
    list.replaceChildren();
  }
  const params = new URLSearchParams({ limit: "25" });
  if (filter.value) params.set("status", filter.value);
  if (cursor) params.set("cursor", cursor);
  const asOf = Date.now();
  try {
    const page = await api(`/api/models/download/jobs?${params}`);
    for (const job of page.jobs) show(feed.put(job, asOf), { force: true });
    cursor = page.nextCursor;
    loaded = true;
    setHidden(more, !cursor);
    setHidden(problem, true);
    // Active jobs the snapshot brought before the list was in: now they have a place.
    for (const job of feed.jobs.values()) show(job);
  } catch (err) {
    problem.textContent = `Could not load the jobs: ${err.message}`;
    setHidden(problem, false);
  }
  render();
}

more.addEventListener("click", () => load(false));
filter.addEventListener("change", () => load(true));
load(true);
feed.connect();
