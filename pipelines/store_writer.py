"""Writing a feature store: units -> shards of Parquet, crash-safe, resumable, with a manifest.

Each shard (a fixed group of units) is processed and written on its own, possibly on another machine. Every file
is written under a hidden temporary name and renamed into place, and a shard record (`_build/shards/*.json`) is
renamed in last, so a killed build leaves either a whole shard or nothing visible. A rerun skips shards whose
record carries the same key (unit keys + configuration + schema) and whose files still match their sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_schemas import (
    BUILD_DIR,
    LAYOUT,
    SCHEMA_VERSION,
    FeatureSet,
    FileEntry,
    Manifest,
    OutsideStoreError,
    StoreError,
    aligned_schema,
    coverage_column,
    failures_schema,
    frames_schema,
    list_of_values,
    list_of_vectors,
    present_column,
    segments_schema,
    table_path,
    utterance_schema,
    validate_aligned,
    validate_segments,
    vectors_to_arrow,
)

from .card import write_card
from .collapse import CollapseConfig, collapse_segment
from .errors import FETCH_STAGE, PipelineError
from .leakage import COLUMNS as LEAKAGE_COLUMNS
from .leakage import find_leakage, has_leakage, leakage_lines, store_leakage
from .records import Failure, SegmentRecord, StageFunction, UnitResult, WorkUnit
from .store_dirs import (
    ObjectLock,
    StoreDir,
    StoreLock,
    record_rel,
    store_dir,
)

log = logging.getLogger(__name__)

PLAN_FILE = f"{BUILD_DIR}/plan.json"  # the recipe and configuration of the build in progress
INPUT_KEYS = ("input", "csd_dir", "file", "labels_file")  # build keys naming the inputs: new inputs resume/extend the same store
RESUME_KEYS = ("writer", "shards", "shard_counters", "shard_notes")  # build keys the writer adds for resuming
MAX_NOTES = 20  # per-item notes (fallbacks taken and why) kept per shard and in the build report


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
            "build": {k: v for k, v in build_info.items() if k != "split_use"},  # says how to use splits, shapes no byte
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


# -- one shard (runs on a worker) -------------------------------------------------------------------
def _process_unit(unit: WorkUnit, process: Callable[[WorkUnit], UnitResult]) -> UnitResult:
    try:
        result = process(unit)
    except PipelineError as e:
        return UnitResult(failures=[Failure(e.item_id or unit.unit_id, e.stage, str(e), e.source_path)])
    except Exception as e:  # noqa: BLE001 - one bad unit must never stop the build
        where = traceback.extract_tb(e.__traceback__)[-1]
        reason = f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno})"
        return UnitResult(failures=[Failure(unit.unit_id, "process", reason, unit.source_path)])
    if not isinstance(result, UnitResult):
        return UnitResult(failures=[Failure(unit.unit_id, "process", f"process returned {type(result).__name__}, not UnitResult")])
    return result


def _aligned_columns(
    rec: SegmentRecord, feature_sets: Sequence[FeatureSet], collapse_config: CollapseConfig, counters: dict[str, int]
) -> dict[str, Any]:
    n_words = len(rec.words.words)
    cols: dict[str, Any] = {}
    for fs in feature_sets:
        if fs.name in rec.word_features:
            wf = rec.word_features[fs.name]
            values, coverage = wf.values, wf.coverage
        elif fs.name in rec.frames:
            fr = rec.frames[fs.name]
            if fr.values.shape[1] != fs.dim and len(fr.values):
                raise PipelineError(f"{fs.name}: frames have {fr.values.shape[1]} dims, feature set has {fs.dim}", "collapse", rec.segment_id)
            c = collapse_segment(fr, rec.words, collapse_config)
            values, coverage = c.values, c.coverage
            counters[f"nonfinite_frames.{fs.name}"] = counters.get(f"nonfinite_frames.{fs.name}", 0) + int(c.nonfinite_frames)
            counters[f"words_without_frames.{fs.name}"] = counters.get(f"words_without_frames.{fs.name}", 0) + int(
                (c.coverage == 0).sum()
            )
        else:
            raise PipelineError(f"segment has no {fs.name!r} features (every record must carry every feature set)", "collapse", rec.segment_id)
        values = np.asarray(values, np.float32).reshape(-1, fs.dim) if n_words else np.zeros((0, fs.dim), np.float32)
        if len(values) != n_words:
            raise PipelineError(f"{fs.name}: {len(values)} word vectors for {n_words} words", "collapse", rec.segment_id)
        finite = np.isfinite(values)
        if not finite.all():
            bad = ~finite.all(axis=1)
            counters[f"nonfinite_words.{fs.name}"] = counters.get(f"nonfinite_words.{fs.name}", 0) + int(bad.sum())
            values = np.where(finite, values, 0.0).astype(np.float32)
            coverage = np.where(bad, 0.0, coverage)
        cols[fs.name] = values
        cols[coverage_column(fs.name)] = np.asarray(coverage, np.float32)
    return cols


def _segments_table(rows: list[dict[str, Any]]) -> pa.Table:
    schema = segments_schema()
    data = {f.name: [r.get(f.name) for r in rows] for f in schema}
    for f in schema:  # NaN labels mean "missing": store null so validation sees what the contract allows
        if pa.types.is_floating(f.type):
            data[f.name] = [None if v is None or np.isnan(float(v)) else float(v) for v in data[f.name]]
    return pa.Table.from_pydict(data, schema=schema)


def _aligned_table(recs: list[SegmentRecord], cols: list[dict[str, Any]], feature_sets: Sequence[FeatureSet]) -> pa.Table:
    schema = aligned_schema({fs.name: fs.dim for fs in feature_sets}, with_optional=True)

    data: dict[str, Any] = {
        "segment_id": pa.array([r.segment_id for r in recs], pa.string()),
        "split": pa.array([r.segment["split"] for r in recs], pa.string()),
        "words": pa.array([list(r.words.words) for r in recs], pa.list_(pa.string())),
        "word_start": list_of_values([r.words.start for r in recs], pa.float64()),  # NaN -> null (untimed words)
        "word_end": list_of_values([r.words.end for r in recs], pa.float64()),
        "word_confidence": list_of_values([r.words.confidence for r in recs], pa.float32()),
        "align_method": pa.array([r.words.method for r in recs], pa.string()),
        "words_written": pa.array([list(r.words.written if r.words.written is not None else r.words.words) for r in recs],
                                  pa.list_(pa.string())),  # schema 2.1: what a fine-tuned text encoder reads
    }
    for fs in feature_sets:
        data[fs.name] = list_of_vectors([c[fs.name] for c in cols], fs.dim)
        data[coverage_column(fs.name)] = list_of_values([c[coverage_column(fs.name)] for c in cols], pa.float32())
    return pa.Table.from_pydict(data, schema=schema)


def _frames_table(recs: list[SegmentRecord], fs: FeatureSet) -> pa.Table:
    frames = [r.frames[fs.name] for r in recs]
    return pa.Table.from_pydict(
        {
            "segment_id": [r.segment_id for r in recs],
            "split": [r.segment["split"] for r in recs],
            "frame_start": list_of_values([f.start for f in frames], pa.float64()),
            "frame_end": list_of_values([f.end for f in frames], pa.float64()),
            "values": list_of_vectors([f.values for f in frames], fs.dim),
            "valid": list_of_values([f.valid & np.isfinite(f.values).all(axis=1) for f in frames], pa.bool_()),
            "confidence": list_of_values([f.confidence for f in frames], pa.float32()),
        },
        schema=frames_schema(fs.dim),
    )


def _word_sets(feature_sets: Sequence[FeatureSet]) -> list[FeatureSet]:
    """The sets kept per word in the aligned table; utterance-level sets (schema 2) go to the utterance table."""
    return [fs for fs in feature_sets if fs.level == "word"]


def _check_utterance(rec: SegmentRecord, feature_sets: Sequence[FeatureSet]) -> None:
    """A record's utterance vectors must have their set's dimension; checked per record so one bad one fails alone."""
    dims = {fs.name: fs.dim for fs in feature_sets if fs.level == "utterance"}
    for name, v in rec.utterance_features.items():
        if name not in dims:
            raise PipelineError(f"utterance vector for {name!r}, which is not an utterance-level set of this build", "write", rec.segment_id)
        if np.asarray(v).size != dims[name]:
            raise PipelineError(f"{name}: utterance vector has {np.asarray(v).size} dims, feature set has {dims[name]}", "write", rec.segment_id)


def _utterance_vector(rec: SegmentRecord, fs: FeatureSet, counters: dict[str, int]) -> tuple[np.ndarray, bool]:
    """One segment's vector of an utterance-level set and whether it is present; absent or non-finite -> zeros."""
    v = rec.utterance_features.get(fs.name)
    if v is None:
        counters[f"absent_utterance.{fs.name}"] = counters.get(f"absent_utterance.{fs.name}", 0) + 1
        return np.zeros(fs.dim, np.float32), False
    v = np.asarray(v, np.float32).reshape(-1)
    if not np.isfinite(v).all():
        counters[f"nonfinite_utterance.{fs.name}"] = counters.get(f"nonfinite_utterance.{fs.name}", 0) + 1
        return np.zeros(fs.dim, np.float32), False
    return v, True


def _utterance_table(recs: list[SegmentRecord], feature_sets: Sequence[FeatureSet], counters: dict[str, int]) -> pa.Table:
    """Schema 2's utterance table for the records (already sorted and validated), one row per segment."""
    sets = [fs for fs in feature_sets if fs.level == "utterance"]
    data: dict[str, Any] = {
        "segment_id": pa.array([r.segment_id for r in recs], pa.string()),
        "split": pa.array([r.segment["split"] for r in recs], pa.string()),
    }
    for fs in sets:
        pairs = [_utterance_vector(r, fs, counters) for r in recs]
        values = np.stack([v for v, _ in pairs]) if pairs else np.zeros((0, fs.dim), np.float32)
        data[fs.name] = vectors_to_arrow(values)
        data[present_column(fs.name)] = pa.array([p for _, p in pairs], pa.bool_())
    return pa.Table.from_pydict(data, schema=utterance_schema({fs.name: fs.dim for fs in sets}))


def _failures_table(failures: list[Failure]) -> pa.Table:
    return pa.Table.from_pylist([asdict(f) for f in failures], schema=failures_schema())


def _drop_invalid(
    recs: list[SegmentRecord], segments: pa.Table, aligned: pa.Table, feature_sets: Sequence[FeatureSet],
    failures: list[Failure],
) -> tuple[list[SegmentRecord], pa.Table, pa.Table]:
    """Segments the contract rejects (labels out of range, unknown split, duplicate ids) become failure rows and
    leave the already-built tables."""
    problems = validate_segments(segments) + validate_aligned(aligned, {fs.name: fs for fs in feature_sets})
    bad: dict[str, list[str]] = {}
    for p in problems:
        if p.row_id is None:
            raise PipelineError(f"shard tables do not match the contract: {p}", stage="validate")
        bad.setdefault(p.row_id, []).append(f"{p.column}: {p.message}")
    if not bad:
        return recs, segments, aligned
    for sid, msgs in bad.items():
        src = next((r.segment.get("source_path") for r in recs if r.segment_id == sid), None)
        failures.append(Failure(sid, "validate", "; ".join(dict.fromkeys(msgs)), src))
    keep = pc.invert(pc.is_in(segments.column("segment_id"), value_set=pa.array(list(bad), pa.string())))
    return [r for r in recs if r.segment_id not in bad], segments.filter(keep), aligned.filter(keep)


def _write_table(d: StoreDir, table: pa.Table, name: str, rel: str, split: str | None, shard_id: str,
                 config: BuildConfig) -> dict[str, Any]:
    """Write one Parquet file of a shard; its entry in the shard record."""
    sha256, size = d.write_parquet(table, rel, config)
    return {"table": name, "split": split, "shard": shard_id, "rows": table.num_rows, "sha256": sha256, "bytes": size}


def _write_record(d: StoreDir, record: ShardRecord) -> None:
    """The shard record: written last, it commits the shard."""
    d.write_text(record_rel(record.shard_id), json.dumps(asdict(record), indent=1, sort_keys=True))


def _first_notes(notes: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The first MAX_NOTES notes by item id and stage: what a shard record and the build report keep."""
    return sorted(notes, key=lambda n: (n.get("item_id", ""), n.get("stage", "")))[:MAX_NOTES]


def write_shard(
    shard: Shard,
    store: str,
    process: Callable[[WorkUnit], UnitResult],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig,
) -> ShardRecord:
    """Process a shard's units and write its files; the shard record is the commit point."""
    d = store_dir(store)
    word_sets = _word_sets(feature_sets)
    recs: list[SegmentRecord] = []
    cols: list[dict[str, Any]] = []
    failures: list[Failure] = []
    counters: dict[str, int] = {}
    notes: list[dict[str, str]] = []
    for unit in shard.units:
        result = _process_unit(unit, process)
        failures += result.failures
        notes += result.notes
        for k, v in result.report.items():
            counters[k] = counters.get(k, 0) + int(v)
        for rec in result.records:
            try:
                _check_utterance(rec, feature_sets)
                cols.append(_aligned_columns(rec, word_sets, config.collapse, counters))
                recs.append(rec)
            except PipelineError as e:
                failures.append(Failure(e.item_id or rec.segment_id, e.stage, str(e), rec.segment.get("source_path")))
            except Exception as e:  # noqa: BLE001
                failures.append(Failure(rec.segment_id, "collapse", f"{type(e).__name__}: {e}", rec.segment.get("source_path")))
    order = sorted(range(len(recs)), key=lambda i: recs[i].segment_id)
    recs, cols = [recs[i] for i in order], [cols[i] for i in order]
    segments = _segments_table([r.segment for r in recs])
    aligned = _aligned_table(recs, cols, word_sets)
    recs, segments, aligned = _drop_invalid(recs, segments, aligned, word_sets, failures)
    utterance = _utterance_table(recs, feature_sets, counters) if len(word_sets) < len(feature_sets) else None

    files: dict[str, dict[str, Any]] = {}

    def put(table: pa.Table, name: str, rel: str, split: str | None) -> None:
        files[rel] = _write_table(d, table, name, rel, split, shard.shard_id, config)

    for split in sorted({r.segment["split"] for r in recs}):
        in_split = pc.equal(segments.column("split"), split)
        put(segments.filter(in_split), "segments", table_path("segments", split, shard.shard_id), split)
        put(aligned.filter(in_split), "aligned", table_path("aligned", split, shard.shard_id), split)
        if utterance is not None:
            put(utterance.filter(in_split), "utterance", table_path("utterance", split, shard.shard_id), split)
        if config.keep_frames:
            srecs = [r for r in recs if r.segment["split"] == split]
            for fs in feature_sets:
                if all(fs.name in r.frames for r in srecs):
                    rel = table_path("frames", split, shard.shard_id, fs.name)
                    put(_frames_table(srecs, fs), f"frames/{fs.name}", rel, split)
    if failures:
        failures.sort(key=lambda f: (f.item_id, f.stage, f.reason))
        put(_failures_table(failures), "failures", table_path("failures", shard=shard.shard_id), None)
    notes = _first_notes(notes)
    # an input that could not be fetched (storage unreachable, an object missing) is not a fact about the input:
    # a record whose key is not the plan's makes the next run of the same build write this shard again
    refetch = any(f.stage == FETCH_STAGE for f in failures)
    key = f"retry:{shard.key}" if refetch else shard.key
    if refetch:
        counters["shards_to_retry"] = counters.get("shards_to_retry", 0) + 1
    record = ShardRecord(shard.shard_id, key, files, dict(sorted(counters.items())), len(recs), len(failures), notes)
    _write_record(d, record)
    return record


# -- the whole build --------------------------------------------------------------------------------
def _parse_record(d: StoreDir, shard_id: str, text: str | None) -> ShardRecord | None:
    """A build-in-progress record; None when unreadable or not a record of that shard (its shard is rewritten).
    Raises OutsideStoreError when it names a file outside the store: a crafted record never gets a file deleted."""
    if text is None:
        return None
    try:
        record = ShardRecord(**json.loads(text))
    except (ValueError, TypeError):
        return None
    if record.shard_id != shard_id or not isinstance(record.key, str) or not isinstance(record.files, dict):
        return None
    for rel, entry in record.files.items():
        try:
            d.check(rel, "shard record")
        except OutsideStoreError as e:
            raise OutsideStoreError(f"{e} (in {d.shown}/{record_rel(shard_id)}; remove that record, or "
                                    f"{d.shown}/{BUILD_DIR}, and rerun)") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            return None
    return record


def _build_records(d: StoreDir) -> dict[str, ShardRecord]:
    """Every readable shard record of a build in progress, by shard id."""
    out = {}
    for sid, text in d.record_texts().items():
        if (record := _parse_record(d, sid, text)) is not None:
            out[sid] = record
    return out


def _manifest_records(d: StoreDir, manifest: Manifest | None) -> dict[str, ShardRecord]:
    """A finished store's shards as records (files, input key, counters), so a rerun resumes from the manifest
    alone. Raises OutsideStoreError when the manifest names a file outside the store."""
    if manifest is None:
        return {}
    keys = manifest.build.get("shards")
    keys = keys if isinstance(keys, dict) else {}
    counters = manifest.build.get("shard_counters")
    counters = counters if isinstance(counters, dict) else {}
    notes = manifest.build.get("shard_notes")
    notes = notes if isinstance(notes, dict) else {}
    files: dict[str, dict[str, dict[str, Any]]] = {}
    for rel, entry in manifest.files.items():
        d.check(rel, "manifest")
        files.setdefault(entry.shard, {})[rel] = entry.to_dict()
    out = {}
    for sid in sorted(set(files) | set(keys)):
        f = files.get(sid, {})
        out[sid] = ShardRecord(
            sid, str(keys.get(sid, "")), f, dict(counters.get(sid) or {}),
            sum(e["rows"] for e in f.values() if e["table"] == "segments"),
            sum(e["rows"] for e in f.values() if e["table"] == "failures"),
            list(notes.get(sid) or []),
        )
    return out


def _record_intact(d: StoreDir, record: ShardRecord) -> bool:
    return not any(d.problem(rel, e["sha256"], e.get("bytes")) for rel, e in record.files.items())


def _remove_record(d: StoreDir, record: ShardRecord, keep: frozenset[str] = frozenset(), record_file: bool = True) -> None:
    """Delete a shard's files (but those in `keep`) and its build record. Every path is checked before any is
    deleted, so a record naming `/abs` or `../x` deletes nothing."""
    rels = [rel for rel in record.files if rel not in keep]
    for rel in rels:
        d.check(rel, "shard record")
    for rel in rels:
        d.remove(rel)
    if record_file:
        d.check(record_rel(record.shard_id), "shard record")
        d.remove(record_rel(record.shard_id))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))


def recipe_identity(build: dict[str, Any]) -> dict[str, Any]:
    """What makes two builds "the same store": the recipe and its configuration, not the inputs (new inputs
    extend a store) nor the writer's settings (a new collapse mode rewrites the shards in place)."""
    return {k: v for k, v in build.items() if k not in (*INPUT_KEYS, *RESUME_KEYS, "labels", "split_use")}  # labels come from the rows


def _read_plan(d: StoreDir) -> dict[str, Any] | None:
    try:
        plan = json.loads(d.read_text(PLAN_FILE) or "")
    except ValueError:
        return None
    return plan.get("identity") if isinstance(plan, dict) and isinstance(plan.get("identity"), dict) else None


@dataclass
class _Target:
    """What an existing output folder holds, and what opening a build there must remove first."""

    manifest: Manifest | None = None  # the old store's manifest, when it resumes or is replaced
    remove_store: bool = False  # an --overwrite: the old manifest's files, its card and manifest
    remove_build_state: bool = False  # the other build's records, their files and its plan


def _inspect_target(d: StoreDir, identity: dict[str, Any], overwrite: bool) -> _Target:
    """Decide, changing nothing, whether a build may write into the store: an empty folder, a store (or unfinished
    build) of the same recipe and configuration, or anything with `overwrite`. Raises StoreError otherwise, and
    for any path the old manifest or records name outside the store."""
    root = d.shown
    if not d.exists():
        return _Target()
    if not d.is_folder():
        raise StoreError(f"{root}: exists and is not a folder; choose another --out")
    plan = _read_plan(d)
    manifest, unreadable = None, ""
    if d.has(LAYOUT["manifest"]):
        try:
            manifest = d.load_manifest()
        except StoreError as e:
            unreadable = f"; its {LAYOUT['manifest']} is unreadable: {e}"
    contents = d.names()
    records = _build_records(d)  # raises for a record naming a file outside the store
    _manifest_records(d, manifest)  # and for such a manifest entry
    if not contents and plan is None:  # empty, or a build killed before it planned anything
        return _Target(manifest=None, remove_build_state=bool(records))
    found = plan if plan is not None else (recipe_identity(manifest.build) if manifest is not None else None)
    if found is not None and _canonical(found) == _canonical(identity):
        stale = manifest is not None and _canonical(recipe_identity(manifest.build)) != _canonical(identity)
        return _Target(manifest=manifest, remove_store=stale)  # stale: an --overwrite killed before it finished
    if not overwrite:
        hint = "use --overwrite (overwrite=True) to replace it, or choose another --out"
        if found is None:
            shown = ", ".join(repr(n) for n in contents[:5]) + (", ..." if len(contents) > 5 else "")
            raise StoreError(f"{root}: is not empty and not a store (found {shown}){unreadable}; use --overwrite "
                             "(overwrite=True) to write into it anyway (its README.md and manifest.json are replaced), "
                             "or choose another --out")
        what = "a store built" if plan is None else "an unfinished build"
        differs = sorted(k for k in set(found) | set(identity) if _canonical(found.get(k)) != _canonical(identity.get(k)))
        raise StoreError(f"{root}: holds {what} by recipe {found.get('recipe')!r} with another configuration "
                         f"(this build: recipe {identity.get('recipe')!r}; differs in {', '.join(differs)}); {hint}")
    return _Target(manifest=manifest, remove_store=manifest is not None, remove_build_state=True)


def _remove_old(d: StoreDir, target: _Target) -> None:
    """Carry out `_inspect_target`'s removals: only what the old manifest lists, its card and manifest, and the
    old build state; then folders left empty in the table tree."""
    if target.remove_build_state:
        for record in _build_records(d).values():
            _remove_record(d, record)
        d.remove(PLAN_FILE)
    if target.remove_store and target.manifest is not None:
        for record in _manifest_records(d, target.manifest).values():
            _remove_record(d, record, record_file=False)
        d.remove(LAYOUT["card"])
        d.remove(LAYOUT["manifest"])
        target.manifest = None
    d.prune_folders()


def _merge_report(recipe_report: dict[str, Any] | None, records: list[ShardRecord]) -> dict[str, Any]:
    counters: dict[str, int] = {}
    for r in records:
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
    report: dict[str, Any] = dict(recipe_report or {})
    report["counters"] = dict(sorted(counters.items()))
    report["segments"] = sum(r.n_segments for r in records)
    report["failures"] = sum(r.n_failures for r in records)
    if notes := _first_notes(n for r in records for n in r.notes):
        report["notes"] = notes
    return report


def _check_build(d: StoreDir, records: Sequence[ShardRecord], report: dict[str, Any]) -> None:
    """Leakage between splits (read back from the segments files just written) and the warnings a build must
    not keep quiet: shared sentences or videos across splits, mostly guessed word times, nothing written."""
    rels = [rel for r in records for rel, e in r.files.items() if e["table"] == "segments"]
    root = d.shown
    try:
        if d.remote:
            report["leakage"] = find_leakage([row for rel in sorted(rels) for row in d.read_columns(rel, LEAKAGE_COLUMNS).to_pylist()])
        else:
            report["leakage"] = store_leakage(d.location, rels)
    except (OSError, StoreError, pa.ArrowException) as e:
        log.error("%s: could not check the splits for leakage: %s", root, e)
        report["leakage"] = None
    warnings: list[str] = []
    if has_leakage(report["leakage"]):
        lines = leakage_lines(report["leakage"])
        warnings += [line for line in lines if not line.startswith(" ")]  # the counts; examples only in the log
        log.warning("%s: scores on a split that shares sentences or videos with another measure memory, in part:\n%s",
                    root, "\n".join(lines))
    n, counters = report.get("segments", 0), report.get("counters", {})
    uniform = counters.get("segments.uniform", 0)
    if n and uniform * 2 > n:
        why = ", ".join(f"{k.removeprefix('align_fallback.uniform.')} {v}" for k, v in counters.items()
                        if k.startswith("align_fallback.uniform."))
        warnings.append(f"{uniform} of {n} segments have uniformly spaced word times, not aligned ones"
                        + (f" ({why})" if why else "") + "; the build report's notes say why per segment")
    if retry := counters.get("shards_to_retry", 0):
        warnings.append(f"{retry} shard{'s' if retry > 1 else ''} could not fetch some inputs from storage (failure stage "
                        f"`{FETCH_STAGE}`); rerun the same build to try them again")
    if not n:
        warnings.append("no segment was written; see the failures table (`mmolre inspect`)")
    if warnings:
        report["warnings"] = warnings
        for w in warnings:
            if not w.startswith("leakage"):
                log.warning("%s: %s", root, w)


@dataclass
class StoreBuild:
    """A build in progress: the lock is held, stale files are gone, and `todo` lists the shards to write.

    `pipelines.build.run_build` writes `todo` on an executor (or a caller's own scheduler) and then calls `finish`."""

    root: Path | str  # a local folder, or the store's URL
    name: str
    shards: list[Shard]
    todo: list[Shard]
    done: dict[str, ShardRecord]
    feature_sets: list[FeatureSet]
    config: BuildConfig
    build_info: dict[str, Any]
    lock: StoreLock | ObjectLock
    files: StoreDir  # where the files go: the local folder `root`, or the URL
    finished: bool = False  # the manifest records every shard: release the lock with the rest of _build/

    @property
    def skipped(self) -> int:
        return len(self.shards) - len(self.todo)

    def finish(self, written: Sequence[ShardRecord], report: dict[str, Any] | None = None) -> BuildResult:
        """Write the manifest and card from every shard's record, then release the lock."""
        try:
            done = dict(self.done) | {r.shard_id: r for r in written}
            missing = [s.shard_id for s in self.shards if s.shard_id not in done]
            records = [done[s.shard_id] for s in self.shards if s.shard_id in done]
            if missing:  # a worker died past its retries: keep what was written, say what to rerun
                report = {**(report or {}), "incomplete_shards": missing}
                log.error("%s: %d shards were not written (%s); rerun the same build to complete them",
                          self.files.shown, len(missing), ", ".join(missing[:5]))
            manifest = Manifest(
                name=self.name,
                feature_sets={fs.name: fs for fs in self.feature_sets},
                files={rel: self._file_entry(rel, e) for r in records for rel, e in r.files.items()},
                build={**{k: v for k, v in self.build_info.items() if k not in ("labels", "split_use")},  # stored once, below
                       "writer": self.config.to_dict(),  # "config" stays the recipe's
                       "shards": {r.shard_id: r.key for r in records},  # what a rerun compares: no _build/ needed
                       "shard_counters": {r.shard_id: r.counters for r in records if r.counters},
                       "shard_notes": {r.shard_id: r.notes for r in records if r.notes}},
                report=_merge_report(report, records),
                labels=dict(self.build_info.get("labels") or {}),  # the recipe's label vocabularies (feature_schemas.labels)
                split_use=dict(self.build_info.get("split_use") or {}),  # what the recipe says each split is fit for
            )
            _check_build(self.files, records, manifest.report)
            if isinstance(self.lock, ObjectLock):
                self.lock.check()  # the manifest is the commit point: only while this build holds the store
            write_card(self.files.location, manifest)
            manifest.save(self.files.location)
            self._drop_build_state()
        finally:
            self.close()
        n_written = len({r.shard_id for r in written} - set(self.done))  # what this run wrote, not what it planned
        return BuildResult(self.files.shown if self.files.remote else self.root, manifest, n_written, self.skipped, manifest.report["segments"], manifest.report["failures"])

    def _file_entry(self, rel: str, entry: dict[str, Any]) -> FileEntry:
        size = entry.get("bytes")
        return FileEntry.from_dict({**entry, "bytes": size if size is not None else self.files.size(rel)})

    def _drop_build_state(self) -> None:
        """The manifest now records every shard: remove the records, the plan and (on release) the lock."""
        for sid in self.files.record_ids():
            self.files.remove(record_rel(sid))
        self.files.remove(PLAN_FILE)
        if self.files.remote:  # a worker killed mid-upload leaves its temporary key: the next run would, too
            self.files.clean_temporaries()
        self.finished = True

    def close(self) -> None:
        self.lock.release(remove=self.finished)


def open_build(
    store: str | os.PathLike,
    name: str,
    units: Sequence[WorkUnit],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig | None = None,
    build_info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> StoreBuild:
    """Check the output folder or URL (refusing, with nothing changed, a non-empty one that is not a store of this
    recipe and configuration unless `overwrite`), lock it, remove what a killed build left, and work out which
    shards still need writing: a shard whose key matches its record or the manifest and whose files are intact
    is kept."""
    config = config or BuildConfig()
    d = store_dir(store)
    build_info = dict(build_info or {})
    shards = plan_shards(units, feature_sets, config, build_info)
    identity = recipe_identity(build_info)
    target = _inspect_target(d, identity, overwrite)
    d.prepare()
    lock = d.lock()
    try:
        _remove_old(d, target)
        plan = {"name": name, "identity": json.loads(_canonical(identity))}  # read back as _inspect_target compares it
        d.write_text(PLAN_FILE, json.dumps(plan, indent=1, sort_keys=True))
        d.clean_temporaries()
        from_build = _build_records(d)
        from_manifest = _manifest_records(d, target.manifest)
        planned = {s.shard_id for s in shards}
        for sid in sorted((set(from_build) | set(from_manifest)) - planned):  # shards from a different, larger plan
            if sid in from_build:
                _remove_record(d, from_build[sid])
            if sid in from_manifest:
                _remove_record(d, from_manifest[sid], record_file=False)
        done: dict[str, ShardRecord] = {}
        todo: list[Shard] = []
        for s in shards:
            in_build, in_manifest = from_build.get(s.shard_id), from_manifest.get(s.shard_id)
            keep = next((r for r in (in_build, in_manifest) if r is not None and r.key == s.key and _record_intact(d, r)), None)
            kept = frozenset(keep.files) if keep is not None else frozenset()
            if in_build is not None and in_build is not keep:
                _remove_record(d, in_build, kept)
            if in_manifest is not None and in_manifest is not keep:
                _remove_record(d, in_manifest, kept, record_file=False)
            if keep is not None:
                done[s.shard_id] = keep
            else:
                todo.append(s)
    except BaseException:
        lock.release()
        raise
    log.info("%s: %d shards to write, %d already written", name, len(todo), len(done))
    return StoreBuild(d.location, name, shards, todo, done, list(feature_sets), config, build_info, lock, d)


def write_failed_shard(shard: Shard, store: str, reason: str, config: BuildConfig) -> ShardRecord:
    """Record a shard that could not be processed at all (its worker process kept dying): one failure row per
    unit, and a record whose key is not the plan's, so the next run of the same build tries the shard again."""
    d = store_dir(store)
    failures = sorted((Failure(u.unit_id, "worker", reason, u.source_path) for u in shard.units),
                      key=lambda f: f.item_id)
    rel = table_path("failures", shard=shard.shard_id)
    files = {rel: _write_table(d, _failures_table(failures), "failures", rel, None, shard.shard_id, config)}
    record = ShardRecord(shard.shard_id, f"failed:{shard.key}", files, {"shards_failed": 1}, 0, len(failures))
    _write_record(d, record)
    return record
