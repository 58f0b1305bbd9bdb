// A job drawn once and then updated in place: its bars, figures, badges and buttons stay the
// same DOM nodes while the job lives, so a press held on a button lands on the button that
// was pressed and keyboard focus survives a stream of progress events.
//
// Two looks: a card of the Downloads section (with Pause / Resume / Retry / Cancel) and an
// entry of the Jobs page (history: repo names, attempts, times, captured stderr).

import { bytes, duration, el, setAttr, setHidden, setText, speed } from "./api.js";
import { doneOf, isWaiting, totalOf } from "./feed.js";

const ACTIONS = {
  queued: ["pause", "cancel"],
  downloading: ["pause", "cancel"],
  paused: ["resume", "cancel"],
  failed: ["retry", "cancel"],
  completed: [],
  cancelled: [],
};
// Where focus goes when the focused button goes away because the job changed state.
const NEXT_FOCUS = { pause: "resume", resume: "pause", retry: "pause" };
const OFFLINE_NOTE = "Offline: the controls will work when the service is back.";

export function titleOf(job) {
  return job.modelId ?? job.files[0]?.repo ?? job.jobId;
}

function seconds(from, to) {
  if (!from) return null;
  const end = to ? Date.parse(to) : Date.now();
  return Math.max(0, (end - Date.parse(from)) / 1000);
}

// "2 of 3 files failed; a.gguf: why" names one file's error, which that file shows anyway:
// the job says how many failed, each file says why (an error is shown once).
function jobError(job) {
  if (!job.error) return { text: "", split: false };
  const m = /^(\d+ of \d+ files? failed); /.exec(job.error);
  return m ? { text: m[1], split: true } : { text: job.error, split: false };
}

class Bar {
  constructor(label) {
    this.fill = el("span");
    this.value = null;
    this.root = el(
      "div",
      { class: "bar", role: "progressbar", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100" },
      this.fill,
    );
    this.set(0);
  }

  set(percent) {
    const value = Math.max(0, Math.min(100, Math.floor(percent ?? 0)));
    if (value === this.value) return;
    this.value = value;
    this.root.setAttribute("aria-valuenow", String(value));
    this.fill.style.width = `${value}%`;
  }
}

class FileRow {
  constructor(file, history) {
    this.history = history;
    const name = history ? `${file.repo}/${file.fileName}` : file.fileName;
    this.badge = el("span", { class: "state" });
    this.bar = new Bar(file.fileName);
    this.details = el("p", { class: "muted details" });
    this.error = el("p", { class: "error file-error", hidden: true });
    this.stderr = null; // the <details> block, made when there is stderr to show
    this.root = el(
      "li",
      { class: "file", "data-file": file.fileId },
      el("div", { class: "file-head" }, el("span", { class: "name", text: name }), this.badge),
      this.bar.root,
      this.details,
      this.error,
    );
  }

  update(file, job, ctx, errorSplit) {
    const waiting = isWaiting(file);
    const state = waiting ? "waiting" : file.status;
    setAttr(this.root, "class", `file state-${state}`);
    setAttr(this.badge, "data-state", state);
    setText(this.badge, waiting ? "waiting for a worker" : file.status);
    this.bar.set(file.status === "completed" ? 100 : file.size ? (100 * (file.bytesDownloaded ?? 0)) / file.size : 0);
    const live = file.status === "downloading" && !waiting && !ctx.offline;
    const parts = [
      `${bytes(file.status === "completed" ? (file.size ?? file.bytesDownloaded) : file.bytesDownloaded)} / ${bytes(file.size)}`,
      live ? speed(ctx.fileSpeed.get(file.fileId)) : "",
      this.history ? `attempts ${file.attempts ?? 0}` : "",
    ];
    setText(this.details, parts.filter(Boolean).join(" · "));
    const showError = Boolean(file.error) && (errorSplit || file.error !== job.error);
    setText(this.error, showError ? file.error : "");
    setHidden(this.error, !showError);
    if (this.history) this.updateStderr(file.stderr);
  }

  updateStderr(text) {
    if (!text) {
      this.stderr?.remove();
      this.stderr = null;
    } else if (!this.stderr) {
      this.stderr = el("details", { class: "stderr" }, el("summary", { text: "Captured stderr" }), el("pre", { text }));
      this.root.append(this.stderr);
    } else {
      setText(this.stderr.querySelector("pre"), text);
    }
  }
}

export class JobView {
  constructor(job, { history = false, onAction = null } = {}) {
    const title = titleOf(job);
    this.history = history;
    this.files = new Map(); // fileId -> FileRow
    this.high = 0; // the overall bar while the total is unknown: never backwards
    this.badge = el("span", { class: "state" });
    this.buttons = {};
    if (onAction) {
      for (const action of ["pause", "resume", "retry", "cancel"]) {
        this.buttons[action] = el("button", {
          type: "button",
          class: `action ${action}`,
          text: action[0].toUpperCase() + action.slice(1),
          "aria-label": `${action} ${title}`,
          hidden: true,
          onclick: () => onAction(job.jobId, action),
        });
      }
    }
    this.created = el("span", { class: "muted created" });
    this.took = el("span", { class: "muted duration" });
    const header = history
      ? el("header", {}, el("h3", { text: title }), this.badge, this.created, this.took)
      : el("header", {}, el("h3", { text: title }), this.badge, el("span", { class: "actions" }, Object.values(this.buttons)));
    this.bar = new Bar(`${title} overall`);
    this.amount = el("span", { class: "amount" });
    this.speed = el("span", { class: "job-speed", hidden: true });
    this.eta = el("span", { class: "job-eta", hidden: true });
    this.note = el("p", { class: "offline-note", hidden: true, text: OFFLINE_NOTE });
    this.error = el("p", { class: "job-error error", role: "alert", hidden: true });
    this.actionError = el("p", { class: "action-error error", role: "alert", hidden: true });
    this.list = el("ul", { class: "files" });
    this.root = el(
      history ? "li" : "article",
      { class: "job", "data-job": job.jobId, "aria-label": `${history ? "Job" : "Download"} ${title}` },
      header,
      this.bar.root,
      el("p", { class: "muted summary" }, this.amount, this.speed, this.eta),
      this.note,
      this.error,
      this.actionError,
      this.list,
    );
  }

  // ctx: {offline, rate: {speed, eta} | null, fileSpeed: Map, busy: bool}
  update(job, ctx) {
    setAttr(this.root, "class", `job state-${job.status}`);
    setAttr(this.badge, "data-state", job.status);
    setText(this.badge, job.status);
    const total = totalOf(job);
    const done = doneOf(job);
    let percent = job.status === "completed" ? 100 : total ? (100 * done) / total : 0;
    if (total === null) percent = this.high = Math.max(this.high, percent);
    this.bar.set(percent);
    setText(this.amount, `${bytes(done)} of ${bytes(total)}${total === null ? " so far" : ""}`);
    const rate = ctx.rate;
    setText(this.speed, rate ? speed(rate.speed) : "");
    setHidden(this.speed, !rate);
    setText(this.eta, rate && rate.eta !== null ? `${duration(rate.eta)} left` : "");
    setHidden(this.eta, !rate || rate.eta === null);
    const { text, split } = jobError(job);
    setText(this.error, text);
    setHidden(this.error, !text);
    if (this.history) this.updateTimes(job);
    else this.updateButtons(job, ctx);
    for (const file of job.files) {
      let row = this.files.get(file.fileId);
      if (!row) {
        row = new FileRow(file, this.history);
        this.files.set(file.fileId, row);
        this.list.append(row.root);
      }
      row.update(file, job, ctx, split);
    }
  }

  updateTimes(job) {
    setText(this.created, job.createdAt ? new Date(job.createdAt).toLocaleString() : "");
    const took = seconds(job.startedAt, job.finishedAt);
    setText(this.took, took === null ? "" : duration(took));
    setHidden(this.took, took === null);
  }

  updateButtons(job, ctx) {
    const allowed = ACTIONS[job.status] ?? [];
    let lostFocus = null;
    for (const [action, button] of Object.entries(this.buttons)) {
      const show = allowed.includes(action);
      if (!show && !button.hidden && document.activeElement === button) lostFocus = action;
      setHidden(button, !show);
      if (button.disabled !== ctx.offline) button.disabled = ctx.offline;
      setAttr(button, "aria-busy", ctx.busy ? "true" : "false");
    }
    setHidden(this.note, !ctx.offline || allowed.length === 0);
    if (lostFocus) {
      // Pause became Resume (or the other way): keep the keyboard where the user was.
      const next = this.buttons[NEXT_FOCUS[lostFocus]];
      const target = next && !next.hidden ? next : allowed.map((a) => this.buttons[a]).find((b) => !b.hidden);
      target?.focus();
    }
  }

  flash(text) {
    setText(this.actionError, text ?? "");
    setHidden(this.actionError, !text);
  }
}
