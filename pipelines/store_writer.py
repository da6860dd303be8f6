"""Writing a feature store: units -> shards of Parquet, crash-safe, resumable, with a manifest.

Each shard (a fixed group of units) is processed and written on its own, possibly on another machine. Every file
is written under a hidden temporary name and renamed into place, under a name carrying its content's digest, and a
shard record (`_build/shards/*.json`) is renamed in last, so a killed build leaves either a whole shard or nothing
visible. A rerun skips shards whose record carries the same key (unit keys + configuration + schema) and whose
files still match their sha256. The manifest is the commit: files the previous one listed and the new one does not
are deleted only after it is written, so a failed or killed rebuild leaves the old store readable.

The pieces: `store_plan` (types, shard plan), `shard_tables` and `shard_writer` (one shard, on a worker),
`store_open` (may this build write here; what is left to do), `store_records` (what the store holds),
`store_commit` (the manifest), `store_dirs` / `local_files` / `store_locks` (where and how files are written).
"""

from __future__ import annotations

from .shard_writer import write_failed_shard, write_shard
from .store_commit import StoreBuild
from .store_open import open_build, recipe_identity
from .store_plan import (
    INPUT_KEYS,
    MAX_NOTES,
    PLAN_FILE,
    RESUME_KEYS,
    BuildConfig,
    BuildPlan,
    BuildResult,
    Shard,
    ShardRecord,
    plan_shards,
)

__all__ = [
    "INPUT_KEYS", "MAX_NOTES", "PLAN_FILE", "RESUME_KEYS", "BuildConfig", "BuildPlan", "BuildResult", "Shard",
    "ShardRecord", "StoreBuild", "open_build", "plan_shards", "recipe_identity", "write_failed_shard", "write_shard",
]
