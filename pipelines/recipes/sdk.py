"""Recipe: CMU-MOSEI / CMU-MOSI from the SDK's computational sequences (.csd) to a feature store.

Segments are the label intervals (`video_id[i]`, i in file order, the SDK's keys after aligning to labels);
words are the TimestampedWords whose midpoint lies in the segment (so a word on a boundary belongs to one
segment only), times as given; frame-level sequences (COVAREP, FACET,
OpenFace) become the frames inside each segment, collapsed to words by the store writer (vectorised, unlike
the SDK's O(words x frames) `align`). GloVe vectors are taken per word when their intervals match the words.
Splits are the standard folds, by video id.

A unit is a batch of videos; it opens each .csd once and reads only the rows its segments need. The release's
known faults are counted, not fatal: ids missing from a sequence, labelled videos in no fold, fold ids
without labels, NaN/-inf values.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import EMOTIONS, FeatureSet, labels_record

from ..build import run_build
from ..collapse import CollapseConfig
from ..csd import FEATURE_ROLES, ROLES, CsdFile, CsdInfo, discover, interval_faults, segment_fault, words_of
from ..folds import DATASETS, resolve_folds, split_of, video_id_of
from ..records import (
    Failure,
    FrameFeatures,
    PipelineError,
    SegmentRecord,
    UnitResult,
    WordFeatures,
    Words,
    WorkUnit,
)
from ..store_writer import BuildConfig, BuildPlan, BuildResult

RECIPE_VERSION = "sdk/1"
GLOVE_MATCH_TOLERANCE = 1e-3  # seconds: a GloVe row belongs to a word when both ends agree this closely


@dataclass(frozen=True)
class SdkInputs:
    """What `sdk_units` found: the recognised files by role and the feature sets it will build."""

    dataset: str
    files: dict[str, CsdInfo]
    sets: tuple[str, ...]
    ignored: tuple[str, ...]


def feature_set_of(info: CsdInfo, dataset: str) -> FeatureSet:
    """The store's description of one standard sequence (dimension names from the file, else published ones)."""
    role = ROLES[info.role]
    meta = info.metadata
    return FeatureSet(
        name=info.role,
        dims=info.dims,
        modality=role.modality or "audio",
        extractor=role.extractor,
        extractor_version=str(meta.get("computational sequence version", "")),
        config={
            "source": f"CMU-{dataset.upper()} SDK release",
            "file": info.path.name,
            "root name": info.root_name,
            "featureset bib citation": str(meta.get("featureset bib citation", "")),
            "level": "word" if info.role == "glove" else "frame",
        },
        frame_rate=role.frame_rate,
        description=str(meta.get("computational sequence description", "")) or f"{role.extractor} from the CMU-{dataset.upper()} SDK release",
    )


def find_inputs(csd_dir: str | os.PathLike, dataset: str = "mosei", sets: Sequence[str] | None = None) -> SdkInputs:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    files, ignored = discover(csd_dir)
    if "labels" not in files:
        raise PipelineError(f"{csd_dir}: no label sequence (All Labels / Opinion Labels .csd); segments come from labels",
                            "read", source_path=str(csd_dir))
    available = [r for r in FEATURE_ROLES if r in files]
    if sets is None:
        chosen = available
    else:
        missing = [s for s in sets if s not in files or s not in FEATURE_ROLES]
        if missing:
            raise PipelineError(f"{csd_dir}: no .csd for feature sets {missing} (found: {', '.join(available) or 'none'})",
                                "read", source_path=str(csd_dir))
        chosen = list(dict.fromkeys(sets))
    return SdkInputs(dataset, files, tuple(chosen), tuple(ignored))


def _file_key(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def sdk_units(
    csd_dir: str | os.PathLike,
    dataset: str = "mosei",
    sets: Sequence[str] | None = None,
    batch_videos: int = 4,
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
) -> tuple[list[WorkUnit], list[FeatureSet], dict[str, Any]]:
    """Plan a build: one unit per `batch_videos` labelled videos in a fold, the feature sets, and the drop report.

    Reads only the files' entry lists and shapes, never their data."""
    inputs = find_inputs(csd_dir, dataset, sets)
    fold_ids = resolve_folds(folds, dataset)
    split = split_of(fold_ids)
    with CsdFile(inputs.files["labels"].path) as lab:
        label_keys = sorted(lab.ids())
        n_label_segments = sum(lab.shape(k)[0] for k in label_keys)
    labelled_videos = sorted({video_id_of(k) for k in label_keys})
    in_fold = [v for v in labelled_videos if v in split]
    no_fold = sorted(set(labelled_videos) - set(split))
    fold_without_labels = {s: sorted(set(ids) - set(labelled_videos)) for s, ids in fold_ids.items()}

    roles = ["words"] + list(inputs.sets) if "words" in inputs.files else list(inputs.sets)
    missing: dict[str, list[str]] = {}
    for role in roles:
        with CsdFile(inputs.files[role].path) as f:
            present = set(f.ids())
        missing[role] = sorted(v for v in in_fold if v not in present)
    if "words" not in inputs.files:
        missing["words"] = list(in_fold)

    keys_by_video: dict[str, list[str]] = {}
    for k in label_keys:
        vid = video_id_of(k)
        if vid in split:
            keys_by_video.setdefault(vid, []).append(k)

    file_roles = ["labels"] + roles
    files = {r: str(inputs.files[r].path) for r in file_roles}
    dims = {r: inputs.files[r].dim for r in inputs.sets}
    file_keys = {r: _file_key(inputs.files[r].path) for r in file_roles}
    units = []
    step = max(1, int(batch_videos))
    for i in range(0, len(in_fold), step):
        vids = in_fold[i : i + step]
        payload = {
            "dataset": dataset,
            "files": files,
            "sets": list(inputs.sets),
            "dims": dims,
            "videos": {v: {"split": split[v], "label_keys": keys_by_video[v]} for v in vids},
        }
        key = hashlib.sha256(
            json.dumps({"recipe": RECIPE_VERSION, "files": file_keys, "payload": payload}, sort_keys=True).encode()
        ).hexdigest()
        units.append(WorkUnit(f"{dataset}-{i // step:05d}-{vids[0]}", key, payload))

    feature_sets = [feature_set_of(inputs.files[r], dataset) for r in inputs.sets]
    report: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "dataset": dataset,
        "files": {r: inputs.files[r].path.name for r in sorted(inputs.files)},
        "ignored_files": list(inputs.ignored),
        "labelled_videos": len(labelled_videos),
        "labelled_segments": n_label_segments,
        "videos_in_folds": len(in_fold),
        "labelled_videos_in_no_fold": no_fold,
        "n_labelled_videos_in_no_fold": len(no_fold),
        "fold_ids_without_labels": fold_without_labels,
        "n_fold_ids_without_labels": {s: len(v) for s, v in fold_without_labels.items()},
        "ids_missing": missing,
        "n_ids_missing": {r: len(v) for r, v in missing.items()},
    }
    return units, feature_sets, report


# -- processing one unit (runs on a worker) ---------------------------------------------------------
def _add(report: dict[str, int], key: str, n: int = 1) -> None:
    if n:
        report[key] = report.get(key, 0) + int(n)


def _inside(intervals: np.ndarray, start: float, end: float) -> np.ndarray:
    """Rows whose midpoint lies in [start, end): each word belongs to exactly one of adjacent segments."""
    mid = 0.5 * (intervals[:, 0] + intervals[:, 1])
    return (mid >= start) & (mid < end)


def _overlapping(intervals: np.ndarray, start: float, end: float) -> np.ndarray:
    return (intervals[:, 1] > start) & (intervals[:, 0] < end)


def _usable_rows(ivs: np.ndarray, segs: np.ndarray, name: str, report: dict[str, int], used: np.ndarray) -> np.ndarray:
    """Rows whose interval is finite, not reversed and inside the video's labelled span; the others are dropped
    and counted (`intervals_dropped.<name>.<fault>`). Rows beyond the span count only where `used` (they would
    have reached a segment): words and frames after the last labelled segment are normal."""
    span = (0.0, float(segs[:, 1].max())) if len(segs) else None
    faults = interval_faults(ivs, span)
    faults["beyond_span"] &= used
    for fault, mask in faults.items():
        _add(report, f"intervals_dropped.{name}.{fault}", int(mask.sum()))
    return ~(faults["nonfinite"] | faults["reversed"] | faults["beyond_span"])


def _reaching(ivs: np.ndarray, segs: np.ndarray, inside: bool = False) -> np.ndarray:
    """Rows that overlap (or, for words, have their midpoint in) at least one segment."""
    hit = np.zeros(len(ivs), bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for s, e in segs:
            hit |= _inside(ivs, s, e) if inside else _overlapping(ivs, s, e)
    return hit


def _frames_by_segment(f: CsdFile, vid: str, segs: np.ndarray, dim: int, report: dict[str, int] | None = None,
                       name: str = "") -> list[tuple[np.ndarray, np.ndarray]]:
    """Per segment, (intervals, values) of the frames overlapping it. Frames in time order (the release's
    case) are read one contiguous slice per segment, so the unlabelled parts of a video are never read.
    Frames with damaged intervals (non-finite, reversed, beyond the video's span) are dropped and counted."""
    ivs = f.intervals(vid)
    good = _usable_rows(ivs, segs, name, report if report is not None else {}, _reaching(ivs, segs))
    rows_of = [np.flatnonzero(_overlapping(ivs, s, e) & good) for s, e in segs]
    out = []
    for rows in rows_of:
        if rows.size == 0:
            out.append((np.zeros((0, 2)), np.zeros((0, dim), np.float32)))
            continue
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        block = np.asarray(f.features(vid, lo, hi), dtype=np.float32)
        if block.shape[1] != dim:
            raise PipelineError(f"{f.path} [{vid}]: {block.shape[1]} dimensions, the sequence has {dim}", "read", vid, str(f.path))
        out.append((ivs[rows], block if rows.size == hi - lo else block[rows - lo]))
    return out


def _glove_for_words(word_ivs: np.ndarray, g_ivs: np.ndarray, g_vals: np.ndarray) -> np.ndarray | None:
    """The GloVe row of each word when every word has one with the same interval, else None."""
    if len(word_ivs) == 0:
        return g_vals[:0]
    if len(g_ivs) == 0:
        return None
    order = np.lexsort((g_ivs[:, 1], g_ivs[:, 0]))
    starts = g_ivs[order, 0]
    idx = np.empty(len(word_ivs), dtype=int)
    for j, (s, e) in enumerate(word_ivs):
        k0 = np.searchsorted(starts, s - GLOVE_MATCH_TOLERANCE, side="left")
        k1 = np.searchsorted(starts, s + GLOVE_MATCH_TOLERANCE, side="right")
        hit = [order[k] for k in range(k0, k1) if abs(g_ivs[order[k], 1] - e) <= GLOVE_MATCH_TOLERANCE]
        if not hit:
            return None
        idx[j] = hit[0]
    return g_vals[idx]


def _label_fields(values: np.ndarray, report: dict[str, int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    names = ("sentiment",) + (EMOTIONS if len(values) >= 1 + len(EMOTIONS) else ())
    for name, v in zip(names, values, strict=False):
        if np.isfinite(v):
            out[name] = float(v)
        else:
            out[name] = None
            _add(report, f"nonfinite_labels.{name}")
    for e in EMOTIONS:
        out.setdefault(e, None)
    return out


def _video_records(
    vid: str, info: dict[str, Any], opened: dict[str, CsdFile], payload: dict[str, Any], report: dict[str, int],
    failures: list[Failure] | None = None,
) -> list[SegmentRecord]:
    labels = opened["labels"]
    source = f"{payload['dataset']}-csd"
    # Segments, in file order within each label key.
    segs: list[tuple[str, float, float, np.ndarray]] = []
    for key in info["label_keys"]:
        ivs = labels.intervals(key)
        vals = np.asarray(labels.features(key), dtype=np.float64)
        if vals.shape[1] not in (1, 1 + len(EMOTIONS)):
            raise PipelineError(f"{labels.path} [{key}]: {vals.shape[1]} label columns, expected 7 or 1", "read", key, str(labels.path))
        for i in range(len(ivs)):
            sid = key if ("[" in key and len(ivs) == 1) else f"{key}[{i}]"
            fault = segment_fault(float(ivs[i, 0]), float(ivs[i, 1]))
            if fault is not None:  # a damaged label interval: that segment fails, the video's others go on
                if failures is not None:
                    failures.append(Failure(sid, "read", f"{labels.path} [{key}]: segment {sid} interval "
                                            f"[{ivs[i, 0]!r}, {ivs[i, 1]!r}] {fault}", str(labels.path)))
                _add(report, "segments_bad_interval")
                continue
            segs.append((sid, float(ivs[i, 0]), float(ivs[i, 1]), vals[i]))
    bounds = np.array([[s, e] for _, s, e, _ in segs], np.float64).reshape(-1, 2)

    # Words.
    words_file = opened.get("words")
    if words_file is not None and vid in words_file:
        tokens, t_ivs = words_file.tokens(vid)
        all_words, w_ivs, dropped = words_of(tokens, t_ivs)
        _add(report, "silence_tokens_dropped", dropped)
        keep = _usable_rows(w_ivs, bounds, "words", report, _reaching(w_ivs, bounds, inside=True))
        all_words, w_ivs = [w for w, k in zip(all_words, keep, strict=True) if k], w_ivs[keep]
    else:
        all_words, w_ivs = [], np.zeros((0, 2))
        _add(report, "segments_without_words_file", len(segs))

    # Frame-level sequences: the rows each segment needs.
    frames: dict[str, list[tuple[np.ndarray, np.ndarray]] | None] = {}
    glove_rows: tuple[np.ndarray, np.ndarray] | None = None
    for name in payload["sets"]:
        f = opened[name]
        dim = int(payload["dims"][name])
        if vid not in f:
            frames[name] = None
            _add(report, f"segments_missing.{name}", len(segs))
            continue
        if name == "glove":  # word-level and small: read whole
            g_ivs, g_vals = f.intervals(vid), np.asarray(f.features(vid), np.float32)
            g_ok = _usable_rows(g_ivs, bounds, name, report, _reaching(g_ivs, bounds))
            g_ivs, g_vals = g_ivs[g_ok], g_vals[g_ok]
            glove_rows = (g_ivs, g_vals)
            frames[name] = [(g_ivs[m], g_vals[m]) for m in (_overlapping(g_ivs, s, e) for s, e in bounds)]
        else:
            frames[name] = _frames_by_segment(f, vid, bounds, dim, report, name)

    records = []
    for j, (sid, start, end, vals) in enumerate(segs):
        wm = np.flatnonzero(_inside(w_ivs, start, end)) if len(w_ivs) else np.zeros(0, int)
        words = Words([all_words[k] for k in wm], w_ivs[wm, 0], w_ivs[wm, 1], np.ones(len(wm), np.float32), "given")
        rec = SegmentRecord(
            segment={
                "segment_id": sid,
                "video_id": vid,
                "split": info["split"],
                "start": start,
                "end": end,
                "transcript": " ".join(words.words),
                **_label_fields(vals, report),
                "source": source,
                "source_path": str(labels.path),
            },
            words=words,
        )
        for name in payload["sets"]:
            dim = int(payload["dims"][name])
            got = frames[name]
            if got is None:
                rec.frames[name] = FrameFeatures(np.zeros(0), np.zeros(0), np.zeros((0, dim), np.float32))
                continue
            f_ivs, f_vals = got[j]
            finite = np.isfinite(f_vals)
            _add(report, f"nonfinite_values.{name}", int(f_vals.size - np.count_nonzero(finite)))
            if name == "glove" and glove_rows is not None:
                per_word = _glove_for_words(w_ivs[wm], *glove_rows)
                if per_word is not None:
                    ok = np.isfinite(per_word).all(axis=1)
                    rec.word_features[name] = WordFeatures(np.where(ok[:, None], per_word, 0.0), ok.astype(np.float32))
                    _add(report, "glove_word_level_segments")
                    continue
                _add(report, "glove_frame_level_segments")
            rec.frames[name] = FrameFeatures(f_ivs[:, 0], f_ivs[:, 1], f_vals)  # the writer masks non-finite frames
        records.append(rec)
    return records


def process_sdk_unit(unit: WorkUnit) -> UnitResult:
    """Read one unit's videos from every sequence and return their segment records (picklable, top level)."""
    p = unit.payload
    report: dict[str, int] = {}
    records: list[SegmentRecord] = []
    failures: list[Failure] = []
    with ExitStack() as stack:
        opened = {role: stack.enter_context(CsdFile(path)) for role, path in p["files"].items()}
        for vid, info in p["videos"].items():
            try:
                recs = _video_records(vid, info, opened, p, report, failures)
            except PipelineError as e:
                failures.append(Failure(e.item_id or vid, e.stage, str(e), e.source_path))
                _add(report, "videos_failed")
                continue
            records += recs
            _add(report, "videos_read")
            _add(report, "segments_read", len(recs))
    return UnitResult(records=records, failures=failures, report=report)


# -- the whole build -------------------------------------------------------------------------------
def plan_sdk(
    csd_dir: str | os.PathLike,
    dataset: str = "mosei",
    sets: Sequence[str] | None = None,
    config: BuildConfig | None = None,
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    batch_videos: int = 4,
) -> BuildPlan:
    """Everything decided before work runs: units, feature sets, drop report; for `pipelines.build.run_build` or a Prefect flow."""
    units, feature_sets, report = sdk_units(csd_dir, dataset, sets, batch_videos=batch_videos, folds=folds)
    build_info = {
        "recipe": RECIPE_VERSION,
        "dataset": dataset,
        "csd_dir": str(Path(csd_dir).resolve()),
        "sets": [fs.name for fs in feature_sets],
        "folds": "standard" if folds is None else (str(folds) if isinstance(folds, (str, os.PathLike)) else "given"),
        "batch_videos": batch_videos,
        "labels": labels_record(),  # MOSEI's presence emotions as given (0 = absent); no single-label classes
    }
    return BuildPlan(f"cmu-{dataset}", units, process_sdk_unit, feature_sets, config or BuildConfig(), build_info, report)


def build_sdk(
    csd_dir: str | os.PathLike,
    store: str | os.PathLike,
    dataset: str = "mosei",
    sets: Sequence[str] | None = None,
    mode: str = "weighted",
    keep_frames: bool = False,
    executor: Any = None,
    folds: Mapping[str, Sequence[str]] | str | os.PathLike | None = None,
    batch_videos: int = 4,
    units_per_shard: int = 16,
    progress: bool = True,
) -> BuildResult:
    """Build a store from a folder of CMU-MOSEI/MOSI .csd files; returns the store writer's `BuildResult`."""
    config = BuildConfig(collapse=CollapseConfig(mode=mode), keep_frames=keep_frames, units_per_shard=units_per_shard)
    plan = plan_sdk(csd_dir, dataset, sets, config, folds=folds, batch_videos=batch_videos)
    return run_build(plan, store, executor=executor, show_bar=progress)
