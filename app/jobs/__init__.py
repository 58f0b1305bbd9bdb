"""The job state machine: create jobs, claim files, record progress, settle outcomes.

Every function takes the caller's session and never commits: the web tier commits once per
request, a worker once per unit of work. Changes to a file's status are conditional UPDATEs
(`WHERE status IN (...)`), so two processes racing for the same row cannot both win.

The parts, each a module: `states` (the transition table and a job's status), `create`
(checking what is asked for and writing the job), `claims` (a worker's hold on a file),
`pins` (one commit per job, a placed file completed),
`actions` (a user's pause, resume, cancel, retry, delete), `recovery` (the sweeper's
questions) and `listing` (reading jobs). Callers use the names below: `jobs.claim_file(...)`.
"""

from app.jobs.actions import (
    ActionResult,
    cancel_job,
    delete_job,
    pause_job,
    resume_job,
    retry_job,
)
from app.jobs.claims import (
    claim_file,
    finish_file,
    record_metadata,
    record_progress,
    record_stopped_bytes,
    start_verifying,
)
from app.jobs.create import (
    REVISION_RE,
    FileSpec,
    create_job,
    create_model_job,
    lock_creation,
    validate_specs,
)
from app.jobs.listing import (
    active_jobs,
    decode_cursor,
    encode_cursor,
    get_file,
    get_job,
    job_under_way_for_model,
    job_under_way_with,
    list_jobs,
    models_under_way,
    resolve_job_id,
)
from app.jobs.pins import complete_placed, pin_commit
from app.jobs.recovery import (
    StaleResult,
    dest_wanted_elsewhere,
    mark_published,
    queued_published_before,
    quiet_holders,
    requeue_stale,
    unpublished_files,
)
from app.jobs.states import FILE_TRANSITIONS, derive_job_status, settle_job, transition_file

__all__ = [
    "FILE_TRANSITIONS",
    "REVISION_RE",
    "ActionResult",
    "FileSpec",
    "StaleResult",
    "active_jobs",
    "cancel_job",
    "claim_file",
    "complete_placed",
    "create_job",
    "create_model_job",
    "decode_cursor",
    "delete_job",
    "derive_job_status",
    "dest_wanted_elsewhere",
    "encode_cursor",
    "finish_file",
    "get_file",
    "get_job",
    "job_under_way_for_model",
    "job_under_way_with",
    "list_jobs",
    "lock_creation",
    "mark_published",
    "models_under_way",
    "pause_job",
    "pin_commit",
    "queued_published_before",
    "quiet_holders",
    "record_metadata",
    "record_progress",
    "record_stopped_bytes",
    "requeue_stale",
    "resolve_job_id",
    "resume_job",
    "retry_job",
    "settle_job",
    "start_verifying",
    "transition_file",
    "unpublished_files",
    "validate_specs",
]
