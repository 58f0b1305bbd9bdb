// Live downloads: the WebSocket (with reconnection) and the job cards it keeps up to date.

import { api, bytes, duration, el, speed } from "./api.js";

const ACTIONS = {
  queued: ["pause", "cancel"],
  downloading: ["pause", "cancel"],
  paused: ["resume", "cancel"],
  failed: ["retry", "cancel"],
  completed: [],
  cancelled: [],
};

function bar(label, percent) {
  const value = Math.max(0, Math.min(100, Math.round(percent ?? 0)));
  return el(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": String(value),
    },
    el("span", { style: `width: ${value}%` }),
  );
}

export class LiveJobs {
  constructor(container, { onJobEnd } = {}) {
    this.container = container;
    this.jobs = new Map(); // jobId -> job (API shape), files keyed by fileId
    this.live = new Map(); // fileId -> {speed, eta}
    this.onJobEnd = onJobEnd ?? (() => {});
    this.delay = 500;
  }

  connect() {
    const banner = document.getElementById("connection");
    const proto = window.location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${window.location.host}/ws`);
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "subscribe", channel: "download" }));
    });
    ws.addEventListener("message", (msg) => {
      this.delay = 500;
      banner.hidden = true;
      this.handle(JSON.parse(msg.data));
    });
    ws.addEventListener("close", () => {
      banner.textContent = `Connection lost; reconnecting in ${Math.round(this.delay / 1000)} s…`;
      banner.hidden = false;
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 15000);
    });
  }

  handle(message) {
    if (message.type === "snapshot") {
      this.jobs.clear();
      for (const job of message.data.jobs) this.jobs.set(job.jobId, job);
      this.render();
      return;
    }
    if (message.type === "error" || message.type === "pong") return;
    const data = message.data ?? {};
    const job = this.jobs.get(data.jobId);
    if (!job) {
      // A job this page has not seen (started elsewhere): fetch it whole.
      api(`/api/models/download/status/${data.jobId}`)
        .then((fresh) => {
          this.jobs.set(fresh.jobId, fresh);
          this.render();
        })
        .catch(() => {});
      return;
    }
    if (data.scope === "job") {
      const ended = ["completed", "failed", "cancelled"].includes(data.status);
      job.status = data.status;
      job.error = data.error ?? job.error;
      if (ended) {
        this.refresh(job.jobId);
        this.onJobEnd(job);
      }
    } else {
      const file = job.files.find((f) => f.fileId === data.fileId);
      if (file) {
        // Events can arrive out of order (the web tier announces a pause with the row's
        // bytes, the worker then with its own): bars only move back on a restart.
        const restart = ["queued", "cancelled"].includes(data.status) && data.bytesDownloaded === 0;
        if (restart || data.bytesDownloaded >= (file.bytesDownloaded ?? 0)) {
          file.bytesDownloaded = data.bytesDownloaded;
        }
        file.size = data.totalBytes ?? file.size;
        file.status = data.status;
        if (data.error) file.error = data.error;
        this.live.set(file.fileId, { speed: data.speed, eta: data.eta });
      }
      if (job.status === "queued" && data.status === "downloading") job.status = "downloading";
    }
    this.render();
  }

  refresh(jobId) {
    api(`/api/models/download/status/${jobId}`)
      .then((fresh) => {
        this.jobs.set(jobId, fresh);
        this.render();
      })
      .catch(() => {});
  }

  async act(jobId, action) {
    try {
      const fresh = await api(`/api/models/download/${jobId}/${action}`, { method: "POST" });
      // The row's bytes lag the live events by up to a second: never move a bar backwards.
      const old = this.jobs.get(jobId);
      for (const file of fresh.files) {
        const before = old?.files.find((f) => f.fileId === file.fileId);
        if (before && file.status !== "cancelled") {
          file.bytesDownloaded = Math.max(file.bytesDownloaded, before.bytesDownloaded ?? 0);
        }
      }
      this.jobs.set(jobId, fresh);
      this.render();
    } catch (err) {
      this.flash(jobId, err.message);
    }
  }

  flash(jobId, text) {
    const card = this.container.querySelector(`[data-job="${jobId}"] .job-error`);
    if (card) {
      card.textContent = text;
      card.hidden = false;
    }
  }

  render() {
    const jobs = [...this.jobs.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    this.container.replaceChildren(...jobs.map((job) => this.card(job)));
    document.getElementById("no-downloads").hidden = jobs.length > 0;
  }

  card(job) {
    const total = job.files.reduce((sum, f) => sum + (f.size ?? 0), 0);
    const done = job.files.reduce((sum, f) => sum + (f.bytesDownloaded ?? 0), 0);
    const known = job.files.every((f) => f.size !== null && f.size !== undefined);
    // Sizes arrive as files start: until all are known, the bar counts the known ones.
    const overall = job.status === "completed" ? 100 : total ? (100 * done) / total : 0;
    const title = job.modelId ?? job.files[0]?.repo ?? job.jobId;
    const buttons = (ACTIONS[job.status] ?? []).map((action) =>
      el("button", {
        type: "button",
        class: `action ${action}`,
        text: action[0].toUpperCase() + action.slice(1),
        "aria-label": `${action} ${title}`,
        onclick: () => this.act(job.jobId, action),
      }),
    );
    return el(
      "article",
      { class: `job state-${job.status}`, "data-job": job.jobId, "aria-label": `Download ${title}` },
      el(
        "header",
        {},
        el("h3", { text: title }),
        el("span", { class: "state", "data-state": job.status, text: job.status }),
        el("span", { class: "actions" }, buttons),
      ),
      bar(`${title} overall`, overall),
      el("p", { class: "muted", text: `${bytes(done)} of ${bytes(total)}${known ? "" : " so far"}` }),
      el("p", { class: "job-error error", role: "alert", hidden: !job.error, text: job.error ?? "" }),
      el("ul", { class: "files" }, job.files.map((f) => this.fileRow(f))),
    );
  }

  fileRow(file) {
    const live = this.live.get(file.fileId) ?? {};
    const pct = file.status === "completed" ? 100 : file.size ? (100 * file.bytesDownloaded) / file.size : 0;
    const details = [
      `${bytes(file.bytesDownloaded)} / ${bytes(file.size)}`,
      file.status === "downloading" ? speed(live.speed) : "",
      file.status === "downloading" && live.eta ? `ETA ${duration(live.eta)}` : "",
    ].filter(Boolean);
    return el(
      "li",
      { class: `file state-${file.status}`, "data-file": file.fileId },
      el(
        "div",
        { class: "file-head" },
        el("span", { class: "name", text: file.fileName }),
        el("span", { class: "state", "data-state": file.status, text: file.status }),
      ),
      bar(file.fileName, pct),
      el("p", { class: "muted details", text: details.join(" · ") }),
      file.error ? el("p", { class: "error file-error", text: file.error }) : null,
    );
  }
}
