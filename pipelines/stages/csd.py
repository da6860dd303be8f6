"""The .csd stage: one unit (a batch of labelled videos) of the SDK's computational sequences -> segment records.

Segments are the label intervals (`video_id[i]`, i in file order); words are the TimestampedWords whose
midpoint lies in the segment (so a word on a boundary belongs to one segment only), times as given; frame-level
sequences (COVAREP, FACET, OpenFace) become the frames inside each segment, collapsed to words by the store
writer. GloVe vectors are taken per word when their intervals match the words. Each .csd is opened once per
unit and only the rows the unit's segments need are read. The release's known faults are counted, not fatal.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np

from feature_schemas import EMOTIONS

from ..csd import CsdFile, interval_faults, segment_fault, words_of
from ..errors import PipelineError
from ..records import Failure, FrameFeatures, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit

GLOVE_MATCH_TOLERANCE = 1e-3  # seconds: a GloVe row belongs to a word when both ends agree this closely


@dataclass(frozen=True)
class CsdOptions:
    """What every unit of one .csd build shares: the dataset, the sequence file of each role, the feature sets
    to read (in store order) and their dimensions."""

    dataset: str
    files: dict[str, str]  # role -> path (labels, words, and every feature set)
    sets: tuple[str, ...]
    dims: dict[str, int]
    versions: dict[str, str | None] | None = None  # role -> ETag planned with, for files at a URL


@dataclass(frozen=True)
class CsdVideo:
    split: str
    label_keys: tuple[str, ...]  # the label sequence's entries of this video, in order


@dataclass(frozen=True)
class CsdVideos:
    """A unit of the .csd stage: labelled videos in a fold, by video id."""

    videos: dict[str, CsdVideo] = field(default_factory=dict)
    source_path: str | None = None  # failure rows name the sequence file, not the unit


Segment = tuple[str, float, float, np.ndarray]  # segment id, start, end, label values
Rows = tuple[np.ndarray, np.ndarray]  # intervals (N, 2), values (N, D)


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


def _label_segments(vid: str, video: CsdVideo, labels: CsdFile, report: dict[str, int],
                    failures: list[Failure]) -> list[Segment]:
    """The video's segments, in file order within each label key; a damaged interval fails that segment only."""
    segs: list[Segment] = []
    for key in video.label_keys:
        ivs = labels.intervals(key)
        vals = np.asarray(labels.features(key), dtype=np.float64)
        if vals.shape[1] not in (1, 1 + len(EMOTIONS)):
            raise PipelineError(f"{labels.path} [{key}]: {vals.shape[1]} label columns, expected 7 or 1", "read", key, str(labels.path))
        for i in range(len(ivs)):
            sid = key if ("[" in key and len(ivs) == 1) else f"{key}[{i}]"
            fault = segment_fault(float(ivs[i, 0]), float(ivs[i, 1]))
            if fault is not None:
                failures.append(Failure(sid, "read", f"{labels.path} [{key}]: segment {sid} interval "
                                        f"[{float(ivs[i, 0])!r}, {float(ivs[i, 1])!r}] {fault}", str(labels.path)))
                _add(report, "segments_bad_interval")
                continue
            segs.append((sid, float(ivs[i, 0]), float(ivs[i, 1]), vals[i]))
    return segs


def _video_words(words_file: CsdFile | None, vid: str, bounds: np.ndarray, n_segments: int,
                 report: dict[str, int]) -> tuple[list[str], np.ndarray]:
    """The video's words (silence tokens and damaged intervals dropped) and their intervals."""
    if words_file is None or vid not in words_file:
        _add(report, "segments_without_words_file", n_segments)
        return [], np.zeros((0, 2))
    tokens, t_ivs = words_file.tokens(vid)
    all_words, w_ivs, dropped = words_of(tokens, t_ivs)
    _add(report, "silence_tokens_dropped", dropped)
    keep = _usable_rows(w_ivs, bounds, "words", report, _reaching(w_ivs, bounds, inside=True))
    return [w for w, k in zip(all_words, keep, strict=True) if k], w_ivs[keep]


def _video_frames(opened: dict[str, CsdFile], vid: str, bounds: np.ndarray, options: CsdOptions,
                  report: dict[str, int]) -> tuple[dict[str, list[Rows] | None], Rows | None]:
    """Per feature set, the rows each segment needs (None: the video is missing from that sequence), and the
    video's usable GloVe rows (matched to words later)."""
    frames: dict[str, list[Rows] | None] = {}
    glove_rows: Rows | None = None
    for name in options.sets:
        f = opened[name]
        if vid not in f:
            frames[name] = None
            _add(report, f"segments_missing.{name}", len(bounds))
            continue
        if name == "glove":  # word-level and small: read whole
            g_ivs, g_vals = f.intervals(vid), np.asarray(f.features(vid), np.float32)
            g_ok = _usable_rows(g_ivs, bounds, name, report, _reaching(g_ivs, bounds))
            g_ivs, g_vals = g_ivs[g_ok], g_vals[g_ok]
            glove_rows = (g_ivs, g_vals)
            frames[name] = [(g_ivs[m], g_vals[m]) for m in (_overlapping(g_ivs, s, e) for s, e in bounds)]
        else:
            frames[name] = _frames_by_segment(f, vid, bounds, int(options.dims[name]), report, name)
    return frames, glove_rows


def _add_sets(rec: SegmentRecord, j: int, word_ivs: np.ndarray, frames: dict[str, list[Rows] | None],
              glove_rows: Rows | None, options: CsdOptions, report: dict[str, int]) -> None:
    """Segment j's features of every set: frames (masked by the writer when non-finite), or GloVe per word."""
    for name in options.sets:
        got = frames[name]
        if got is None:
            dim = int(options.dims[name])
            rec.frames[name] = FrameFeatures(np.zeros(0), np.zeros(0), np.zeros((0, dim), np.float32))
            continue
        f_ivs, f_vals = got[j]
        finite = np.isfinite(f_vals)
        _add(report, f"nonfinite_values.{name}", int(f_vals.size - np.count_nonzero(finite)))
        if name == "glove" and glove_rows is not None:
            per_word = _glove_for_words(word_ivs, *glove_rows)
            if per_word is not None:
                ok = np.isfinite(per_word).all(axis=1)
                rec.word_features[name] = WordFeatures(np.where(ok[:, None], per_word, 0.0), ok.astype(np.float32))
                _add(report, "glove_word_level_segments")
                continue
            _add(report, "glove_frame_level_segments")
        rec.frames[name] = FrameFeatures(f_ivs[:, 0], f_ivs[:, 1], f_vals)


def _video_records(vid: str, video: CsdVideo, opened: dict[str, CsdFile], options: CsdOptions,
                   report: dict[str, int], failures: list[Failure]) -> list[SegmentRecord]:
    labels = opened["labels"]
    segs = _label_segments(vid, video, labels, report, failures)
    bounds = np.array([[s, e] for _, s, e, _ in segs], np.float64).reshape(-1, 2)
    all_words, w_ivs = _video_words(opened.get("words"), vid, bounds, len(segs), report)
    frames, glove_rows = _video_frames(opened, vid, bounds, options, report)
    records = []
    for j, (sid, start, end, vals) in enumerate(segs):
        wm = np.flatnonzero(_inside(w_ivs, start, end)) if len(w_ivs) else np.zeros(0, int)
        words = Words([all_words[k] for k in wm], w_ivs[wm, 0], w_ivs[wm, 1], np.ones(len(wm), np.float32), "given")
        rec = SegmentRecord(
            segment={
                "segment_id": sid,
                "video_id": vid,
                "split": video.split,
                "start": start,
                "end": end,
                "transcript": " ".join(words.words),
                **_label_fields(vals, report),
                "source": f"{options.dataset}-csd",
                "source_path": str(labels.path),
            },
            words=words,
        )
        _add_sets(rec, j, w_ivs[wm], frames, glove_rows, options, report)
        records.append(rec)
    return records


def process_csd_unit(unit: WorkUnit, options: CsdOptions) -> UnitResult:
    """Read one unit's videos from every sequence and return their segment records; a video that cannot be
    read fails alone."""
    videos: CsdVideos = unit.payload
    report: dict[str, int] = {}
    records: list[SegmentRecord] = []
    failures: list[Failure] = []
    with ExitStack() as stack:
        versions = options.versions or {}
        opened = {role: stack.enter_context(CsdFile(path, versions.get(role))) for role, path in options.files.items()}
        for vid, video in videos.videos.items():
            try:
                recs = _video_records(vid, video, opened, options, report, failures)
            except PipelineError as e:
                failures.append(Failure(e.item_id or vid, e.stage, str(e), e.source_path))
                _add(report, "videos_failed")
                continue
            records += recs
            _add(report, "videos_read")
            _add(report, "segments_read", len(recs))
    return UnitResult(records=records, failures=failures, report=report)
