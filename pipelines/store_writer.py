"""Writing a feature store: units -> shards of Parquet, crash-safe, resumable, with a manifest.

Each shard (a fixed group of units) is processed and written on its own, possibly on another machine. Every file
is written under a hidden temporary name and renamed into place, and a shard record (`_build/shards/*.json`) is
renamed in last, so a killed build leaves either a whole shard or nothing visible. A rerun skips shards whose
record carries the same key (unit keys + configuration + schema) and whose files still match their sha256.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from feature_schemas import (
    SCHEMA_VERSION,
    TEMPORARY_GLOB,
    FeatureSet,
    FileEntry,
    Manifest,
    StoreError,
    aligned_schema,
    atomic_path,
    atomic_write_text,
    coverage_column,
    failures_schema,
    file_problem,
    frames_schema,
    list_of_values,
    list_of_vectors,
    present_column,
    segments_schema,
    sha256_file,
    table_path,
    utterance_schema,
    validate_aligned,
    validate_segments,
    vectors_to_arrow,
)

from .card import write_card
from .collapse import CollapseConfig, collapse_segment
from .executors import map_unordered
from .records import Failure, PipelineError, SegmentRecord, UnitResult, WorkUnit

log = logging.getLogger(__name__)

BUILD_DIR = "_build"
SHARD_RECORDS = f"{BUILD_DIR}/shards"
LOCK_FILE = f"{BUILD_DIR}/lock"


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


@dataclass
class BuildPlan:
    """Everything a recipe decides before any work runs; `run_plan` or a Prefect flow carries it out."""

    name: str
    units: list[WorkUnit]
    process: Callable[[WorkUnit], UnitResult]  # picklable: a top-level function or functools.partial
    feature_sets: list[FeatureSet]
    config: BuildConfig
    build_info: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    store: Path
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
            "build": build_info,
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
        return UnitResult(failures=[Failure(unit.unit_id, "process", reason, unit.payload.get("source_path"))])
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
    schema = aligned_schema({fs.name: fs.dim for fs in feature_sets})

    data: dict[str, Any] = {
        "segment_id": pa.array([r.segment_id for r in recs], pa.string()),
        "split": pa.array([r.segment["split"] for r in recs], pa.string()),
        "words": pa.array([list(r.words.words) for r in recs], pa.list_(pa.string())),
        "word_start": list_of_values([r.words.start for r in recs], pa.float64()),  # NaN -> null (untimed words)
        "word_end": list_of_values([r.words.end for r in recs], pa.float64()),
        "word_confidence": list_of_values([r.words.confidence for r in recs], pa.float32()),
        "align_method": pa.array([r.words.method for r in recs], pa.string()),
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


def _write_parquet(table: pa.Table, path: Path, config: BuildConfig) -> str:
    """Atomic Parquet write; returns the file's sha256."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=config.compression, row_group_size=config.row_group_rows)
        digest = sha256_file(tmp)
    return digest


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


def write_shard(
    shard: Shard,
    store: str,
    process: Callable[[WorkUnit], UnitResult],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig,
) -> ShardRecord:
    """Process a shard's units and write its files; the shard record is the commit point."""
    root = Path(store)
    recs: list[SegmentRecord] = []
    cols: list[dict[str, Any]] = []
    failures: list[Failure] = []
    counters: dict[str, int] = {}
    for unit in shard.units:
        result = _process_unit(unit, process)
        failures += result.failures
        for k, v in result.report.items():
            counters[k] = counters.get(k, 0) + int(v)
        for rec in result.records:
            try:
                _check_utterance(rec, feature_sets)
                cols.append(_aligned_columns(rec, _word_sets(feature_sets), config.collapse, counters))
                recs.append(rec)
            except PipelineError as e:
                failures.append(Failure(e.item_id or rec.segment_id, e.stage, str(e), rec.segment.get("source_path")))
            except Exception as e:  # noqa: BLE001
                failures.append(Failure(rec.segment_id, "collapse", f"{type(e).__name__}: {e}", rec.segment.get("source_path")))
    order = sorted(range(len(recs)), key=lambda i: recs[i].segment_id)
    recs, cols = [recs[i] for i in order], [cols[i] for i in order]
    segments = _segments_table([r.segment for r in recs])
    aligned = _aligned_table(recs, cols, _word_sets(feature_sets))
    recs, segments, aligned = _drop_invalid(recs, segments, aligned, _word_sets(feature_sets), failures)
    utterance = _utterance_table(recs, feature_sets, counters) if len(_word_sets(feature_sets)) < len(feature_sets) else None

    files: dict[str, dict[str, Any]] = {}

    def put(table: pa.Table, name: str, rel: str, split: str | None) -> None:
        files[rel] = {"table": name, "split": split, "shard": shard.shard_id, "rows": table.num_rows,
                      "sha256": _write_parquet(table, root / rel, config)}

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
    record = ShardRecord(shard.shard_id, shard.key, files, dict(sorted(counters.items())), len(recs), len(failures))
    atomic_write_text(root / SHARD_RECORDS / f"part-{shard.shard_id}.json", json.dumps(asdict(record), indent=1, sort_keys=True))
    return record


# -- the whole build --------------------------------------------------------------------------------
def _load_record(root: Path, shard_id: str) -> ShardRecord | None:
    path = root / SHARD_RECORDS / f"part-{shard_id}.json"
    try:
        return ShardRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _record_intact(root: Path, record: ShardRecord) -> bool:
    return not any(file_problem(root / rel, e["sha256"]) for rel, e in record.files.items())


def _remove_record(root: Path, record: ShardRecord) -> None:
    for rel in record.files:
        (root / rel).unlink(missing_ok=True)
    (root / SHARD_RECORDS / f"part-{record.shard_id}.json").unlink(missing_ok=True)


def _clean_temporaries(root: Path) -> None:
    for tmp in root.rglob(TEMPORARY_GLOB):
        tmp.unlink(missing_ok=True)


class StoreLock:
    """Exclusive lock on a store for the length of a build; a second build refuses at once, naming the holder.
    The kernel drops the lock when the holder dies, even by SIGKILL."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise StoreError(f"{self.path.parent.parent}: another build is writing this store (pid {holder}); wait for it to finish") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _merge_report(recipe_report: dict[str, Any] | None, records: list[ShardRecord]) -> dict[str, Any]:
    counters: dict[str, int] = {}
    for r in records:
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
    report: dict[str, Any] = dict(recipe_report or {})
    report["counters"] = dict(sorted(counters.items()))
    report["segments"] = sum(r.n_segments for r in records)
    report["failures"] = sum(r.n_failures for r in records)
    return report


@dataclass
class StoreBuild:
    """A build in progress: the lock is held, stale files are gone, and `todo` lists the shards to write.

    `build_store` runs it on an executor; a Prefect flow maps its own tasks over `todo` and then calls `finish`."""

    root: Path
    name: str
    shards: list[Shard]
    todo: list[Shard]
    done: dict[str, ShardRecord]
    feature_sets: list[FeatureSet]
    config: BuildConfig
    build_info: dict[str, Any]
    lock: StoreLock

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
                          self.root, len(missing), ", ".join(missing[:5]))
            manifest = Manifest(
                name=self.name,
                feature_sets={fs.name: fs for fs in self.feature_sets},
                files={rel: FileEntry(**e) for r in records for rel, e in r.files.items()},
                build={**self.build_info, "writer": self.config.to_dict()},  # "config" stays the recipe's
                report=_merge_report(report, records),
            )
            manifest.save(self.root)
            write_card(self.root, manifest)
        finally:
            self.close()
        n_written = len({r.shard_id for r in written} - set(self.done))  # what this run wrote, not what it planned
        return BuildResult(self.root, manifest, n_written, self.skipped, manifest.report["segments"], manifest.report["failures"])

    def close(self) -> None:
        self.lock.__exit__()


def open_build(
    store: str | os.PathLike,
    name: str,
    units: Sequence[WorkUnit],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig | None = None,
    build_info: dict[str, Any] | None = None,
) -> StoreBuild:
    """Lock the store, remove what a killed build left, and work out which shards still need writing."""
    config = config or BuildConfig()
    root = Path(store)
    root.mkdir(parents=True, exist_ok=True)
    build_info = dict(build_info or {})
    shards = plan_shards(units, feature_sets, config, build_info)
    lock = StoreLock(root).__enter__()
    try:
        _clean_temporaries(root)
        planned = {s.shard_id for s in shards}
        for path in sorted((root / SHARD_RECORDS).glob("part-*.json")):  # shards from a different, larger plan
            sid = path.stem.removeprefix("part-")
            if sid not in planned and (old := _load_record(root, sid)) is not None:
                _remove_record(root, old)
        done: dict[str, ShardRecord] = {}
        todo: list[Shard] = []
        for s in shards:
            old = _load_record(root, s.shard_id)
            if old is not None and old.key == s.key and _record_intact(root, old):
                done[s.shard_id] = old
            else:
                if old is not None:
                    _remove_record(root, old)
                todo.append(s)
    except BaseException:
        lock.__exit__()
        raise
    log.info("%s: %d shards to write, %d already written", name, len(todo), len(done))
    return StoreBuild(root, name, shards, todo, done, list(feature_sets), config, build_info, lock)


def build_store(
    store: str | os.PathLike,
    name: str,
    units: Sequence[WorkUnit],
    process: Callable[[WorkUnit], UnitResult],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig | None = None,
    executor: Any = None,
    build_info: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
    progress: bool = True,
) -> BuildResult:
    """Build (or complete) a store from work units; see the module docstring for the guarantees."""
    build = open_build(store, name, units, feature_sets, config, build_info)
    written: list[ShardRecord] = []
    try:
        bar = tqdm(total=len(build.shards), initial=build.skipped, desc=f"{name}: shards", unit="shard", disable=not progress)
        args = (str(build.root), process, build.feature_sets, build.config)
        for rec in map_unordered(write_shard, build.todo, executor, *args):
            written.append(rec)
            bar.update(1)
            bar.set_postfix(segments=sum(r.n_segments for r in written), failures=sum(r.n_failures for r in written))
        bar.close()
    except BaseException:
        build.close()
        raise
    return build.finish(written, report)


def run_plan(plan: BuildPlan, store: str | os.PathLike, executor: Any = None, progress: bool = True) -> BuildResult:
    return build_store(store, plan.name, plan.units, plan.process, plan.feature_sets, plan.config,
                       executor=executor, build_info=plan.build_info, report=plan.report, progress=progress)
