"""A store's feature set written back as a CMU-MultimodalSDK computational sequence (.csd), atomically.

The layout and metadata keys are the release's (`pipelines.csd` reads them). Where entries go (`placement`):

- "video": when every segment has its place in its video (start/end: a store built from a `.csd` release, a
  manifest whose rows cut videos by start/end, a video file per segment), entries are keyed by video id with
  times on the video's timeline, as the SDK's releases are; `mmdataset.align` against the release's labels
  file then gives each label interval `video[i]` its rows.
- "timeline": segments without times placed by a labels `.csd` (`timeline=`): segment `VIDEO_N` (MMSA/MOSI's
  clip N) or `VIDEO[i]` is the file's interval i = N - 1 of VIDEO; keyed and timed as "video".
- "segment": otherwise, as the SDK's aligned datasets key them: `video_id[i]` (i: the segment's place among its
  video's segments, by start then id), times within the segment.

Word-level sets give one row per word; utterance-level sets one interval per segment; frame level (`level=
"frame"`) the frames as extracted. A set without times (a text-only store's words, an utterance store with
no timeline) is refused with a one-line error naming what works (`export mmsa`, `--timeline`).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from feature_schemas import StoreError, atomic_path

from ..csd import SDK_METADATA_KEYS
from ..errors import PipelineError


def _meta_text(value: Any) -> str:
    return json.dumps(value)


def write_sequence(
    out_path: str | os.PathLike,
    root_name: str,
    entries: Iterator[tuple[str, np.ndarray, np.ndarray]],
    metadata: dict[str, Any],
) -> Path:
    """Write (id, features, intervals) entries as a .csd in the SDK's layout, atomically.

    Metadata values are stored as JSON text in one-element string datasets, as the release does; every key
    the SDK's `deploy()` needs is filled so nothing prompts."""
    out = Path(out_path)
    meta = {k: "" for k in SDK_METADATA_KEYS}
    meta.update(metadata)
    meta["root name"] = root_name
    meta.setdefault("uuid", str(uuid.uuid4()))
    meta.setdefault("md5", None)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        root = f.create_group(root_name)
        data = root.create_group("data")
        for key, feats, ivs in entries:
            if not key or "/" in key or key in (".", "..") or re.search(r"[\x00-\x1f\x7f]", key):
                raise PipelineError(f"{out}: entry id {key!r} cannot be an HDF5 group name (path separator, '.', "
                                    "'..' or control characters)", "write", item_id=key, source_path=str(out))
            g = data.create_group(key)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=np.asarray(ivs, np.float64).reshape(-1, 2))
        mg = root.create_group("metadata")
        for key, value in meta.items():
            ds = mg.create_dataset(key, (1,), dtype=h5py.string_dtype())
            ds[0] = _meta_text(value)
    return out


def _natural(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


class _Places:
    """Each segment's entry key and time offset, by the store's placement (see the module docstring)."""

    def __init__(self, st: Any, split: str | None, timeline: str | os.PathLike | None) -> None:
        seg = st.segments(split, columns=["segment_id", "video_id", "start", "end"]).to_pylist()
        self.segments = {r["segment_id"]: r for r in seg}
        self.per_video: dict[str, int] = {}
        for r in seg:
            self.per_video[r["video_id"]] = self.per_video.get(r["video_id"], 0) + 1
        timed = bool(seg) and all(_finite(r["start"]) and _finite(r["end"]) for r in seg)
        self.span: dict[str, tuple[float, float]] = {}
        if timed:
            self.placement = "video"
            self.span = {r["segment_id"]: (float(r["start"]), float(r["end"])) for r in seg}
        elif timeline is not None:
            self.placement = "timeline"
            self.span = _timeline_spans(timeline, seg)
            if not self.span:
                raise StoreError(f"{st.path}: {timeline}: places none of the store's segments (ids VIDEO_N or VIDEO[i] "
                                 "of the file's videos)")
        else:
            self.placement = "segment"
            for r in seg:
                if _finite(r["start"]) and _finite(r["end"]):
                    self.span[r["segment_id"]] = (float(r["start"]), float(r["end"]))
        self.index: dict[str, int] = {}
        if self.placement == "segment":
            by_video: dict[str, list[dict[str, Any]]] = {}
            for r in seg:
                by_video.setdefault(r["video_id"], []).append(r)
            for rows in by_video.values():
                rows.sort(key=lambda r: (r["start"] if _finite(r["start"]) else np.inf, _natural(r["segment_id"])))
                self.index.update({r["segment_id"]: i for i, r in enumerate(rows)})

    def key(self, sid: str) -> str:
        r = self.segments[sid]
        return r["video_id"] if self.placement != "segment" else f"{r['video_id']}[{self.index[sid]}]"

    def offset(self, sid: str) -> float:
        """Seconds to subtract from the store's (video-timeline) times."""
        return self.span[sid][0] if self.placement == "segment" and sid in self.span else 0.0


def _finite(x: Any) -> bool:
    return x is not None and np.isfinite(x)


def _timeline_spans(path: str | os.PathLike, seg: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    from ..csd import CsdFile

    out = {}
    with CsdFile(path) as f:
        videos = set(f.ids())
        cache: dict[str, np.ndarray] = {}
        for r in seg:
            vid, sid = r["video_id"], r["segment_id"]
            m = re.fullmatch(re.escape(vid) + r"(?:_(\d+)|\[(\d+)\])", sid)
            if vid not in videos or m is None:
                continue
            i = int(m.group(1)) - 1 if m.group(1) else int(m.group(2))
            ivs = cache.setdefault(vid, f.intervals(vid))
            if 0 <= i < len(ivs):
                out[sid] = (float(ivs[i, 0]), float(ivs[i, 1]))
    return out


def _source(st: Any, feature_set: str, level: str, places: _Places) -> tuple[str, list[str], str]:
    """The table, columns and kind ("rows" / "utterance") to read; refuses what cannot carry times."""
    where = f"{st.path}: {feature_set!r}"
    if feature_set in st.utterance_sets():
        if not places.span:
            raise StoreError(f"{where} has no times (its segments have no start/end): give --timeline LABELS.csd of the "
                             "release it came from, or use `mmolre export mmsa`")
        return "utterance", ["segment_id", feature_set, f"{feature_set}__present"], "utterance"
    if level == "frame":
        if feature_set not in st.frame_sets():
            raise StoreError(f"{where} has no frame-level table (build with --keep-frames); export it with --level word")
        return f"frames/{feature_set}", ["segment_id", "frame_start", "frame_end", "values"], "rows"
    if feature_set not in st.aligned_sets():
        raise StoreError(f"{where} has no word-aligned columns; try --level frame")
    return "aligned", ["segment_id", "word_start", "word_end", feature_set], "rows"


def _check_timed(st: Any, feature_set: str, table: str, cols: list[str]) -> None:
    """Refuse a word- or frame-level set none of whose rows has a time (a text-only store's words)."""
    from feature_schemas import column_lists

    for batch in st.iter_batches(table, columns=cols[:2], batch_size=256):
        if any(np.isfinite(x).any() for x in column_lists(batch.column(cols[1]), np.float64)):
            return
    raise StoreError(f"{st.path}: {feature_set!r} has no word times (a text-only store): the SDK aligns by time; "
                     "use `mmolre export mmsa`")


def _batch_rows(batch: Any, cols: list[str], kind: str, places: _Places) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, intervals) of each row of a batch; what cannot be placed in time is left out."""
    from feature_schemas import column_lists, column_vectors, utterance_vectors

    rows = []
    if kind == "utterance":
        ids = batch.column("segment_id").to_pylist()
        ok = batch.column(cols[2]).to_numpy(zero_copy_only=False).astype(bool)
        for sid, v, present in zip(ids, utterance_vectors(batch.column(cols[1])), ok, strict=True):
            span = places.span.get(sid)
            if span is None or not present:  # no place on a timeline, or no vector: no interval
                rows.append((np.zeros((0, len(v)), np.float32), np.zeros((0, 2))))
            else:
                rows.append((v[None, :].astype(np.float32), np.array([span], np.float64)))
        return rows
    starts = column_lists(batch.column(cols[1]), np.float64)
    ends = column_lists(batch.column(cols[2]), np.float64)
    for s, e, v in zip(starts, ends, column_vectors(batch.column(cols[3])), strict=True):
        timed = np.isfinite(s) & np.isfinite(e)  # an untimed word cannot be placed: left out
        rows.append((v[timed].astype(np.float32, copy=False), np.stack([s[timed], e[timed]], axis=1)))
    return rows


def _entries(st: Any, table: str, cols: list[str], kind: str, split: str | None, places: _Places) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Entries by key; a video's entry is yielded once all its segments are read (shards hold whole videos, so
    memory stays near one shard's rows)."""
    pending: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    seen: dict[str, int] = {}
    for batch in st.iter_batches(table, split=split, columns=cols, batch_size=64):
        ids = batch.column("segment_id").to_pylist()
        for sid, (v, ivs) in zip(ids, _batch_rows(batch, cols, kind, places), strict=True):
            if sid not in places.segments:
                continue
            key = places.key(sid)
            if places.placement == "segment":
                if len(v):
                    yield key, v, ivs - places.offset(sid)
                continue
            pending.setdefault(key, []).append((v, ivs))
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == places.per_video[places.segments[sid]["video_id"]]:
                yield from _video_entry(key, pending.pop(key))
    for key in sorted(pending):  # videos some of whose segments have no rows here
        yield from _video_entry(key, pending.pop(key))


def _video_entry(key: str, parts: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    if not any(len(v) for v, _ in parts):
        return
    feats = np.concatenate([v for v, _ in parts], axis=0)
    ivs = np.concatenate([i.reshape(-1, 2) for _, i in parts], axis=0)
    order = np.argsort(ivs[:, 0], kind="stable")
    yield key, feats[order], ivs[order]


def _checked(st: Any, feature_set: str, level: str, places: _Places) -> tuple[str, list[str], str]:
    """`_source` of a set the store has, its rows checked for times: every refusal comes before any writing."""
    if feature_set not in st.feature_sets:
        raise StoreError(f"{st.path}: no feature set {feature_set!r} (has: {', '.join(st.feature_sets) or 'none'})")
    table, cols, kind = _source(st, feature_set, level, places)
    if kind == "rows":
        _check_timed(st, feature_set, table, cols)
    return table, cols, kind


def _check_level(level: str) -> None:
    if level not in ("word", "frame"):
        raise ValueError(f"level must be 'word' or 'frame', not {level!r}")


def _write(st: Any, feature_set: str, out_path: str | os.PathLike, level: str, split: str | None, places: _Places,
           source: tuple[str, list[str], str]) -> Path:
    table, cols, kind = source
    fs, m = st.feature_sets[feature_set], st.manifest
    metadata = {
        "computational sequence description": fs.description or f"{fs.extractor} features ({level} level) from an mmolre store",
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": m.name,
        "dataset version": str(m.schema_version),
        "creator": "mmolre",
        "contact": "",
        "featureset bib citation": str(fs.config.get("featureset bib citation", "")),
        "dataset bib citation": str(m.build.get("dataset bib citation", "")),
        "dimension names": list(fs.dims),
        "extractor": fs.extractor,
        "level": "utterance" if kind == "utterance" else level,
        "placement": places.placement,
    }
    return write_sequence(out_path, feature_set, _entries(st, table, cols, kind, split, places), metadata)


def write_csd(
    store: str | os.PathLike,
    feature_set: str,
    out_path: str | os.PathLike,
    level: str = "word",
    split: str | None = None,
    timeline: str | os.PathLike | None = None,
) -> Path:
    """Write one feature set of a store as a computational sequence the SDK reads and aligns (placement and
    levels: see the module docstring). Rows are streamed from the store, one record batch at a time."""
    from feature_schemas import Store

    _check_level(level)
    st = Store(store)
    if feature_set not in st.feature_sets:  # named before the timeline is read
        raise StoreError(f"{st.path}: no feature set {feature_set!r} (has: {', '.join(st.feature_sets) or 'none'})")
    places = _Places(st, split, timeline)
    return _write(st, feature_set, out_path, level, split, places, _checked(st, feature_set, level, places))


def export_csd_sets(
    store: str | os.PathLike,
    out_dir: str | os.PathLike,
    sets: Sequence[str] | None = None,
    level: str = "word",
    timeline: str | os.PathLike | None = None,
) -> list[Path]:
    """Every named set (default: every set of the store) as `out_dir/<set>.csd`; each is checked before any is
    written, so a refusal leaves nothing behind. The store, its segments and the timeline are read once."""
    from feature_schemas import Store

    _check_level(level)
    st = Store(store)
    names = list(sets) if sets else list(st.feature_sets)
    if not names:
        raise StoreError(f"{st.path}: has no feature sets to export")
    places = _Places(st, None, timeline)
    sources = {name: _checked(st, name, level, places) for name in names}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return [_write(st, name, Path(out_dir) / f"{name}.csd", level, None, places, sources[name]) for name in names]
