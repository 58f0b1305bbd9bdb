"""What the remote commands print: the catalog, the job list and one job, as rich tables that
fit the terminal. A table too wide for it drops its least useful columns first; what is left
may wrap, but an id is never cut (lists show a job by the first 12 characters of its id,
which the commands take as well; `status` shows the whole id). Sizes are binary units
throughout (KiB, MiB, GiB; MiB/s), the same as the progress bars."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from app.catalog import human_size

# Long enough to be unique among the jobs of any one service, short enough for a table.
SHORT_ID = 12


def human(n: int | None) -> str:
    """Bytes in binary units; '?' when unknown."""
    return human_size(n) or "?"


def short_id(job_id: str) -> str:
    """A job id as lists show it."""
    return job_id[:SHORT_ID]


@dataclass(frozen=True)
class Column:
    """A column and how readily it goes when the terminal is narrow: the column with the
    highest `drop` goes first; 0 never goes. An id column is `no_wrap`."""

    header: str
    drop: int = 0
    no_wrap: bool = False


def _widths(console: Console, column: Column, cells: Sequence[RenderableType]) -> tuple[int, int]:
    """The fewest cells a column takes without cutting a word (its longest word; an id
    column's longest cell) and the most it can use, padding included."""
    wide = console.options.update_width(10_000)
    sizes = [Measurement.get(console, wide, cell) for cell in cells]
    most = max(m.maximum for m in sizes) + 2
    return (most if column.no_wrap else max(m.minimum for m in sizes) + 2), most


def _share(least: list[int], most: list[int], room: int) -> list[int]:
    """Widths between `least` and `most` within `room`: the columns that need least to be
    whole get it first, so a short cell ("size unknown") stays on one line and the long
    ones (names, errors) wrap."""
    widths = list(least)
    spare = room - sum(least)
    for i in sorted(range(len(widths)), key=lambda i: most[i] - least[i]):
        add = max(min(spare, most[i] - widths[i]), 0)
        widths[i] += add
        spare -= add
    return widths


def fitted(
    console: Console,
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[RenderableType]],
) -> Table:
    """A table of `rows` with as many of `columns` as fit in the console's width without a
    word cut in two. Rich, left to itself, narrows the widest columns first even where that
    splits a word another column had room for, so the widths are set here."""
    ranges = [
        _widths(console, col, [col.header, *(row[i] for row in rows)])
        for i, col in enumerate(columns)
    ]
    shown = list(range(len(columns)))

    def room() -> int:  # the box draws a rule left of each column and one at the right edge
        return console.width - len(shown) - 1

    while sum(ranges[i][0] for i in shown) > room():
        droppable = [i for i in shown if columns[i].drop > 0]
        if not droppable:
            break
        shown.remove(max(droppable, key=lambda i: columns[i].drop))
    least, most = [ranges[i][0] for i in shown], [ranges[i][1] for i in shown]
    widths: list[int | None] = [None] * len(shown)
    if sum(most) > room() >= sum(least):
        widths = list(_share(least, most, room()))
    table = Table(title=title)
    for i, width in zip(shown, widths, strict=True):
        col = columns[i]
        table.add_column(
            col.header,
            no_wrap=col.no_wrap,
            overflow="fold",
            width=None if width is None else width - 2,
        )
    for row in rows:
        # Text, not markup: a file named "model[v2].gguf" is shown as it is.
        table.add_row(*(Text(c) if isinstance(c, str) else c for c in (row[i] for i in shown)))
    return table


def _when(iso: str | None) -> str:
    """An API timestamp in local time, to the minute."""
    if not iso:
        return ""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def _model_state(model: dict[str, Any]) -> Text:
    if model["allPresent"]:
        return Text("present", style="green")
    active = model.get("activeJob")
    if active:
        return Text(f"{active['status']} {short_id(active['jobId'])}", style="yellow")
    return Text("missing", style="red")


def _model_size(model: dict[str, Any]) -> str:
    """The model's total, and what is left to download when part of it is present."""
    total, missing = model.get("totalBytes"), model.get("missingBytes")
    if total is None:
        return "unknown"
    if model["allPresent"] or missing is None or missing >= total:
        return human(total)
    return f"{human(total)} ({human(missing)} to download)"


MODEL_COLUMNS = (
    Column("model", no_wrap=True),
    Column("name", drop=3),
    Column("state"),
    Column("size"),
    Column("files", drop=2),
    Column("gated", drop=1),
)


def models_view(console: Console, answer: dict[str, Any]) -> list[RenderableType]:
    """The catalog with each model's state, size (what is left to download) and whether its
    repo is gated; then what the Hub could not tell."""
    rows = [
        (
            m["id"],
            m["name"],
            _model_state(m),
            _model_size(m),
            str(len(m["files"])),
            "gated" if m.get("gated") else "",
        )
        for m in answer["models"]
    ]
    out: list[RenderableType] = [fitted(console, "Models", MODEL_COLUMNS, rows)]
    for m in answer["models"]:
        if m.get("hubError"):
            out.append(Text(f"{m['id']}: {m['hubError']}", style="yellow"))
    if answer.get("metadataPending"):
        out.append("sizes are still being learnt from the Hub; run again in a moment")
    if any(m.get("gated") and not m["allPresent"] for m in answer["models"]):
        out.append("gated: accept the terms on the Hub and give the service HF_TOKEN")
    return out


def _job_done(job: dict[str, Any]) -> str:
    return f"{human(job['bytesDownloaded'])} / {human(job['totalBytes'])}"


JOB_COLUMNS = (
    Column("job", no_wrap=True),
    Column("what", drop=2),
    Column("state"),
    Column("done", no_wrap=True),  # "1.5 GiB / 4.0 GiB" reads badly on two lines
    Column("created", drop=3),
)


def jobs_view(console: Console, answer: dict[str, Any]) -> Table:
    """The newest jobs, each by its short id."""
    rows = []
    for j in answer["jobs"]:
        repos = sorted({f["repo"] for f in j["files"]})
        what = j["modelId"] or (repos[0] if len(repos) == 1 else f"{repos[0]} +{len(repos) - 1}")
        rows.append((short_id(j["jobId"]), what, j["status"], _job_done(j), _when(j["createdAt"])))
    return fitted(console, "Jobs (newest first)", JOB_COLUMNS, rows)


FILE_COLUMNS = (
    Column("file"),
    Column("repo", drop=1),
    Column("state"),
    Column("done", no_wrap=True),
    Column("error"),
)


def file_error(file: dict[str, Any]) -> str:
    """A file's error without the "<repo>/<file>: " it starts with: it is shown beside the
    file, and a message names a path once."""
    error = str(file.get("error") or "")
    named = f"{file['repo']}/{file['fileName']}: "
    return error[len(named) :] if error.startswith(named) else error


def job_view(console: Console, job: dict[str, Any]) -> list[RenderableType]:
    """One job, by its whole id, with its files."""
    rows = [
        (
            f["dest"],
            f["repo"],
            f["status"],
            f"{human(f['bytesDownloaded'])} / {human(f['size'])}",
            file_error(f),
        )
        for f in job["files"]
    ]
    table = fitted(console, None, FILE_COLUMNS, rows)
    return [f"Job {job['jobId']}: {job['status']}, {_job_done(job)}", table]
