// A page's picture of the download jobs: the WebSocket's snapshot and events applied to the
// API's job dicts, each job's smoothed speed and ETA, and a second look at files whose
// worker went quiet. Pages draw from it (live.js on the models page, jobs.js on /jobs).

import { api } from "./api.js";
import { Connection } from "./connection.js";
import { RateMeter } from "./rate.js";

export const ACTIVE = new Set(["queued", "downloading", "paused"]);
export const ENDED = new Set(["completed", "failed", "cancelled"]);
const MOVING = new Set(["downloading", "verifying"]);
// Workers publish progress every quarter second and heartbeat every second: a moving file
// unheard of for this long may have lost its worker, and the job store can tell.
const QUIET_MS = 5000;

// Bytes a job has on disk: a completed file counts whole even if its last event was lost.
export function doneOf(job) {
  return job.files.reduce(
    (sum, f) => sum + (f.status === "completed" ? (f.size ?? f.bytesDownloaded ?? 0) : (f.bytesDownloaded ?? 0)),
    0,
  );
}

// A job's size: known at creation when the Hub told sizes, else once every file's is known.
export function totalOf(job) {
  if (job.totalBytes !== null && job.totalBytes !== undefined) return job.totalBytes;
  if (job.files.every((f) => f.size !== null && f.size !== undefined)) {
    return job.files.reduce((sum, f) => sum + f.size, 0);
  }
  return null;
}

// A file that waits for a worker: its worker stopped heartbeating (the job store says so),
// or it is back in the queue with bytes already fetched (its worker died, or the job was
// resumed). A file that never started is simply queued.
export function isWaiting(file) {
  if (MOVING.has(file.status)) return Boolean(file.waitingForWorker);
  return file.status === "queued" && (file.bytesDownloaded ?? 0) > 0;
}

export class JobFeed {
  // onUpdate({job, statusChanged, ended}) after each change; onSnapshot() after each
  // snapshot (the first and every reconnection); onTick() every second.
  constructor({ onUpdate, onSnapshot, onTick, onState } = {}) {
    this.jobs = new Map(); // jobId -> job dict (the API's shape)
    this.fileSpeed = new Map(); // fileId -> bytes/s its worker last measured
    this.heard = new Map(); // fileId -> when the page last heard of it (ms)
    this.jobHeard = new Map(); // jobId -> when a job event last came (ms)
    this.meters = new Map(); // jobId -> RateMeter
    this.checked = new Map(); // jobId -> when its quiet files were last looked up (ms)
    this.fetching = new Map(); // jobId -> whether to fetch again when the answer is in
    this.announced = new Map(); // jobId -> the state news gave it before the page had it
    this.onUpdate = onUpdate ?? (() => {});
    this.onSnapshot = onSnapshot ?? (() => {});
    this.onTick = onTick ?? (() => {});
    this.connection = new Connection({
      onMessage: (m) => this.handle(m),
      onState: (online) => {
        for (const meter of this.meters.values()) meter.reset();
        (onState ?? (() => {}))(online);
      },
    });
  }

  get offline() {
    return this.connection.offline;
  }

  connect() {
    this.connection.connect();
    setInterval(() => this.tick(), 1000);
  }

  handle(message) {
    if (message.type === "snapshot") {
      this.snapshot(message.data?.jobs ?? []);
      return;
    }
    const data = message.data;
    if (!data?.jobId || message.type === "error" || message.type === "pong") return;
    const job = this.jobs.get(data.jobId);
    if (!job) {
      // A job this page has not seen (started elsewhere): fetch it whole. If this news says
      // it is under way, it is: a job that has ended by the time the answer comes (a file
      // the Hub refuses fails in a moment) ended while this page watched.
      if (ACTIVE.has(data.status) || MOVING.has(data.status)) this.announced.set(data.jobId, "queued");
      this.fetch(data.jobId);
      return;
    }
    const before = job.status;
    if (data.scope === "job") this.applyJob(job, data);
    else this.applyFile(job, data);
    this.changed(job, before);
  }

  applyJob(job, data) {
    this.jobHeard.set(job.jobId, Date.now());
    job.status = data.status;
    if (data.totalBytes !== null && data.totalBytes !== undefined) job.totalBytes = data.totalBytes;
    if (data.status === "failed") job.error = data.error ?? job.error;
    else if (data.status !== "cancelled") job.error = null;
    // The end of a job: its row has the final word (finish time, errors, stderr).
    if (ENDED.has(data.status)) this.fetch(job.jobId);
  }

  applyFile(job, data) {
    const file = job.files.find((f) => f.fileId === data.fileId);
    if (!file) return;
    // Events can arrive out of order (the web tier announces a pause with the row's bytes,
    // the worker then with its own): bytes only go back on a restart.
    const restart = ["queued", "cancelled"].includes(data.status) && data.bytesDownloaded === 0;
    if (restart || data.bytesDownloaded >= (file.bytesDownloaded ?? 0)) {
      file.bytesDownloaded = data.bytesDownloaded;
    }
    if (data.totalBytes !== null && data.totalBytes !== undefined) file.size = data.totalBytes;
    file.status = data.status;
    file.waitingForWorker = false; // someone just spoke for it
    if (data.status === "failed") {
      file.error = data.error ?? file.error;
      file.stderr = data.stderr ?? file.stderr;
    } else if (data.status !== "cancelled") {
      file.error = null;
    }
    this.heard.set(file.fileId, Date.now());
    this.fileSpeed.set(file.fileId, data.status === "downloading" ? (data.speed ?? 0) : 0);
    if (job.status === "queued" && data.status === "downloading") job.status = "downloading";
  }

  snapshot(list) {
    const now = Date.now();
    const seen = new Set();
    for (const job of list) {
      seen.add(job.jobId);
      for (const file of job.files) this.heard.set(file.fileId, now);
      this.put(job, now);
    }
    // Active here but not in the store's active list: it ended while the page was not told.
    for (const [jobId, job] of this.jobs) {
      if (ACTIVE.has(job.status) && !seen.has(jobId)) this.fetch(jobId);
    }
    this.onSnapshot();
  }

  // Take a job dict from the API (or the snapshot), asked for at `asOf` (ms; -Infinity: keep
  // what the page knows and add only what it lacks): what events said after that is newer,
  // and the row's bytes lag the events by up to a second.
  put(fresh, asOf = Date.now()) {
    const old = this.jobs.get(fresh.jobId);
    const before = old?.status ?? this.announced.get(fresh.jobId);
    this.announced.delete(fresh.jobId);
    const now = Date.now();
    if (old) {
      if ((this.jobHeard.get(fresh.jobId) ?? -1) > asOf) {
        fresh.status = old.status;
        fresh.error = old.error;
      }
      for (const file of fresh.files) {
        const was = old.files.find((f) => f.fileId === file.fileId);
        if (!was) continue;
        if ((this.heard.get(file.fileId) ?? -1) > asOf) {
          Object.assign(file, {
            status: was.status,
            bytesDownloaded: was.bytesDownloaded,
            size: was.size ?? file.size,
            error: was.error,
            waitingForWorker: false,
          });
        } else if (file.bytesDownloaded > 0 || !["queued", "cancelled", "failed"].includes(file.status)) {
          file.bytesDownloaded = Math.max(file.bytesDownloaded ?? 0, was.bytesDownloaded ?? 0);
        }
      }
    }
    for (const file of fresh.files) {
      if (!this.heard.has(file.fileId)) this.heard.set(file.fileId, now);
    }
    this.jobs.set(fresh.jobId, fresh);
    this.changed(fresh, before);
    return fresh;
  }

  changed(job, before) {
    const statusChanged = before !== job.status;
    const ended = statusChanged && ACTIVE.has(before) && ENDED.has(job.status);
    this.onUpdate({ job, statusChanged, ended });
  }

  // Fetch a job whole; a request already under way is followed by one more, so an answer
  // never predates the reason for asking.
  async fetch(jobId) {
    if (this.fetching.has(jobId)) {
      this.fetching.set(jobId, true);
      return;
    }
    this.fetching.set(jobId, false);
    const asOf = Date.now();
    try {
      this.put(await api(`/api/models/download/status/${jobId}`), asOf);
    } catch (err) {
      if (err.status === 404 && this.jobs.has(jobId)) {
        // Deleted from the history: nothing to show any more.
        const job = this.jobs.get(jobId);
        this.jobs.delete(jobId);
        this.onUpdate({ job, statusChanged: true, ended: false, removed: true });
      }
    } finally {
      const again = this.fetching.get(jobId);
      this.fetching.delete(jobId);
      if (again) this.fetch(jobId);
    }
  }

  tick() {
    const now = Date.now();
    for (const job of this.jobs.values()) {
      let meter = this.meters.get(job.jobId);
      if (!meter) this.meters.set(job.jobId, (meter = new RateMeter()));
      if (job.status === "downloading" && !this.offline) meter.sample(now / 1000, doneOf(job));
      else meter.reset();
      if (this.offline || !ACTIVE.has(job.status)) continue;
      const quiet = job.files.some(
        (f) => MOVING.has(f.status) && now - (this.heard.get(f.fileId) ?? now) >= QUIET_MS,
      );
      if (quiet && now - (this.checked.get(job.jobId) ?? 0) >= QUIET_MS) {
        this.checked.set(job.jobId, now);
        this.fetch(job.jobId);
      }
    }
    this.onTick();
  }

  // The job's smoothed {speed, eta}, or null when there is nothing honest to show.
  rate(job) {
    if (this.offline || job.status !== "downloading") return null;
    if (job.files.some((f) => MOVING.has(f.status) && f.waitingForWorker)) return null;
    const meter = this.meters.get(job.jobId);
    const speed = meter?.speed() ?? null;
    if (speed === null) return null;
    const total = totalOf(job);
    return { speed, eta: total === null ? null : meter.eta(Math.max(0, total - doneOf(job))) };
  }
}
