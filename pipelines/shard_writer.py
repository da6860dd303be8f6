"""One shard, on a worker: process its units, write its Parquet files (named by their content, so a rebuild never
writes over a file the committed manifest lists), then its record, the shard's commit point."""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from feature_schemas import FeatureSet

from . import shard_tables as tables
from .errors import FETCH_STAGE, PipelineError
from .records import Failure, SegmentRecord, UnitResult, WorkUnit
from .store_dirs import StoreDir, record_rel, store_dir
from .store_plan import MAX_NOTES, BuildConfig, Shard, ShardRecord, parquet_bytes, shard_file


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


def write_table(d: StoreDir, table: pa.Table, name: str, split: str | None, shard_id: str, config: BuildConfig,
                files: dict[str, dict[str, Any]]) -> None:
    """Write one Parquet file of a shard under its content's name; its entry goes into `files`."""
    data = parquet_bytes(table, config)
    sha256 = hashlib.sha256(data).hexdigest()
    base, _, feature_set = name.partition("/")
    rel = shard_file(base, split, shard_id, sha256, feature_set or None)
    d.write_file(rel, data)
    files[rel] = {"table": name, "split": split, "shard": shard_id, "rows": table.num_rows, "sha256": sha256,
                  "bytes": len(data)}


def write_record(d: StoreDir, record: ShardRecord) -> None:
    """The shard record: written last, it commits the shard."""
    d.write_text(record_rel(record.shard_id), json.dumps(asdict(record), indent=1, sort_keys=True))


def first_notes(notes: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The first MAX_NOTES notes by item id and stage: what a shard record and the build report keep."""
    return sorted(notes, key=lambda n: (n.get("item_id", ""), n.get("stage", "")))[:MAX_NOTES]


@dataclass
class _Collected:
    """What a shard's units gave: the good records with their word columns, failures, counters and notes."""

    recs: list[SegmentRecord] = field(default_factory=list)
    cols: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    notes: list[dict[str, str]] = field(default_factory=list)


def _collect(shard: Shard, process: Callable[[WorkUnit], UnitResult], feature_sets: Sequence[FeatureSet],
             config: BuildConfig) -> _Collected:
    got = _Collected()
    word_sets = tables.word_sets(feature_sets)
    for unit in shard.units:
        result = _process_unit(unit, process)
        got.failures += result.failures
        got.notes += result.notes
        for k, v in result.report.items():
            got.counters[k] = got.counters.get(k, 0) + int(v)
        for rec in result.records:
            try:
                tables.check_utterance(rec, feature_sets)
                got.cols.append(tables.aligned_columns(rec, word_sets, config.collapse, got.counters))
                got.recs.append(rec)
            except PipelineError as e:
                got.failures.append(Failure(e.item_id or rec.segment_id, e.stage, str(e), rec.segment.get("source_path")))
            except Exception as e:  # noqa: BLE001
                got.failures.append(Failure(rec.segment_id, "collapse", f"{type(e).__name__}: {e}", rec.segment.get("source_path")))
    order = sorted(range(len(got.recs)), key=lambda i: got.recs[i].segment_id)
    got.recs, got.cols = [got.recs[i] for i in order], [got.cols[i] for i in order]
    return got


def write_shard(
    shard: Shard,
    store: str,
    process: Callable[[WorkUnit], UnitResult],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig,
) -> ShardRecord:
    """Process a shard's units and write its files; the shard record is the commit point."""
    d = store_dir(store)
    word_sets = tables.word_sets(feature_sets)
    got = _collect(shard, process, feature_sets, config)
    failures, counters = got.failures, got.counters
    segments = tables.segments_table([r.segment for r in got.recs])
    aligned = tables.aligned_table(got.recs, got.cols, word_sets)
    recs, segments, aligned = tables.drop_invalid(got.recs, segments, aligned, word_sets, failures)
    utterance = tables.utterance_table(recs, feature_sets, counters) if len(word_sets) < len(feature_sets) else None
    files: dict[str, dict[str, Any]] = {}
    for split in sorted({r.segment["split"] for r in recs}):
        in_split = pc.equal(segments.column("split"), split)
        write_table(d, segments.filter(in_split), "segments", split, shard.shard_id, config, files)
        write_table(d, aligned.filter(in_split), "aligned", split, shard.shard_id, config, files)
        if utterance is not None:
            write_table(d, utterance.filter(in_split), "utterance", split, shard.shard_id, config, files)
        if config.keep_frames:
            srecs = [r for r in recs if r.segment["split"] == split]
            for fs in feature_sets:
                if all(fs.name in r.frames for r in srecs):
                    write_table(d, tables.frames_table(srecs, fs), f"frames/{fs.name}", split, shard.shard_id, config, files)
    if failures:
        failures.sort(key=lambda f: (f.item_id, f.stage, f.reason))
        write_table(d, tables.failures_table(failures), "failures", None, shard.shard_id, config, files)
    # an input that could not be fetched (storage unreachable, an object missing) is not a fact about the input:
    # a record whose key is not the plan's makes the next run of the same build write this shard again
    refetch = any(f.stage == FETCH_STAGE for f in failures)
    key = f"retry:{shard.key}" if refetch else shard.key
    if refetch:
        counters["shards_to_retry"] = counters.get("shards_to_retry", 0) + 1
    record = ShardRecord(shard.shard_id, key, files, dict(sorted(counters.items())), len(recs), len(failures),
                         first_notes(got.notes), [u.unit_id for u in shard.units])
    write_record(d, record)
    return record


def write_failed_shard(shard: Shard, store: str, reason: str, config: BuildConfig) -> ShardRecord:
    """Record a shard that could not be processed at all (its worker process kept dying): one failure row per
    unit, and a record whose key is not the plan's, so the next run of the same build tries the shard again."""
    d = store_dir(store)
    failures = sorted((Failure(u.unit_id, "worker", reason, u.source_path) for u in shard.units),
                      key=lambda f: f.item_id)
    files: dict[str, dict[str, Any]] = {}
    write_table(d, tables.failures_table(failures), "failures", None, shard.shard_id, config, files)
    record = ShardRecord(shard.shard_id, f"failed:{shard.key}", files, {"shards_failed": 1}, 0, len(failures),
                         units=[u.unit_id for u in shard.units])
    write_record(d, record)
    return record
