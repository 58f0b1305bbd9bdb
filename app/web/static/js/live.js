// The Downloads section of the models page: active jobs first, as live cards with their
// controls; finished, failed and cancelled jobs collapse into a short Recent list that can be
// dismissed one by one or cleared (dismissals are remembered; the Jobs page keeps the history).
//
// models.js (and picker.js) drive it: new LiveJobs(container, {onJobEnd}), connect(), jobs
// (a Map), render(), add(job, {reveal}), onChange(callback), activeJobFor(modelId).

import { api, bytes, el, setAttr, setHidden, setText } from "./api.js";
import { JobView, titleOf } from "./cards.js";
import { ACTIVE, ENDED, JobFeed, totalOf } from "./feed.js";

const RECENT_MAX = 5;
const RECENT_FETCH = 10; // the snapshot has only active jobs; the newest others come from here
// A job that ends while the page watches keeps its card this long, then joins Recent
// (longer while the pointer or the keyboard is on it).
const LINGER_MS = 8000;
const DISMISSED_KEY = "modelpull.dismissedJobs";
const DISMISSED_MAX = 200;

function loadDismissed() {
  try {
    const ids = JSON.parse(window.localStorage.getItem(DISMISSED_KEY) ?? "[]");
    return new Set(Array.isArray(ids) ? ids.filter((id) => typeof id === "string") : []);
  } catch {
    return new Set();
  }
}

function newestFirst(a, b) {
  const at = (j) => j.finishedAt ?? j.createdAt ?? "";
  return at(a) < at(b) ? 1 : at(a) > at(b) ? -1 : 0;
}

// Put `nodes` in `parent` in this order, moving as few as possible: a node that moves (or
// is taken out and put back) loses the keyboard focus inside it.
function place(parent, nodes) {
  const keep = new Set(nodes);
  for (const child of [...parent.children]) if (!keep.has(child)) child.remove();
  let cursor = parent.firstElementChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(node, cursor);
  }
}

class RecentItem {
  constructor(job, { onDismiss, onRetry }) {
    const title = titleOf(job);
    this.badge = el("span", { class: "state" });
    this.summary = el("span", { class: "muted summary" });
    this.retry = el("button", {
      type: "button",
      class: "action retry",
      text: "Retry",
      "aria-label": `retry ${title}`,
      hidden: true,
      onclick: () => onRetry(job.jobId),
    });
    this.dismiss = el("button", {
      type: "button",
      class: "dismiss",
      text: "×",
      title: "Dismiss",
      "aria-label": `Dismiss ${title}`,
      onclick: () => onDismiss(job.jobId),
    });
    this.root = el(
      "li",
      { class: "recent-item", "data-job": job.jobId },
      this.badge,
      el("span", { class: "name", text: title }),
      this.summary,
      this.retry,
      this.dismiss,
    );
  }

  update(job, offline) {
    setAttr(this.badge, "data-state", job.status);
    setText(this.badge, job.status);
    const total = totalOf(job);
    const text =
      job.status === "failed"
        ? (job.error ?? "")
        : job.status === "completed"
          ? bytes(total)
          : `${bytes(job.files.reduce((s, f) => s + (f.bytesDownloaded ?? 0), 0))} of ${bytes(total)}`;
    setText(this.summary, text);
    setAttr(this.summary, "title", text);
    setHidden(this.retry, job.status !== "failed");
    if (this.retry.disabled !== offline) this.retry.disabled = offline;
  }
}

export class LiveJobs {
  constructor(container, { onJobEnd } = {}) {
    this.container = container;
    this.onJobEnd = onJobEnd ?? (() => {});
    this.listeners = [];
    this.views = new Map(); // jobId -> JobView, kept while the page lives (same buttons)
    this.items = new Map(); // jobId -> RecentItem
    this.endedAt = new Map(); // jobId -> when this page saw the job end
    this.busy = new Set(); // jobIds with a control request under way
    this.dismissed = loadDismissed();
    this.frame = null;
    this.notifying = false;
    this.filesDone = new Set(); // fileIds seen completed: a model's file is on disk now
    this.feed = new JobFeed({
      onUpdate: (u) => this.updated(u),
      onSnapshot: () => this.loadRecent(),
      onTick: () => this.schedule(),
      onState: () => this.render(),
    });
    this.jobs = this.feed.jobs;
    this.cards = el("div", { class: "active-jobs" });
    this.recentList = el("ul", { class: "recent-list" });
    this.recent = el(
      "section",
      { class: "recent", "aria-label": "Recent downloads", hidden: true },
      el(
        "div",
        { class: "recent-head" },
        el("h3", { text: "Recent" }),
        el("a", { href: "/jobs", text: "History" }),
        el("button", {
          type: "button",
          class: "link clear",
          text: "Clear",
          "aria-label": "Clear recent downloads",
          onclick: () => this.clear(),
        }),
      ),
      this.recentList,
    );
    container.replaceChildren(this.cards, this.recent);
  }

  connect() {
    this.feed.connect();
  }

  // Add or replace a job (the API's dict), e.g. one a Download button just started.
  add(job, { reveal = true } = {}) {
    if (!job?.jobId || !Array.isArray(job.files)) return;
    // A job the page already follows is at least as fresh here as in the caller's answer.
    this.feed.put(job, this.jobs.has(job.jobId) ? -Infinity : Date.now());
    this.render();
    if (reveal) {
      const node = this.views.get(job.jobId)?.root ?? this.items.get(job.jobId)?.root;
      if (node?.isConnected) node.scrollIntoView({ block: "nearest" });
    }
  }

  // callback(jobs) after a job's status changes or one of its files completes.
  onChange(callback) {
    this.listeners.push(callback);
  }

  activeJobFor(modelId) {
    const found = [...this.jobs.values()].filter((j) => j.modelId === modelId && ACTIVE.has(j.status));
    return found.sort(newestFirst)[0] ?? null;
  }

  updated({ job, statusChanged, ended }) {
    if (ended) {
      this.endedAt.set(job.jobId, Date.now());
      this.onJobEnd(job);
    }
    if (ACTIVE.has(job.status) && this.dismissed.delete(job.jobId)) this.saveDismissed();
    this.schedule();
    // A file that completes changes what is on disk (the models page's present marks), even
    // while its job goes on.
    const fileDone = job.files.some((f) => f.status === "completed" && !this.filesDone.has(f.fileId));
    for (const f of job.files) if (f.status === "completed") this.filesDone.add(f.fileId);
    if ((statusChanged || fileDone) && !this.notifying) {
      // One call for a burst of changes (a snapshot changes many jobs at once).
      this.notifying = true;
      queueMicrotask(() => {
        this.notifying = false;
        for (const callback of this.listeners) callback(this.jobs);
      });
    }
  }

  async loadRecent() {
    const asOf = Date.now();
    try {
      const page = await api(`/api/models/download/jobs?limit=${RECENT_FETCH}`);
      for (const job of page.jobs) if (!this.jobs.has(job.jobId)) this.feed.put(job, asOf);
    } catch {
      // The live cards do not need it; the next snapshot tries again.
    }
  }

  async act(jobId, action) {
    if (this.busy.has(jobId)) return; // a double click sends one request
    this.busy.add(jobId);
    this.schedule();
    const asOf = Date.now();
    try {
      this.feed.put(await api(`/api/models/download/${jobId}/${action}`, { method: "POST" }), asOf);
      this.views.get(jobId)?.flash(null);
    } catch (err) {
      this.views.get(jobId)?.flash(`Could not ${action}: ${err.message}`);
    } finally {
      this.busy.delete(jobId);
      this.schedule();
    }
  }

  async retryRecent(jobId) {
    // The job leaves Recent for a card: a keyboard user lands on its Pause button.
    const hadFocus = this.items.get(jobId)?.root.contains(document.activeElement);
    await this.act(jobId, "retry");
    this.render();
    if (hadFocus) this.views.get(jobId)?.buttons.pause?.focus();
  }

  dismiss(jobIds) {
    for (const id of jobIds) this.dismissed.add(id);
    this.saveDismissed();
    this.render();
  }

  saveDismissed() {
    const ids = [...this.dismissed].slice(-DISMISSED_MAX);
    this.dismissed = new Set(ids);
    try {
      window.localStorage.setItem(DISMISSED_KEY, JSON.stringify(ids));
    } catch {
      // Private mode or a full store: dismissals last until the page is closed.
    }
  }

  dismissOne(jobId) {
    // Keep the keyboard in the list: the next item's ×, else the one before, else Clear.
    const node = this.items.get(jobId)?.root;
    const hadFocus = node?.contains(document.activeElement);
    const neighbour = node?.nextElementSibling ?? node?.previousElementSibling;
    this.dismiss([jobId]);
    if (!hadFocus) return;
    const target = neighbour?.isConnected ? neighbour.querySelector("button.dismiss") : null;
    (target ?? this.recent.querySelector("button.clear"))?.focus();
  }

  clear() {
    this.dismiss([...this.jobs.values()].filter((j) => ENDED.has(j.status)).map((j) => j.jobId));
  }

  schedule() {
    // Events come many times a second: draw at most once a frame.
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.render());
  }

  isCard(job, now) {
    if (ACTIVE.has(job.status)) return true;
    const ended = this.endedAt.get(job.jobId);
    if (ended === undefined) return false;
    if (now - ended < LINGER_MS) return true;
    const root = this.views.get(job.jobId)?.root;
    return Boolean(root?.isConnected && root.matches(":hover, :focus-within"));
  }

  render() {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    const now = Date.now();
    const jobs = [...this.jobs.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
    const cards = jobs.filter((j) => this.isCard(j, now));
    const shown = new Set(cards);
    // A lingering card that leaves the cards is done lingering (it never comes back).
    for (const j of jobs) if (!shown.has(j) && this.endedAt.has(j.jobId)) this.endedAt.delete(j.jobId);
    const recent = jobs
      .filter((j) => !shown.has(j) && ENDED.has(j.status) && !this.dismissed.has(j.jobId))
      .sort(newestFirst)
      .slice(0, RECENT_MAX);
    place(this.cards, cards.map((j) => this.card(j)));
    place(this.recentList, recent.map((j) => this.item(j)));
    setHidden(this.recent, recent.length === 0);
    const empty = document.getElementById("no-downloads");
    if (empty) setHidden(empty, cards.length > 0);
  }

  card(job) {
    let view = this.views.get(job.jobId);
    if (!view) {
      view = new JobView(job, { onAction: (id, action) => this.act(id, action) });
      this.views.set(job.jobId, view);
    }
    view.update(job, {
      offline: this.feed.offline,
      rate: this.feed.rate(job),
      fileSpeed: this.feed.fileSpeed,
      busy: this.busy.has(job.jobId),
    });
    return view.root;
  }

  item(job) {
    let item = this.items.get(job.jobId);
    if (!item) {
      item = new RecentItem(job, {
        onDismiss: (id) => this.dismissOne(id),
        onRetry: (id) => this.retryRecent(id),
      });
      this.items.set(job.jobId, item);
    }
    item.update(job, this.feed.offline);
    return item.root;
  }
}
