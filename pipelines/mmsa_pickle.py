"""MMSA's pickled datasets (`aligned_50.pkl` / `unaligned_50.pkl`): export a store to that layout, and import
such a pickle into a store through a restricted unpickler.

Layout: `{split: {"id", "raw_text", "text" (N, L, Dt), "audio" (N, T, Da), "vision" (N, T, Dv), "audio_lengths",
"vision_lengths", "regression_labels" (N,), ...}}` with splits train/valid/test. Aligned: every modality has
one row per word, L = T = 50, zero-padded at the end. Unaligned: audio and vision are frames (T per modality).

Pickles found on the internet execute code when loaded with `pickle.load`; `read_mmsa` admits only what
numpy arrays and plain containers need, and refuses anything else with `MmsaPickleError` naming the file and
the refused global.

Export also writes a few keys MMSA ignores ("words", "word_start", "word_end", "emotion_labels",
"feature_sets") so that importing our own export restores the store's values and names.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import (
    EMOTIONS,
    SPLITS,
    FeatureSet,
    Store,
    StoreError,
    atomic_path,
    column_lists,
    column_vectors,
    coverage_column,
    present_column,
    utterance_vectors,
)

from .collapse import CollapseConfig
from .folds import video_id_of
from .records import FrameFeatures, PipelineError, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit
from .store_writer import BuildConfig, BuildResult, build_store

MODALITIES = ("text", "audio", "vision")
_STORE_MODALITY = {"text": "text", "audio": "audio", "vision": "visual"}


class MmsaPickleError(PipelineError):
    """A pickle holds something other than numpy arrays and plain containers, or is not MMSA's layout."""


# -- restricted unpickling ---------------------------------------------------------------------------
def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import _codecs

    ma = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar  # a numpy scalar from its dtype and bytes
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Plain containers (older protocols name them as globals) and the bytes helper of protocol-2 numpy pickles.
    for name, obj in (("list", list), ("dict", dict), ("tuple", tuple), ("set", set), ("frozenset", frozenset),
                      ("bytearray", bytearray), ("complex", complex)):
        allowed[("builtins", name)] = obj
        allowed[("__builtin__", name)] = obj
    allowed[("_codecs", "encode")] = _codecs.encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numpy scalars and plain containers; every other global is refused."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise MmsaPickleError(
                f"{self.source}: refused to load global {module}.{name} (only numpy arrays and plain containers are "
                "allowed; a pickle naming other globals can run code)", "read", source_path=self.source)
        return obj


def read_mmsa(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Load an MMSA pickle safely and check its layout; returns `{split: {key: array or list}}`."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            data = RestrictedUnpickler(f, str(p)).load()
    except MmsaPickleError:
        raise
    except FileNotFoundError:
        raise MmsaPickleError(f"{p}: no such file", "read", source_path=str(p)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as e:
        raise MmsaPickleError(f"{p}: not a readable pickle ({type(e).__name__}: {e})", "read", source_path=str(p)) from None
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise MmsaPickleError(f"{p}: not MMSA's layout (expected a dict with train/valid/test)", "read", source_path=str(p))
    for split, d in data.items():
        if split not in SPLITS:
            continue
        if not isinstance(d, dict) or "id" not in d or "regression_labels" not in d:
            raise MmsaPickleError(f"{p}: split {split!r} lacks 'id' or 'regression_labels'", "read", source_path=str(p))
        n = len(d["id"])
        for key in ("text", "audio", "vision", "regression_labels", "raw_text"):
            if key in d and len(d[key]) != n:
                raise MmsaPickleError(f"{p}: split {split!r}: {key} has {len(d[key])} rows for {n} ids", "read", source_path=str(p))
    return data


# -- export ------------------------------------------------------------------------------------------
def _pick_sets(store: Store, text: str | None, audio: str | None, vision: str | None) -> dict[str, str | None]:
    chosen = {"text": text, "audio": audio, "vision": vision}
    for mod, name in chosen.items():
        if name is None:
            usable = store.aligned_sets() + store.utterance_sets()  # word-level first
            cands = [n for n in usable if store.feature_sets[n].modality == _STORE_MODALITY[mod]]
            chosen[mod] = cands[0] if cands else None
        elif name not in store.feature_sets:
            raise StoreError(f"{store.path}: no feature set {name!r} for {mod} (has: {', '.join(store.feature_sets)})")
    return chosen


def _pad(rows: list[np.ndarray], length: int, dim: int) -> tuple[np.ndarray, list[int]]:
    out = np.zeros((len(rows), length, dim), np.float32)
    lengths = []
    for i, r in enumerate(rows):
        k = min(len(r), length)
        out[i, :k] = r[:k]
        lengths.append(k)
    return out, lengths


def _utterance_rows(st: Store, split: str, name: str, ids: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """An utterance-level set as MMSA arrays: (N, 1, D), coverage [1] or [0], length 1 (0 where absent)."""
    t = st.utterance(split, [name], ["segment_id"])
    index = {sid: i for i, sid in enumerate(t.column("segment_id").to_pylist())}
    values = utterance_vectors(t.column(name))
    present = t.column(present_column(name)).to_numpy(zero_copy_only=False).astype(bool)
    dim = st.feature_sets[name].dim
    out = np.zeros((len(ids), 1, dim), np.float32)
    lengths = []
    for k, sid in enumerate(ids):
        i = index.get(sid)
        ok = i is not None and bool(present[i])
        if ok:
            out[k, 0] = values[i]
        lengths.append(int(ok))
    return out, [np.array([float(n)], np.float32) for n in lengths], lengths


def export_mmsa(
    store: str | os.PathLike,
    out_path: str | os.PathLike,
    text: str | None = None,
    audio: str | None = None,
    vision: str | None = None,
    aligned: bool = True,
    seq_len: int = 50,
    frame_len: int = 500,
) -> Path:
    """Write a store as MMSA's pickle. Feature sets are chosen by name (default: the first text, audio and
    visual sets). aligned=True: all three per word, padded/truncated to `seq_len`; aligned=False: audio and
    vision from the frame tables (build with keep_frames), padded/truncated to `frame_len`."""
    st = Store(store)
    sets = _pick_sets(st, text, audio, vision)
    out: dict[str, dict[str, Any]] = {}
    for split in st.splits():
        seg = st.segments(split).to_pandas().set_index("segment_id")
        names = [n for n in dict.fromkeys(sets.values()) if n is not None and n not in st.utterance_sets()]
        al = st.aligned(split, feature_sets=names)
        ids = al.column("segment_id").to_pylist()
        words = al.column("words").to_pylist()
        d: dict[str, Any] = {
            "id": np.array(ids, dtype=object),
            "raw_text": np.array([t if isinstance(t, str) else " ".join(w) for t, w in zip(seg.loc[ids, "transcript"], words, strict=True)],
                                 dtype=object),
            "regression_labels": seg.loc[ids, "sentiment"].to_numpy(np.float32, na_value=np.nan),
            "emotion_labels": seg.loc[ids, list(EMOTIONS)].to_numpy(np.float32, na_value=np.nan).reshape(-1, len(EMOTIONS)),
            "words": [w[:seq_len] for w in words],
            "word_start": [x[:seq_len] for x in column_lists(al.column("word_start"), np.float64)],
            "word_end": [x[:seq_len] for x in column_lists(al.column("word_end"), np.float64)],
            "video_id": np.array(seg.loc[ids, "video_id"].tolist(), dtype=object),
            "segment_start": seg.loc[ids, "start"].to_numpy(np.float64, na_value=np.nan),
            "segment_end": seg.loc[ids, "end"].to_numpy(np.float64, na_value=np.nan),
            "feature_sets": {m: (st.feature_sets[n].to_dict() if n else None) for m, n in sets.items()},
            "aligned": aligned,
            "levels": {m: (st.feature_sets[n].level if n else None) for m, n in sets.items()},
        }
        for mod, name in sets.items():
            if name is None:
                continue
            dim = st.feature_sets[name].dim
            if name in st.utterance_sets():  # schema 2: one vector per segment, exported as a one-step sequence
                d[mod], d[f"{mod}_coverage"], lengths = _utterance_rows(st, split, name, ids)
            elif aligned or mod == "text":
                rows = column_vectors(al.column(name))
                d[mod], lengths = _pad(rows, seq_len, dim)
                d[f"{mod}_coverage"] = [c[:seq_len] for c in column_lists(al.column(coverage_column(name)))]
            else:
                if name not in st.frame_sets():
                    raise StoreError(f"{st.path}: no frame-level table for {name!r}; build with keep_frames=True or export aligned")
                fr = st.frames(name, split, columns=["segment_id", "values"])
                by_id = dict(zip(fr.column("segment_id").to_pylist(), column_vectors(fr.column("values")), strict=True))
                rows = [by_id.get(i, np.zeros((0, dim), np.float32)) for i in ids]
                rows = [np.where(np.isfinite(r), r, 0.0) for r in rows]
                d[mod], lengths = _pad(rows, frame_len, dim)
            d[f"{mod}_lengths"] = lengths
        out[split] = d
    dest = Path(out_path)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        pickle.dump(out, f, protocol=4)
    return dest


# -- import ------------------------------------------------------------------------------------------
def _default_name(mod: str, dim: int) -> str:
    known = {("text", 300): "glove", ("text", 768): "bert", ("audio", 74): "covarep", ("vision", 35): "facet42"}
    return known.get((mod, dim), f"mmsa_{mod}")


def mmsa_feature_sets(data: Mapping[str, Any], names: Mapping[str, str] | None = None) -> dict[str, FeatureSet]:
    """modality -> FeatureSet for the modalities present; our own exports carry their original descriptions."""
    first = next(data[s] for s in SPLITS if s in data)
    stored = first.get("feature_sets") or {}
    out = {}
    for mod in MODALITIES:
        if mod not in first:
            continue
        arr = np.asarray(first[mod])
        dim = int(arr.shape[-1])
        given = (names or {}).get(mod)
        if isinstance(stored.get(mod), dict) and int(stored[mod].get("dim", -1)) == dim:
            # a pickle holds sequences: an utterance-level set comes back as one step per segment, word-level
            fs = FeatureSet.from_dict({**stored[mod], "level": "word"})
            if given and given != fs.name:
                fs = FeatureSet.from_dict({**fs.to_dict(), "name": given})
        else:
            fs = FeatureSet(given or _default_name(mod, dim), tuple(f"{mod}_{i}" for i in range(dim)), _STORE_MODALITY[mod],
                            "MMSA pickle", config={"mmsa_key": mod}, frame_rate=None,
                            description=f"{mod} features imported from an MMSA pickle")
        out[mod] = fs
    if len({fs.name for fs in out.values()}) != len(out):
        raise MmsaPickleError(f"two modalities map to one feature set name: {[fs.name for fs in out.values()]}", "read")
    return out


def _n_real(rows: np.ndarray) -> int:
    """Rows up to the last one that is not all zeros (MMSA pads with zeros at the end)."""
    nz = np.flatnonzero(np.any(rows != 0, axis=1))
    return int(nz[-1]) + 1 if nz.size else 0


def _record(d: Mapping[str, Any], i: int, split: str, sets: Mapping[str, FeatureSet], aligned: bool, source: str) -> SegmentRecord:
    sid = str(d["id"][i])
    if "words" in d:
        words = [str(w) for w in d["words"][i]]
    else:
        n = _n_real(np.asarray(d["text"][i])) if "text" in d else 0
        toks = str(d["raw_text"][i]).split() if "raw_text" in d else []
        words = toks if len(toks) == n else [f"<w{j}>" for j in range(n)]
    n = len(words)
    if "word_start" in d and "word_end" in d:
        w = Words(words, d["word_start"][i], d["word_end"][i], np.ones(n, np.float32), "given")
        if not np.isfinite(w.start).all():
            w = Words(words, w.start, w.end, np.zeros(n, np.float32), "none")
    elif aligned:
        w = Words.untimed(words)
    else:  # frames and words spread evenly over a nominal [0, 1) timeline: the best MMSA's layout allows
        edges = np.arange(n + 1) / max(n, 1)
        w = Words(words, edges[:-1], edges[1:], np.zeros(n, np.float32), "uniform")
    label = float(d["regression_labels"][i])
    seg: dict[str, Any] = {
        "segment_id": sid,
        "video_id": video_id_of(sid.split("$_$", 1)[0]),
        "split": split,
        "transcript": str(d["raw_text"][i]) if "raw_text" in d else " ".join(words),
        "sentiment": label if np.isfinite(label) else None,
        "source": "mmsa",
        "source_path": source,
    }
    if "video_id" in d:
        seg["video_id"] = str(d["video_id"][i])
    for col, key in (("start", "segment_start"), ("end", "segment_end")):
        if key in d and np.isfinite(d[key][i]):
            seg[col] = float(d[key][i])
    if "emotion_labels" in d:
        for e, v in zip(EMOTIONS, np.asarray(d["emotion_labels"][i], np.float64), strict=True):
            seg[e] = float(v) if np.isfinite(v) else None
    rec = SegmentRecord(seg, w)
    for mod, fs in sets.items():
        rows = np.asarray(d[mod][i], np.float32)
        if aligned or mod == "text":
            vals = rows[:n] if len(rows) >= n else np.vstack([rows, np.zeros((n - len(rows), fs.dim), np.float32)])
            cov = np.asarray(d[f"{mod}_coverage"][i], np.float32) if f"{mod}_coverage" in d else None
            rec.word_features[fs.name] = WordFeatures(vals, cov if cov is not None and len(cov) == n else None)
        else:
            k = int(d[f"{mod}_lengths"][i]) if f"{mod}_lengths" in d else _n_real(rows)
            t = np.arange(k + 1) / max(k, 1)
            rec.frames[fs.name] = FrameFeatures(t[:-1], t[1:], rows[:k])
    return rec


def process_mmsa_unit(unit: WorkUnit) -> UnitResult:
    """Turn one slice of a pickle's split (carried in the payload) into segment records."""
    p = unit.payload
    sets = {m: FeatureSet.from_dict(fs) for m, fs in p["sets"].items()}
    recs = [_record(p["data"], i, p["split"], sets, p["aligned"], p["source"]) for i in range(len(p["data"]["id"]))]
    return UnitResult(records=recs, report={f"segments_imported.{p['split']}": len(recs)})


def mmsa_units(
    path: str | os.PathLike,
    names: Mapping[str, str] | None = None,
    aligned: bool | None = None,
    segments_per_unit: int = 256,
) -> tuple[list[WorkUnit], list[FeatureSet], dict[str, Any]]:
    """Read a pickle (restricted) and cut it into units; `aligned=None` takes the layout from the file."""
    p = Path(path)
    data = read_mmsa(p)
    sets = mmsa_feature_sets(data, names)
    first = next(data[s] for s in SPLITS if s in data)
    if aligned is None:
        aligned = bool(first.get("aligned", "unaligned" not in p.name))
    st = p.stat()
    base = f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{sorted((m, fs.name) for m, fs in sets.items())}\0{aligned}"
    keys = ["id", "raw_text", "regression_labels", "emotion_labels", "words", "word_start", "word_end", "video_id",
            "segment_start", "segment_end", "audio_lengths", "vision_lengths", *sets, *(f"{m}_coverage" for m in sets)]
    units = []
    for split in SPLITS:
        if split not in data:
            continue
        d = data[split]
        for lo in range(0, len(d["id"]), segments_per_unit):
            hi = lo + segments_per_unit
            part = {k: d[k][lo:hi] for k in keys if k in d}
            key = hashlib.sha256(f"{base}\0{split}\0{lo}".encode()).hexdigest()
            units.append(WorkUnit(f"{split}-{lo:07d}", key, {
                "data": part, "split": split, "aligned": aligned, "source": str(p),
                "sets": {m: fs.to_dict() for m, fs in sets.items()},
            }))
    report = {"mmsa_file": p.name, "aligned": aligned, "segments": {s: len(data[s]["id"]) for s in SPLITS if s in data},
              "modalities": {m: fs.name for m, fs in sets.items()}}
    return units, list(sets.values()), report


def import_mmsa(
    path: str | os.PathLike,
    store: str | os.PathLike,
    names: Mapping[str, str] | None = None,
    aligned: bool | None = None,
    name: str | None = None,
    mode: str = "weighted",
    executor: Any = None,
    progress: bool = True,
) -> BuildResult:
    """Import an MMSA pickle into a store; returns the store writer's `BuildResult`."""
    units, feature_sets, report = mmsa_units(path, names, aligned)
    return build_store(store, name or Path(path).stem, units, process_mmsa_unit, feature_sets,
                       BuildConfig(collapse=CollapseConfig(mode=mode)), executor=executor,
                       build_info={"recipe": "mmsa/1", "file": str(Path(path).resolve()), "aligned": report["aligned"]},
                       report=report, progress=progress)

