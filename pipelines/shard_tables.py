"""The Arrow tables of one shard, built from its segment records: segments, word-aligned features (frame sets
collapsed onto words), utterance vectors, frames and failures. Contract problems fail the segment, not the shard."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_schemas import (
    FeatureSet,
    aligned_schema,
    coverage_column,
    failures_schema,
    frames_schema,
    list_of_values,
    list_of_vectors,
    present_column,
    segments_schema,
    utterance_schema,
    validate_aligned,
    validate_segments,
    vectors_to_arrow,
)

from .collapse import CollapseConfig, collapse_segment
from .errors import PipelineError
from .records import Failure, SegmentRecord


def aligned_columns(
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


def segments_table(rows: list[dict[str, Any]]) -> pa.Table:
    optional = {k for r in rows[:1] for k in r}  # a media build's rows carry `language`
    if any("speaker" in r for r in rows):  # only rows naming a speaker carry it: one is enough for the column
        optional.add("speaker")
    schema = segments_schema(optional=optional)
    data = {f.name: [r.get(f.name) for r in rows] for f in schema}
    for f in schema:  # NaN labels mean "missing": store null so validation sees what the contract allows
        if pa.types.is_floating(f.type):
            data[f.name] = [None if v is None or np.isnan(float(v)) else float(v) for v in data[f.name]]
    return pa.Table.from_pydict(data, schema=schema)


def aligned_table(recs: list[SegmentRecord], cols: list[dict[str, Any]], feature_sets: Sequence[FeatureSet]) -> pa.Table:
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


def frames_table(recs: list[SegmentRecord], fs: FeatureSet) -> pa.Table:
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


def word_sets(feature_sets: Sequence[FeatureSet]) -> list[FeatureSet]:
    """The sets kept per word in the aligned table; utterance-level sets (schema 2) go to the utterance table."""
    return [fs for fs in feature_sets if fs.level == "word"]


def check_utterance(rec: SegmentRecord, feature_sets: Sequence[FeatureSet]) -> None:
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


def utterance_table(recs: list[SegmentRecord], feature_sets: Sequence[FeatureSet], counters: dict[str, int]) -> pa.Table:
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


def failures_table(failures: list[Failure]) -> pa.Table:
    return pa.Table.from_pylist([asdict(f) for f in failures], schema=failures_schema())


def drop_invalid(
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
