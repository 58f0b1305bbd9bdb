// The repo picker: any Hub repo's files with their sizes, grouped by folder, filtered by
// name, picked with checkboxes and downloaded as one job that joins the live Downloads.

import { api, bytes, el } from "./api.js";

// A repo with more files than this starts with its folders closed (a link to a folder
// or a file opens that one): a long list would bury the top-level files.
const OPEN_FOLDERS_UP_TO = 40;
const ACTIVE = ["queued", "downloading", "paused"];
const FETCHING = ["queued", "downloading", "verifying", "paused"];

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// Put a job (new or the existing one the API answered with) on the page and bring its card
// into view. live.add is LiveJobs' own way; the fallback keeps older live.js working.
export function showJob(live, job) {
  if (typeof live.add === "function") {
    live.add(job, { reveal: true });
    return;
  }
  live.jobs.set(job.jobId, job);
  live.render();
  document
    .querySelector(`#jobs-live [data-job="${CSS.escape(job.jobId)}"]`)
    ?.scrollIntoView({ block: "center" });
}

function folderOf(path) {
  const cut = path.lastIndexOf("/");
  return cut < 0 ? "" : path.slice(0, cut);
}

function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

function sum(files) {
  return files.reduce((total, f) => total + (f.size ?? 0), 0);
}

// Every space-separated word of the filter must occur in the path, in any case.
function matcher(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  return (path) => words.every((w) => path.toLowerCase().includes(w));
}

export class RepoPicker {
  constructor({ form, input, error, view, live }) {
    this.form = form;
    this.input = input;
    this.error = error;
    this.view = view;
    this.live = live;
    this.showButton = form.querySelector("button[type=submit]");
    this.repo = null; // the API's answer for the repo on show
    this.rows = new Map(); // path -> {file, row, box, mark}
    this.selected = new Set();
    this.request = 0;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.show(input.value);
    });
  }

  focus() {
    this.form.scrollIntoView({ block: "start", behavior: "smooth" });
    this.input.focus({ preventScroll: true });
  }

  fail(text) {
    this.error.textContent = text;
    this.error.hidden = false;
  }

  async show(text) {
    const id = text.trim();
    this.error.hidden = true;
    if (!id) {
      this.fail("Enter a repo id like org/name, or paste a link to a repo or a file on the Hub.");
      this.input.focus();
      return;
    }
    // Answers can come back out of order: only the latest request's is shown.
    const request = ++this.request;
    this.showButton.disabled = true;
    this.view.setAttribute("aria-busy", "true");
    try {
      const repo = await api(`/api/hub/repo?id=${encodeURIComponent(id)}`);
      if (request === this.request) this.open(repo);
    } catch (err) {
      if (request !== this.request) return;
      this.repo = null;
      this.view.hidden = true;
      this.view.replaceChildren();
      this.fail(err.message);
    } finally {
      if (request === this.request) {
        this.showButton.disabled = false;
        this.view.setAttribute("aria-busy", "false");
      }
    }
  }

  open(repo) {
    this.repo = repo;
    this.rows.clear();
    this.selected.clear();
    this.watched = new Set(); // jobs seen active since the list was read
    const chosen = repo.files.find((f) => f.path === repo.selected);
    if (chosen && !chosen.present) this.selected.add(chosen.path);
    this.filterBox = el("input", {
      type: "search",
      id: "hub-filter",
      placeholder: "e.g. Q4_K_M",
      autocomplete: "off",
      spellcheck: "false",
      oninput: () => this.filter(),
    });
    this.matches = el("span", { class: "muted", id: "hub-matches", "aria-live": "polite" });
    this.summary = el("p", { id: "hub-selection", "aria-live": "polite" });
    this.downloadButton = el("button", {
      type: "button",
      id: "hub-download",
      text: "Download selected",
      onclick: () => this.download(),
    });
    this.status = el("p", { id: "hub-status", class: "muted", role: "status" });
    this.failure = el("p", { id: "hub-download-error", class: "error", role: "alert", hidden: true });
    this.view.replaceChildren(
      this.header(repo),
      el(
        "div",
        { class: "picker-tools" },
        el("label", { for: "hub-filter", text: "Filter files" }),
        this.filterBox,
        el("button", {
          type: "button",
          class: "secondary",
          text: "Select shown",
          onclick: () => this.selectShown(true),
        }),
        el("button", {
          type: "button",
          class: "secondary",
          text: "Clear selection",
          onclick: () => this.selectShown(false, true),
        }),
        this.matches,
      ),
      this.tree(repo),
      el(
        "div",
        { class: "picker-foot" },
        this.summary,
        this.downloadButton,
        el("span", { class: "muted", text: `Files are saved under ${repo.repo}/ in the models folder.` }),
      ),
      this.status,
      this.failure,
    );
    this.view.hidden = false;
    if (chosen?.present) this.status.textContent = `${chosen.path} is already in the models folder.`;
    this.filter();
    this.sync(this.live.jobs);
    const target = chosen
      ? this.rows.get(chosen.path)?.row
      : this.view.querySelector(`details[data-folder="${CSS.escape(repo.folder ?? "")}"]`);
    (target ?? this.view).scrollIntoView({ block: "nearest" });
  }

  header(repo) {
    const denied = repo.access === "denied";
    const gated = repo.gated
      ? el("span", {
          class: "badge",
          "data-state": denied ? "denied" : "gated",
          text: denied ? "gated: no access" : "gated",
        })
      : null;
    const files = `${plural(repo.files.length, "file")} · ${bytes(repo.totalBytes)}`;
    return el(
      "div",
      { class: "picker-head" },
      el(
        "div",
        { class: "picker-title" },
        el("h3", { id: "hub-repo-name", text: repo.repo }),
        el("span", { class: "muted", text: `${repo.revision} · ${repo.commit.slice(0, 7)}` }),
        gated,
      ),
      el("p", { class: "muted", text: files }),
      repo.message
        ? el("p", {
            class: denied ? "error picker-access" : "muted picker-access",
            role: denied ? "alert" : null,
            text: repo.message,
          })
        : null,
    );
  }

  tree(repo) {
    const groups = new Map();
    for (const file of repo.files) {
      const folder = folderOf(file.path);
      if (!groups.has(folder)) groups.set(folder, []);
      groups.get(folder).push(file);
    }
    const opened = (folder) => {
      if (repo.folder) return folder === repo.folder || folder.startsWith(`${repo.folder}/`);
      if (repo.selected) return folder === folderOf(repo.selected);
      return repo.files.length <= OPEN_FOLDERS_UP_TO;
    };
    const folders = [...groups.keys()].sort();
    return el(
      "div",
      { class: "picker-files", id: "hub-files" },
      folders.map((folder) => {
        const files = groups.get(folder);
        const list = el("ul", { class: "picker-list" }, files.map((f) => this.fileRow(f)));
        if (!folder) return el("div", { class: "folder folder-top", "data-folder": "" }, list);
        return el(
          "details",
          { class: "folder", "data-folder": folder, open: opened(folder) },
          el(
            "summary",
            {},
            el("span", { class: "name", text: `${folder}/` }),
            el("span", {
              class: "muted folder-count",
              text: ` ${plural(files.length, "file")} · ${bytes(sum(files))}`,
            }),
          ),
          list,
        );
      }),
    );
  }

  fileRow(file) {
    const id = `hubf-${this.rows.size}`;
    const box = el("input", {
      type: "checkbox",
      id,
      value: file.path,
      "aria-label": file.path,
      checked: this.selected.has(file.path),
      disabled: file.present,
      onchange: (event) => {
        if (event.target.checked) this.selected.add(file.path);
        else this.selected.delete(file.path);
        this.update();
      },
    });
    const mark = el("span", { class: "badge file-mark", hidden: true });
    const row = el(
      "li",
      { class: "hub-file", "data-path": file.path },
      box,
      el("label", { for: id, class: "name", title: file.path, text: baseName(file.path) }),
      el("span", { class: "size", text: bytes(file.size) }),
      mark,
    );
    this.rows.set(file.path, { file, row, box, mark });
    this.mark(file.path, file.present ? "present" : null);
    return row;
  }

  mark(path, state) {
    const entry = this.rows.get(path);
    if (!entry) return;
    entry.mark.hidden = !state;
    entry.mark.dataset.state = state ?? "";
    entry.mark.textContent = state ?? "";
    if (state === "present") {
      entry.box.checked = false;
      entry.box.disabled = true;
      this.selected.delete(path);
    }
  }

  filter() {
    const query = this.filterBox.value.trim();
    const matches = matcher(query);
    let shown = 0;
    for (const { file, row } of this.rows.values()) {
      row.hidden = !matches(file.path);
      if (!row.hidden) shown += 1;
    }
    for (const group of this.view.querySelectorAll(".folder")) {
      const any = group.querySelector("li.hub-file:not([hidden])") !== null;
      group.hidden = !any;
      // A filter opens every folder that holds a match, so nothing matching stays folded.
      if (query && any && group.tagName === "DETAILS") group.open = true;
    }
    const total = this.rows.size;
    this.matches.textContent = query ? `${shown} of ${plural(total, "file")} match` : "";
    this.update();
  }

  selectShown(on, everything = false) {
    for (const { file, row, box } of this.rows.values()) {
      if (box.disabled || (!everything && row.hidden)) continue;
      box.checked = on;
      if (on) this.selected.add(file.path);
      else this.selected.delete(file.path);
    }
    this.update();
  }

  update() {
    const picked = [...this.selected].map((p) => this.rows.get(p).file);
    const hidden = picked.filter((f) => this.rows.get(f.path).row.hidden).length;
    this.summary.textContent = picked.length
      ? `${plural(picked.length, "file")} · ${bytes(sum(picked))} selected` +
        (hidden ? ` (${hidden} hidden by the filter)` : "")
      : "No files selected";
    this.downloadButton.disabled = !picked.length || this.repo.access === "denied";
  }

  async download() {
    const repo = this.repo;
    const files = [...this.selected].sort();
    const size = sum(files.map((p) => this.rows.get(p).file));
    this.downloadButton.disabled = true;
    this.failure.hidden = true;
    this.status.textContent = "Starting the download…";
    try {
      const job = await api("/api/downloads", {
        method: "POST",
        body: { repo: repo.repo, files, revision: repo.revision },
      });
      if (repo === this.repo) this.watched.add(job.jobId);
      showJob(this.live, job);
      this.status.textContent = job.existing
        ? `These files are already being downloaded: that download is shown in Downloads.`
        : `Downloading ${plural(files.length, "file")} (${bytes(size)}): follow it in Downloads.`;
      if (repo === this.repo) this.selectShown(false, true);
      this.sync(this.live.jobs);
    } catch (err) {
      this.status.textContent = "";
      this.failure.textContent = `Could not start the download: ${err.message}`;
      this.failure.hidden = false;
      this.update();
    }
  }

  // Mark the files that a job on the page is fetching, and those it has finished since the
  // list was read (an older finished job proves nothing: its file may be gone since).
  sync(jobs) {
    if (!this.repo) return;
    const states = new Map();
    for (const job of jobs.values()) {
      if (ACTIVE.includes(job.status)) this.watched.add(job.jobId);
      for (const f of job.files ?? []) {
        if (!this.rows.has(f.fileName) || f.repo !== this.repo.repo) continue;
        if (this.rows.get(f.fileName).file.dest !== f.dest) continue;
        const done = f.status === "completed" || job.status === "completed";
        if (done && this.watched.has(job.jobId)) states.set(f.fileName, "present");
        else if (ACTIVE.includes(job.status) && states.get(f.fileName) !== "present") {
          const state = job.status === "paused" ? "paused" : f.status;
          if (FETCHING.includes(state)) states.set(f.fileName, state);
        }
      }
    }
    for (const [path, entry] of this.rows) {
      const state = entry.file.present ? "present" : (states.get(path) ?? null);
      if (state === "present") entry.file.present = true;
      this.mark(path, state);
    }
    this.update();
  }
}
