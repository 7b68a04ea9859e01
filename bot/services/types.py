"""Plain dataclasses the services take and return. No discord types: the console uses the same ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from intake.photos import PhotoVerdict

__all__ = [
    "AdminLimits", "CancelOutcome", "DeletedGeneration", "ExportBundle", "ForgetOutcome", "ImagineOptions", "JobView", "PhotoInfo",
    "PhotoVerdict", "QueuedGeneration", "Requester", "ShareOutcome", "StyleInfo", "SubjectInfo", "SubjectRef",
    "SubjectsView", "TrainOutcome", "TriggerChoice", "Upload",
]


@dataclass(frozen=True)
class Requester:
    """Who asked, and where: grants to a guild apply only when the request comes from that guild."""

    user_id: int
    display_name: str
    guild_id: int | None = None
    channel_id: int | None = None


@dataclass(frozen=True)
class Upload:
    filename: str  # shown to the user only; never part of a path
    data: bytes
    caption: str | None = None


@dataclass(frozen=True)
class SubjectRef:
    subject_id: int
    trigger: str
    class_noun: str
    display_name: str

    @property
    def prompt_name(self) -> str:
        return f"{self.trigger} {self.class_noun}"


@dataclass(frozen=True)
class TrainOutcome:
    """What /train (and /photos add) did: a verdict per photo, then the job or the reason there is none."""

    subjects: tuple[SubjectRef, ...]  # one for /train, every member for a family; empty when nothing was stored
    verdicts: tuple[PhotoVerdict, ...] = ()  # in upload order; rejected ones were not stored
    created: bool = False  # a new subject was made (False: an existing one was extended or retrained)
    trigger_suggested: bool = False  # the trigger was picked for the user: the front end says so
    photos_total: int = 0  # accepted photos the subject has now (summed over a family)
    needs_more: int = 0  # accepted photos still missing before training can start
    job_id: int | None = None
    queue_position: int | None = None  # 1 = next; 0 = running
    group: str | None = None
    notes: tuple[str, ...] = ()  # sentences to show after the verdicts

    @property
    def subject(self) -> SubjectRef | None:
        return self.subjects[0] if self.subjects else None

    @property
    def accepted(self) -> int:
        return sum(1 for verdict in self.verdicts if verdict.accepted)


@dataclass(frozen=True)
class PhotoInfo:
    number: int  # 1-based position among the subject's accepted photos (what /photos remove takes)
    photo_id: int
    original_name: str
    caption: str
    width: int | None
    height: int | None
    size_bytes: int
    crop_path: Path | None  # absolute, for thumbnails
    created_at: float


@dataclass(frozen=True)
class ImagineOptions:
    """Raw options as typed; every field is validated (strings such as "42" are accepted from the console)."""

    prompt: str
    negative_prompt: str | None = None
    seed: Any = None
    aspect: str | None = None
    count: Any = None
    steps: Any = None
    guidance: Any = None
    scheduler: str | None = None
    style: str | None = None


@dataclass(frozen=True)
class QueuedGeneration:
    generation_id: int
    job_id: int
    position: int | None  # 1 = next; 0 = running
    seed: int
    subjects: tuple[str, ...]  # triggers, in prompt order
    warnings: tuple[str, ...] = ()
    kind: str = "imagine"
    count: int = 1
    width: int = 0
    height: int = 0
    style: str | None = None
    prompt: str = ""


@dataclass(frozen=True)
class DeletedGeneration:
    generation_id: int
    files_removed: int
    job_cancelled: bool  # its job was still waiting or running and was told to stop


@dataclass(frozen=True)
class TriggerChoice:
    trigger: str
    label: str  # e.g. "rraj person (Raj, yours)"
    prompt_name: str  # what a prompt names: "rraj person"


@dataclass(frozen=True)
class ShareOutcome:
    trigger: str
    user_id: int | None
    guild_id: int | None
    changed: bool  # share: a new grant was made; unshare: a grant was removed
    # After an unshare, the access that remains and why: the servers still granted (a user there keeps using it),
    # and, after unsharing a server, the people who keep their own grant.
    still_guilds: tuple[int, ...] = ()
    still_users: tuple[int, ...] = ()
    here_guild: int | None = None  # the server the request came from, to say "this server"


@dataclass(frozen=True)
class SubjectInfo:
    subject_id: int
    trigger: str
    class_noun: str
    display_name: str
    family: str
    mine: bool
    state: str  # "ready", "training", "queued", "not trained"
    photos: int | None = None  # accepted photos (owner only)
    group: str | None = None
    adapter_id: int | None = None
    adapter_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # the evaluation's label or fallback note, when the metrics carry one
    shared_with_users: tuple[int, ...] = ()  # owner only
    shared_with_guilds: tuple[int, ...] = ()  # owner only


@dataclass(frozen=True)
class SubjectsView:
    mine: tuple[SubjectInfo, ...]
    shared: tuple[SubjectInfo, ...]  # shared with me, by user or by this guild


@dataclass(frozen=True)
class ExportBundle:
    path: Path  # absolute path of the zip, for the front end to attach or copy
    size: int
    fits_upload: bool  # size <= settings.max_upload_bytes
    filename: str  # a friendly name for the attachment
    trigger: str
    version: int
    files: tuple[str, ...]  # names inside the zip
    subject_id: int | None = None


@dataclass(frozen=True)
class ForgetOutcome:
    nothing_stored: bool  # the bot had nothing about this user
    subjects: int = 0
    photos: int = 0
    adapters: int = 0
    generations: int = 0
    grants: int = 0
    jobs_stopped: int = 0
    finishing: bool = False  # a running job must stop first; the maintenance sweep completes the deletion


@dataclass(frozen=True)
class JobView:
    job_id: int
    kind: str
    state: str
    position: int | None  # 1 = next; 0 = running; None = finished
    step: int
    total: int
    message: str
    eta_at: float | None
    preview_path: Path | None  # absolute, when the worker wrote one
    error: str | None
    triggers: tuple[str, ...]
    user_id: int | None
    created_at: float
    cancel_requested: bool = False
    generation_id: int | None = None
    node: str | None = None  # the cluster node running it, in cluster mode
    stalled: bool = False  # its worker stopped responding; it restarts from its last checkpoint


@dataclass(frozen=True)
class CancelOutcome:
    job_id: int
    kind: str
    result: str  # "cancelled" (it was waiting) or "requested" (running; it stops within a step)
    steps_done: int = 0  # a waiting job may have run steps before (a resumed job that was paused)
    label: str | None = None  # what the job is about: its triggers, or the start of its prompt


@dataclass(frozen=True)
class StyleInfo:
    name: str
    family: str
    weight: float
    size_bytes: int
    sha256: str
    tensors: int


@dataclass(frozen=True)
class AdminLimits:
    is_admin: bool
    min_photos_per_subject: int
    max_photos_per_subject: int
    max_upload_bytes: int
    max_training_jobs_per_user: int
    max_queued_generations_per_user: int
    generation_cooldown_s: float
    prompt_max_chars: int
    blocklist_size: int
    active_training_jobs: int  # the requester's own usage right now
    queued_generations: int
    cooldown_left_s: float
