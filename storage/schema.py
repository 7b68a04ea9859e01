"""The database schema, as numbered migrations. Both the bot and the worker apply these on open."""

from storage.id_sequences import rebuild_with_autoincrement
from storage.migrations import Migration

INITIAL = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,                -- Discord user id (the console uses a fixed local id)
    display_name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    forgotten_at REAL                      -- tombstone: set first, rows and files swept after
);

CREATE TABLE subject_groups (              -- a family: subjects trained together into one adapter
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE subjects (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    trigger TEXT NOT NULL,
    trigger_key TEXT NOT NULL,             -- confusable skeleton, so look-alike tokens collide
    class_noun TEXT NOT NULL,
    display_name TEXT NOT NULL,
    family TEXT NOT NULL,                  -- base-model family the subject trains on
    group_id INTEGER REFERENCES subject_groups(id) ON DELETE SET NULL,
    guild_id INTEGER,                      -- where it was created, if in a guild
    created_at REAL NOT NULL,
    deleted_at REAL
);
CREATE UNIQUE INDEX subjects_trigger_key ON subjects(trigger_key);
CREATE INDEX subjects_owner ON subjects(owner_id);

CREATE TABLE photos (
    id INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason TEXT NOT NULL DEFAULT '',       -- the verdict sentence shown to the user
    original_name TEXT NOT NULL,           -- display only; never part of a path
    sha256 TEXT,                           -- content hash of the stored original
    phash TEXT,
    original_path TEXT,                    -- store-relative; NULL for rejected photos (never stored)
    crop_path TEXT,
    size_bytes INTEGER NOT NULL DEFAULT 0,
    width INTEGER,
    height INTEGER,
    face_box TEXT,                         -- JSON [x, y, w, h]
    caption TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    CHECK (status = 'rejected' OR (sha256 IS NOT NULL AND original_path IS NOT NULL AND crop_path IS NOT NULL))
);
CREATE UNIQUE INDEX photos_subject_sha ON photos(subject_id, sha256) WHERE status = 'accepted';

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,  -- NULL for shared work such as class images
    priority INTEGER NOT NULL,             -- lower runs first
    payload TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    owner TEXT,                            -- the worker holding the lease
    lease_until REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    eta_at REAL,
    preview_path TEXT,
    result TEXT,                           -- JSON
    error TEXT,                            -- a human sentence
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    channel_id INTEGER,                    -- the message the bot owns for this job
    message_id INTEGER,
    reported_at REAL,                      -- when the bot last rendered this job
    notified INTEGER NOT NULL DEFAULT 0    -- the final notice was delivered
);
CREATE INDEX jobs_queue ON jobs(state, priority, id);
CREATE INDEX jobs_user ON jobs(user_id, state);

CREATE TABLE adapters (
    id INTEGER PRIMARY KEY,
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    family TEXT NOT NULL,
    base_model TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,                    -- store-relative pytorch_lora_weights.safetensors
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX adapters_owner ON adapters(owner_id);

CREATE TABLE adapter_subjects (
    adapter_id INTEGER NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    PRIMARY KEY (adapter_id, subject_id)
);
CREATE INDEX adapter_subjects_subject ON adapter_subjects(subject_id);

CREATE TABLE grants (
    id INTEGER PRIMARY KEY,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
    guild_id INTEGER,
    created_at REAL NOT NULL,
    CHECK ((user_id IS NULL) <> (guild_id IS NULL))
);
CREATE UNIQUE INDEX grants_unique ON grants(subject_id, coalesce(user_id, 0), coalesce(guild_id, 0));

CREATE TABLE styles (                      -- admin-installed style LoRAs
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    family TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    weight REAL NOT NULL DEFAULT 0.8,
    added_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at REAL NOT NULL
);

CREATE TABLE generations (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
    parent_id INTEGER REFERENCES generations(id) ON DELETE SET NULL,
    kind TEXT NOT NULL,                    -- imagine, reroll, variation, upscale, headshots, card
    prompt TEXT NOT NULL,
    negative_prompt TEXT NOT NULL DEFAULT '',
    seed INTEGER NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',     -- steps, guidance, scheduler, size, count, ...
    adapters TEXT NOT NULL DEFAULT '[]',   -- what was composed, with weights
    outputs TEXT NOT NULL DEFAULT '[]',    -- store-relative image paths
    guild_id INTEGER,
    channel_id INTEGER,
    message_id INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX generations_user ON generations(user_id);

CREATE TABLE generation_subjects (         -- whose likeness a generation shows
    generation_id INTEGER NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
    subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    PRIMARY KEY (generation_id, subject_id)
);
CREATE INDEX generation_subjects_subject ON generation_subjects(subject_id);

CREATE TABLE exports (                     -- files handed to a user, so forget can remove them too
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    created_at REAL NOT NULL
);

"""

# Ids that leave the process (buttons' custom_ids, job numbers, out/ file names) are never handed out twice.
NEVER_REUSED_IDS = ("jobs", "generations", "subjects", "adapters", "exports", "subject_groups")
# Console jobs (no channel) that finished before this migration count as delivered: only news is written to out/.
CONSOLE_JOBS_DELIVERED = """
UPDATE jobs SET notified = 1 WHERE channel_id IS NULL AND state IN ('succeeded', 'failed', 'cancelled');
"""

# Which cluster node runs a job (NULL under the local worker); /status and /admin queue show it.
JOB_NODE = """
ALTER TABLE jobs ADD COLUMN node TEXT;
"""

# One identity descriptor per accepted photo (dlib's 128 float32), computed once at upload; `model` names the
# descriptor model, so a future one is never compared with these.
PHOTO_EMBEDDINGS = """
CREATE TABLE photo_embeddings (
    photo_id INTEGER PRIMARY KEY REFERENCES photos(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    vector BLOB NOT NULL
);
"""

# Copies the console wrote into its output folder (pictures, exports), so `delete` and `forget` remove them with what
# they copy, and where a job asked for its pictures (`imagine ... --out DIR`). No foreign keys on console_files: a
# row must outlive its generation or user until the console has removed the file.
CONSOLE_FILES = """
CREATE TABLE console_files (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    generation_id INTEGER,
    subject_id INTEGER,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX console_files_generation ON console_files(generation_id);
CREATE INDEX console_files_user ON console_files(user_id);
CREATE TABLE console_destinations (
    job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    folder TEXT NOT NULL
);
"""

MIGRATIONS = [
    Migration(1, "initial schema", INITIAL),
    Migration(2, "ids are never reused (AUTOINCREMENT)", CONSOLE_JOBS_DELIVERED,
              apply=lambda conn: rebuild_with_autoincrement(conn, NEVER_REUSED_IDS)),
    Migration(3, "photo_embeddings: a face identity descriptor per photo", PHOTO_EMBEDDINGS),
    Migration(4, "jobs.node: the cluster node running a job", JOB_NODE),
    Migration(10, "console_files: the console's copies in its output folder", CONSOLE_FILES),
]
