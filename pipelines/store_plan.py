"""What a build is made of, decided before any work runs: its configuration, its shards (fixed groups of
units with a key covering everything that shapes their output) and the records that commit them.

`store_writer` is the public face of the writer; this module holds its data types and the shard plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feature_schemas import BUILD_DIR, SCHEMA_VERSION, FeatureSet, Manifest, table_path

from .collapse import CollapseConfig
from .errors import PipelineError
from .records import StageFunction, WorkUnit

PLAN_FILE = f"{BUILD_DIR}/plan.json"  # the recipe and configuration of the build in progress
INPUT_KEYS = ("input", "csd_dir", "file", "labels_file")  # build keys naming the inputs: new inputs resume/extend the same store
RESUME_KEYS = ("writer", "shards", "shard_counters", "shard_notes", "shard_units")  # build keys the writer adds for resuming
MAX_NOTES = 20  # per-item notes (fallbacks taken and why) kept per shard and in the build report
NAME_DIGEST = 12  # hex digits of a file's sha256 in its name


@dataclass(frozen=True)
class BuildConfig:
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    keep_frames: bool = False  # also write the frame-level (unaligned) tables
    units_per_shard: int = 16
    compression: str = "zstd"
    row_group_rows: int = 64  # segments per row group: the unit of streaming reads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Shard:
    shard_id: str
    units: tuple[WorkUnit, ...]
    key: str


@dataclass
class ShardRecord:
    shard_id: str
    key: str
    files: dict[str, dict[str, Any]]  # relative path -> FileEntry fields
    counters: dict[str, int]
    n_segments: int
    n_failures: int
    notes: list[dict[str, str]] = field(default_factory=list)  # first MAX_NOTES of the units' notes, by item id
    units: list[str] = field(default_factory=list)  # the shard's unit ids: what a rebuild must not drop unasked


@dataclass
class BuildPlan:
    """Everything a recipe decides before any work runs: the units, the stage that turns a unit into records (a
    top-level function, pickled by name) and that stage's options, both data; `run_build` carries it out."""

    name: str
    units: list[WorkUnit]
    stage: StageFunction  # e.g. pipelines.stages.csd.process_csd_unit
    feature_sets: list[FeatureSet]
    config: BuildConfig
    build_info: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    options: Any = None  # the stage's typed, picklable configuration (e.g. VideoConfig)


@dataclass
class BuildResult:
    store: Path | str  # a local folder, or the store's URL as `display` shows it
    manifest: Manifest
    shards_written: int
    shards_skipped: int
    n_segments: int
    n_failures: int


# -- planning ---------------------------------------------------------------------------------------
def plan_shards(
    units: Sequence[WorkUnit], feature_sets: Sequence[FeatureSet], config: BuildConfig, build_info: dict[str, Any]
) -> list[Shard]:
    """Deterministic shards: units sorted by id, cut every `units_per_shard`; the key covers all that shapes output."""
    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise PipelineError(f"duplicate unit ids: {', '.join(dup)}", stage="plan")
    ordered = sorted(units, key=lambda u: u.unit_id)
    common = json.dumps(
        {
            "schema": SCHEMA_VERSION,
            "config": config.to_dict(),
            "feature_sets": [fs.to_dict() for fs in feature_sets],
            # split_use says how to use splits, and the unit keys cover the inputs (resolved path or URL, size,
            # version), so neither shapes a byte: how the input path was spelled must not rewrite a store
            "build": {k: v for k, v in build_info.items() if k not in ("split_use", *INPUT_KEYS)},
        },
        sort_keys=True,
        default=str,
    )
    shards = []
    step = max(1, config.units_per_shard)
    for i in range(0, len(ordered), step):
        chunk = tuple(ordered[i : i + step])
        h = hashlib.sha256(common.encode())
        for u in chunk:
            h.update(f"\0{u.unit_id}\0{u.key}".encode())
        shards.append(Shard(f"{i // step:05d}", chunk, h.hexdigest()))
    return shards


def parquet_bytes(table: pa.Table, config: BuildConfig) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=config.compression, row_group_size=config.row_group_rows)
    return sink.getvalue().to_pybytes()


def shard_file(table: str, split: str | None, shard_id: str, digest: str, feature_set: str | None = None) -> str:
    """A shard file's name carries its content's digest (`part-00003-1f0a9c2e4b7d.parquet`): a rebuild never
    writes over a file the committed manifest lists (another content is another name), so the old store stays
    readable until the new manifest is committed, and only then are the files it no longer lists deleted."""
    return table_path(table, split, f"{shard_id}-{digest[:NAME_DIGEST]}", feature_set)
