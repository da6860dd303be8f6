"""CMU-MultimodalSDK computational sequences (.csd): read one video at a time, recognise the standard
sequences of the CMU-MOSEI / CMU-MOSI release, and write a store's feature set back as a .csd.

A .csd is HDF5: `<root>/data/<video_id>/{features,intervals}` and `<root>/metadata/<key>` (one-element string
datasets). The SDK loads whole files into memory and its users hit KeyErrors, -inf and undocumented
dimensions; here a file stays open and each video is read on demand (`CsdFile.features(vid, lo, hi)` reads a
slice), every structural fault is a `PipelineError` naming the file (and video), and dimension names fall
back to the published ones when the file lacks them.
"""

from __future__ import annotations

import ast
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from feature_schemas import atomic_path

from .records import PipelineError

# Keys the SDK's `deploy()` asks for on stdin when absent; we always write all of them.
SDK_METADATA_KEYS: tuple[str, ...] = (
    "root name",
    "computational sequence description",
    "computational sequence version",
    "alignment compatible",
    "dataset name",
    "dataset version",
    "creator",
    "contact",
    "featureset bib citation",
    "dataset bib citation",
)

# Tokens the forced aligner emits for pauses; they are not words.
SILENCE_TOKENS = frozenset({"", "sp", "sil", "<sil>", "<sp>", "{sl}"})

COVAREP_DIMS: tuple[str, ...] = (
    ("F0", "VUV", "NAQ", "QOQ", "H1H2", "PSP", "MDQ", "peakSlope", "Rd", "Rd_conf", "creak")
    + tuple(f"MCEP_{i}" for i in range(25))
    + tuple(f"HMPDM_{i}" for i in range(25))
    + tuple(f"HMPDD_{i}" for i in range(13))
)

LABEL_DIMS_MOSEI: tuple[str, ...] = ("sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear")


@dataclass(frozen=True)
class Role:
    """What a standard sequence is: its kind (words, phones, frames, labels) and the dimension it must have."""

    name: str
    kind: str  # words | phones | frames | labels
    expected_dim: int | tuple[int, ...] | None = None
    modality: str | None = None
    extractor: str = ""
    frame_rate: float | None = None
    default_dims: tuple[str, ...] | None = None


ROLES: dict[str, Role] = {
    "words": Role("words", "words"),
    "phones": Role("phones", "phones"),
    "labels": Role("labels", "labels", (7, 1)),
    "covarep": Role("covarep", "frames", 74, "audio", "COVAREP", 100.0, COVAREP_DIMS),
    "facet42": Role("facet42", "frames", 35, "visual", "FACET 4.2", 30.0),
    "facet41": Role("facet41", "frames", None, "visual", "FACET 4.1", 30.0),
    "openface2": Role("openface2", "frames", None, "visual", "OpenFace 2.0", 30.0),
    "glove": Role("glove", "frames", 300, "text", "GloVe 840B.300d", None),
}
FEATURE_ROLES: tuple[str, ...] = tuple(n for n, r in ROLES.items() if r.kind == "frames")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def role_of(root_name: str | None, filename: str) -> str | None:
    """Map a sequence to its role from the metadata root name, else the file name (`CMU_MOSEI_COVAREP.csd`)."""
    for name in (root_name or "", Path(filename).stem):
        n = _norm(name)
        if not n:
            continue
        if "glove" in n or "wordvector" in n:
            return "glove"
        if "phone" in n:
            return "phones"
        if "word" in n:
            return "words"
        if "covarep" in n:
            return "covarep"
        if "facet" in n:
            return "facet41" if "41" in n else "facet42"
        if "openface" in n:
            return "openface2"
        if "label" in n or "opinion" in n or "sentiment" in n:
            return "labels"
    return None


# -- metadata ----------------------------------------------------------------------------------------
def decode_metadata_value(value: Any) -> Any:
    """One metadata value -> a Python value. The release stores JSON text in one-element byte arrays; the
    SDK's writer stores `str(value)` (a Python repr for lists); some files hold string arrays or scalars."""
    if isinstance(value, h5py.Dataset):
        value = value[()]
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            value = value.item()
        elif value.size == 1:
            value = value.reshape(-1)[0]
        else:
            return [_text(v) if isinstance(v, (bytes, str, np.bytes_, np.str_)) else _plain(v) for v in value.reshape(-1)]
    if isinstance(value, (bytes, np.bytes_, str, np.str_)):
        text = _text(value)
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(text)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
        return text
    return _plain(value)


def _text(v: Any) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, (bytes, np.bytes_)) else str(v)


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def dimension_names(metadata: dict[str, Any], dim: int) -> tuple[str, ...] | None:
    """The file's own dimension names when they are usable (one distinct name per dimension)."""
    names = metadata.get("dimension names")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or len(names) != dim:
        return None
    names = [str(n).strip() for n in names]
    if len(set(names)) != dim or any(not n for n in names):
        return None
    return tuple(names)


# -- reading -----------------------------------------------------------------------------------------
class CsdFile:
    """An open computational sequence; `with CsdFile(path) as f: f.features(vid)` reads one video only."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise PipelineError(f"{self.path}: no such .csd file", "read", source_path=str(self.path)) from None
        except OSError as e:
            raise PipelineError(f"{self.path}: not a readable HDF5 computational sequence ({e})", "read", source_path=str(self.path)) from None
        try:
            groups = [k for k in self._h5.keys() if isinstance(self._h5[k], h5py.Group)]
            if not groups:
                raise self._error("has no root group (expected <root>/data and <root>/metadata)")
            with_data = [k for k in groups if "data" in self._h5[k]]
            if not with_data:
                raise self._error(f"root group {groups[0]!r} has no 'data' group")
            self.root: str = with_data[0]
            group = self._h5[self.root]
            self._data = group["data"]
            if not isinstance(self._data, h5py.Group):
                raise self._error(f"{self.root}/data is not a group")
            meta = group.get("metadata")
            self.metadata: dict[str, Any] = {}
            if isinstance(meta, h5py.Group):
                for key in meta.keys():
                    self.metadata[key] = decode_metadata_value(meta[key])
            self.root_name: str = str(self.metadata.get("root name") or self.root)
        except PipelineError:
            self._h5.close()
            raise
        except (OSError, KeyError, RuntimeError) as e:
            self._h5.close()
            raise self._error(f"is damaged ({e})") from None

    def _error(self, what: str, video_id: str | None = None) -> PipelineError:
        where = f"{self.path}" + (f" [{video_id}]" if video_id else "")
        return PipelineError(f"{where}: {what}", "read", item_id=video_id, source_path=str(self.path))

    # context manager
    def __enter__(self) -> CsdFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    # what is in it
    def ids(self) -> list[str]:
        try:
            return list(self._data.keys())
        except (OSError, RuntimeError) as e:
            raise self._error(f"cannot list its entries ({e})") from None

    def __contains__(self, video_id: object) -> bool:
        try:
            return isinstance(video_id, str) and video_id in self._data
        except (KeyError, OSError, RuntimeError, ValueError):
            return False

    def _entry(self, video_id: str) -> tuple[h5py.Dataset, h5py.Dataset]:
        try:
            if video_id not in self._data:
                raise self._error("no such entry", video_id)
            g = self._data[video_id]
            if not isinstance(g, h5py.Group) or "features" not in g or "intervals" not in g:
                raise self._error("entry lacks 'features' or 'intervals'", video_id)
            feats, ivs = g["features"], g["intervals"]
        except (KeyError, OSError, RuntimeError, ValueError) as e:  # a damaged object header or B-tree
            raise self._error(f"damaged entry ({e})", video_id) from None
        if not isinstance(feats, h5py.Dataset) or not isinstance(ivs, h5py.Dataset):
            raise self._error("'features' and 'intervals' must be datasets", video_id)
        if ivs.ndim != 2 or ivs.shape[1] != 2:
            raise self._error(f"intervals have shape {ivs.shape}, expected (N, 2)", video_id)
        if feats.ndim != 2 or feats.shape[0] != ivs.shape[0]:
            raise self._error(f"features have shape {feats.shape} for {ivs.shape[0]} intervals", video_id)
        return feats, ivs

    def shape(self, video_id: str) -> tuple[int, int]:
        """(N, D) of one entry, without reading it."""
        feats, _ = self._entry(video_id)
        return int(feats.shape[0]), int(feats.shape[1])

    def dim(self) -> int | None:
        """D of the first entry (every entry of a sequence has the same D); None for an empty sequence."""
        for vid in self._data.keys():
            return self.shape(vid)[1]
        return None

    def intervals(self, video_id: str) -> np.ndarray:
        _, ivs = self._entry(video_id)
        try:
            return np.asarray(ivs[()], dtype=np.float64).reshape(-1, 2)
        except (OSError, ValueError, RuntimeError) as e:
            raise self._error(f"unreadable intervals ({e})", video_id) from None

    def features(self, video_id: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows lo..hi of one entry's features (a slice read: the rest of the video stays on disk)."""
        feats, _ = self._entry(video_id)
        try:
            return feats[lo:hi]
        except (OSError, ValueError, RuntimeError) as e:
            raise self._error(f"unreadable features ({e})", video_id) from None

    def tokens(self, video_id: str) -> tuple[list[str], np.ndarray]:
        """A words/phones entry: its tokens (decoded, as given) and their intervals. Tokens that are numbers,
        not text, are refused (str() would turn them into the word '0.0')."""
        raw = self.features(video_id)
        if raw.dtype.kind not in "SUO":
            raise self._error(f"word tokens are {raw.dtype} numbers, not text (a damaged words sequence)", video_id)
        col = raw[:, 0] if raw.ndim == 2 and raw.shape[1] else raw.reshape(-1)
        odd = [t for t in col if not isinstance(t, (bytes, str, np.bytes_, np.str_))]
        if odd:
            raise self._error(f"{len(odd)} word tokens are not text (first: {odd[0]!r})", video_id)
        return [_text(t).strip() for t in col], self.intervals(video_id)

    def iter_entries(self, ids: Sequence[str] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(id, features, intervals) one entry at a time."""
        for vid in ids if ids is not None else self.ids():
            yield vid, self.features(vid), self.intervals(vid)


# -- interval checks ---------------------------------------------------------------------------------
SPAN_TOLERANCE = 1.0  # seconds a word or frame may reach past the labelled span (rows straddle segment ends)
MAX_SEGMENT_SECONDS = 3600.0  # a labelled segment longer than this is a damaged interval, not an utterance


def interval_faults(intervals: np.ndarray, span: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """Per fault, a row mask: `nonfinite` (NaN or inf), `reversed` (end before start), `beyond_span` (starts
    before `span[0]` or ends after `span[1]`, by more than SPAN_TOLERANCE). A row has at most one fault."""
    ivs = np.asarray(intervals, np.float64).reshape(-1, 2)
    nonfinite = ~np.isfinite(ivs).all(axis=1)
    ok = ~nonfinite
    reverse = np.zeros(len(ivs), bool)
    reverse[ok] = ivs[ok, 1] < ivs[ok, 0]
    beyond = np.zeros(len(ivs), bool)
    if span is not None:
        fine = ok & ~reverse
        beyond[fine] = (ivs[fine, 0] < span[0] - SPAN_TOLERANCE) | (ivs[fine, 1] > span[1] + SPAN_TOLERANCE)
    return {"nonfinite": nonfinite, "reversed": reverse, "beyond_span": beyond}


def segment_fault(start: float, end: float) -> str | None:
    """Why a labelled segment's interval is unusable, or None."""
    if not (np.isfinite(start) and np.isfinite(end)):
        return "is not finite"
    if end < start:
        return "ends before it starts"
    if start < -SPAN_TOLERANCE:
        return "starts before the video (negative time)"
    if end - start > MAX_SEGMENT_SECONDS:
        return f"is longer than any video's span ({MAX_SEGMENT_SECONDS:g} s)"
    return None


def words_of(tokens: Sequence[str], intervals: np.ndarray) -> tuple[list[str], np.ndarray, int]:
    """Drop silence tokens (`sp`, `sil`, empty); returns the words, their (W, 2) intervals and how many were dropped."""
    keep = np.array([t.lower() not in SILENCE_TOKENS for t in tokens], dtype=bool)
    words = [t for t, k in zip(tokens, keep, strict=True) if k]
    return words, np.asarray(intervals, np.float64).reshape(-1, 2)[keep], int((~keep).sum())


@dataclass(frozen=True)
class CsdInfo:
    """A recognised sequence in an input folder."""

    path: Path
    role: str
    root_name: str
    dim: int | None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def dims(self) -> tuple[str, ...]:
        """Dimension names: the file's own, else the published ones, else `<role>_<i>`."""
        d = self.dim or 0
        names = dimension_names(self.metadata, d)
        if names is not None:
            return names
        default = ROLES[self.role].default_dims
        if default is not None and len(default) == d:
            return default
        if self.role == "labels" and d == len(LABEL_DIMS_MOSEI):
            return LABEL_DIMS_MOSEI
        return tuple(f"{self.role}_{i}" for i in range(d))


def inspect_csd(path: str | os.PathLike) -> CsdInfo | None:
    """Open a file, recognise its role and check its dimension; None when it is not a standard sequence."""
    with CsdFile(path) as f:
        role = role_of(f.root_name, f.path.name)
        if role is None:
            return None
        dim = f.dim()
        expected = ROLES[role].expected_dim
        allowed = expected if isinstance(expected, tuple) else (expected,) if expected is not None else None
        if allowed is not None and dim is not None and dim not in allowed:
            raise PipelineError(
                f"{f.path}: {role} sequence {f.root_name!r} has {dim} dimensions, expected {' or '.join(map(str, allowed))}",
                "read", source_path=str(f.path),
            )
        return CsdInfo(f.path, role, f.root_name, dim, dict(f.metadata))


def discover(csd_dir: str | os.PathLike) -> tuple[dict[str, CsdInfo], list[str]]:
    """The standard sequences in a folder (any subset) by role, and the names of .csd files not recognised."""
    folder = Path(csd_dir)
    if not folder.is_dir():
        raise PipelineError(f"{folder}: not a folder of .csd files", "read", source_path=str(folder))
    found: dict[str, CsdInfo] = {}
    ignored: list[str] = []
    for path in sorted(folder.glob("*.csd")):
        info = inspect_csd(path)
        if info is None:
            ignored.append(path.name)
            continue
        if info.role in found:
            raise PipelineError(
                f"{folder}: two {info.role} sequences ({found[info.role].path.name}, {path.name}); keep one",
                "read", source_path=str(path),
            )
        found[info.role] = info
    return found, ignored


# -- writing -----------------------------------------------------------------------------------------
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


def write_csd(
    store: str | os.PathLike,
    feature_set: str,
    out_path: str | os.PathLike,
    level: str = "word",
    split: str | None = None,
) -> Path:
    """Write one feature set of a store as a computational sequence readable by the SDK.

    level="word": one entry per segment (`video_id[i]`, the SDK's key after aligning to labels), one row per
    word with the word's interval and its collapsed vector (words no frame covered keep the store's fill).
    level="frame": one entry per segment with its frames as extracted (needs a store built with frames).
    Rows are streamed from the store, one record batch at a time."""
    from feature_schemas import Store, StoreError, column_lists, column_vectors

    st = Store(store)
    if feature_set not in st.feature_sets:
        raise StoreError(f"{st.path}: no feature set {feature_set!r} (has: {', '.join(st.feature_sets) or 'none'})")
    fs = st.feature_sets[feature_set]
    if level == "word":
        if feature_set not in st.aligned_sets():
            raise StoreError(f"{st.path}: {feature_set!r} has no word-aligned columns")
        table = "aligned"
        cols = ["segment_id", "word_start", "word_end", feature_set]
        start_col, end_col, value_col = "word_start", "word_end", feature_set
    elif level == "frame":
        if feature_set not in st.frame_sets():
            raise StoreError(f"{st.path}: no frame-level table for {feature_set!r}; build with keep_frames=True")
        table = f"frames/{feature_set}"
        cols = ["segment_id", "frame_start", "frame_end", "values"]
        start_col, end_col, value_col = "frame_start", "frame_end", "values"
    else:
        raise ValueError(f"level must be 'word' or 'frame', not {level!r}")

    def entries() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for batch in st.iter_batches(table, split=split, columns=cols, batch_size=64):
            starts = column_lists(batch.column(start_col), np.float64)  # nulls (untimed words) -> NaN
            ends = column_lists(batch.column(end_col), np.float64)
            values = column_vectors(batch.column(value_col))
            for sid, s, e, v in zip(batch.column("segment_id").to_pylist(), starts, ends, values, strict=True):
                yield sid, v.astype(np.float32, copy=False), np.stack([s, e], axis=1).reshape(-1, 2)

    m = st.manifest
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
        "level": level,
    }
    return write_sequence(out_path, feature_set, entries(), metadata)
