"""MMSA's pickled datasets (`aligned_50.pkl` / `unaligned_50.pkl`): export a store to that layout, and import
such a pickle into a store through a restricted unpickler.

Layout: `{split: {"id", "raw_text", "text" (N, L, Dt), "audio" (N, T, Da), "vision" (N, T, Dv), "audio_lengths",
"vision_lengths", "regression_labels" (N,), ...}}` with splits train/valid/test. Aligned: every modality has
one row per word, L = T = 50, zero-padded at the end. Unaligned: audio and vision are frames (T per modality).

Pickles found on the internet execute code when loaded with `pickle.load`; `read_mmsa` admits only what
numpy arrays and plain containers need, and refuses anything else with `MmsaPickleError` naming the file and
the refused global.

Export also writes a few keys MMSA ignores ("words", "word_start", "word_end", "emotion_labels",
"sentiment_class", "emotion_class", "labels", "feature_sets") so that importing our own export restores the
store's values and names. Labels follow feature_schemas/labels.py: an `emotion_labels` row that gives any
emotion has 0 for the ones it leaves NaN (all NaN: unknown); MMSA's `annotations` (Negative/Neutral/Positive)
become sentiment_class; the emotion class set is the export's recorded one, else found from the values.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import (
    EMOTION_CLASS_SETS,
    EMOTIONS,
    SENTIMENT_CLASSES,
    SPLITS,
    ClassSet,
    FeatureSet,
    Store,
    StoreError,
    atomic_path,
    class_name,
    column_lists,
    column_vectors,
    coverage_column,
    emotion_class_set,
    labels_record,
    present_column,
    utterance_vectors,
)

from .build import run_build
from .collapse import CollapseConfig
from .folds import video_id_of
from .records import (
    Failure,
    FrameFeatures,
    PipelineError,
    SegmentRecord,
    UnitResult,
    WordFeatures,
    Words,
    WorkUnit,
)
from .store_writer import BuildConfig, BuildPlan, BuildResult

MODALITIES = ("text", "audio", "vision")
RECIPE_VERSION = "mmsa/1"
MMSA_UNITS_PER_SHARD = 4  # units of 256 segments: about a thousand segments per shard
_STORE_MODALITY = {"text": "text", "audio": "audio", "vision": "visual"}


class MmsaPickleError(PipelineError):
    """A pickle holds something other than numpy arrays and plain containers, or is not MMSA's layout."""


# -- restricted unpickling ---------------------------------------------------------------------------
# Memory: what the admitted callables may allocate in all is bounded by the file's size. An honest pickle needs
# about twice its size (the raw bytes, then the arrays made from them); the rest is headroom for small files.
BUDGET_FACTOR = 4
BUDGET_EXTRA = 64 * 2**20


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


class _CheckedArray(np.ndarray):
    """What `numpy.ndarray` resolves to while unpickling: `__setstate__` checks the state against the declared
    shape and the memory budget before numpy sees it (numpy 2.4 crashes on an object array whose list is
    shorter than its shape). Replaced by plain ndarrays once loaded."""

    _unpickler: RestrictedUnpickler | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:  # a pickle calling ndarray(shape) directly
        raise MmsaPickleError("calls numpy.ndarray() directly (numpy pickles never do)", "read")

    def __setstate__(self, state: Any) -> None:
        u = type(self)._unpickler
        if u is None:  # pragma: no cover - only reachable when unpickled outside read_mmsa
            raise MmsaPickleError("numpy array state outside read_mmsa", "read")
        super().__setstate__(u.check_array_state(state))


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles numpy arrays, numpy scalars and plain containers; every other global is refused, and what the
    admitted ones may allocate is capped (`budget` bytes in all).

    Built on Python's own unpickler, not the C one: the C unpickler zero-fills its memo list up to any PUT
    index, so a 9-byte pickle (`LONG_BINPUT 1.3e9`) makes it touch ~20 GB. For MMSA's few large arrays the
    speed is the same."""

    def __init__(self, file: Any, source: str, budget: int | None = None) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.budget = BUDGET_EXTRA if budget is None else budget
        self.used = 0
        self._array_cls = type("_CheckedArray", (_CheckedArray,), {"_unpickler": self})
        self._allowed = self._allowed_globals()

    # refusals name the file
    def error(self, what: str) -> MmsaPickleError:
        return MmsaPickleError(f"{self.source}: {what}", "read", source_path=self.source)

    def charge(self, nbytes: int, what: str) -> None:
        """Count an allocation before it happens; refuse one that would pass the budget."""
        self.used += max(0, int(nbytes))
        if self.used > self.budget:
            raise self.error(f"refused: {what} would make unpickling allocate over {self.budget // 2**20} MiB, far more "
                             "than the file's size (a pickle bomb, or not an MMSA dataset)")

    def _count(self, n: Any, what: str) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise self.error(f"refused: {what} with size {n!r}")
        return n

    # the admitted callables
    def _sized(self, kind: type, per_item: int) -> Any:
        def make(*args: Any) -> Any:
            if len(args) > 1 or (args and isinstance(args[0], (int, float))):
                raise self.error(f"refused: {kind.__name__}{args!r:.60} (only copies of loaded values are admitted)")
            if args:
                src = args[0]
                n = len(src) if hasattr(src, "__len__") else None
                if n is None:
                    raise self.error(f"refused: {kind.__name__}() of a {type(src).__name__}")
                self.charge(per_item * n, f"{kind.__name__}() of {n} items")
            return kind(*args)
        return make

    def _bytearray(self, *args: Any) -> bytearray:
        if not args:
            return bytearray()
        src = args[0]
        if isinstance(src, str):
            if len(args) != 2 or str(args[1]).lower().replace("-", "") != "latin1":
                raise self.error("refused: bytearray() of text in an encoding other than latin-1")
            self.charge(len(src), "bytearray()")
            return bytearray(src, "latin-1")
        if isinstance(src, (bytes, bytearray)) and len(args) == 1:
            self.charge(len(src), "bytearray()")
            return bytearray(src)
        raise self.error(f"refused: bytearray({type(src).__name__}) (only copies of loaded bytes are admitted)")

    def _encode(self, obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        import _codecs

        if not isinstance(obj, str) or encoding.lower().replace("-", "") != "latin1":
            raise self.error(f"refused: _codecs.encode of {type(obj).__name__} to {encoding!r} (numpy pickles use latin1 text)")
        self.charge(len(obj), "_codecs.encode")
        return _codecs.encode(obj, "latin1", errors)

    def _reconstruct(self, cls: Any, shape: Any, dtype: Any) -> Any:
        if cls is not self._array_cls:
            raise self.error(f"refused: numpy _reconstruct of {getattr(cls, '__name__', cls)!r}")
        n = 1
        for d in tuple(shape) if isinstance(shape, (tuple, list)) else (shape,):
            n *= self._count(d, "numpy array")
        self.charge(n, "a numpy array")
        return _numpy_multiarray()._reconstruct(cls, shape, dtype)

    def _scalar(self, dtype: Any, *args: Any) -> Any:
        dtype = _real_dtype(dtype)
        if not isinstance(dtype, np.dtype):
            raise self.error(f"refused: numpy scalar of {type(dtype).__name__}")
        if dtype.hasobject and dtype != np.dtype(object):
            raise self.error(f"refused: numpy scalar of {dtype} (objects inside a structured type)")
        if dtype != np.dtype(object) and not (len(args) == 1 and isinstance(args[0], bytes) and len(args[0]) == dtype.itemsize):
            raise self.error(f"refused: numpy {dtype} scalar whose data is not {dtype.itemsize} bytes")
        self.charge(dtype.itemsize, "a numpy scalar")
        return _numpy_multiarray().scalar(dtype, *args)

    def _dtype(self, spec: Any, align: Any = False, copy: Any = True) -> _DtypeProxy:
        self.charge(64, "a numpy dtype")
        if not isinstance(spec, str) or not all(isinstance(f, bool) for f in (align, copy)):
            raise self.error(f"refused: numpy dtype {spec!r:.40}")
        try:
            dtype = np.dtype(spec)
        except (TypeError, ValueError, SyntaxError) as e:
            raise self.error(f"refused: numpy dtype {spec!r:.40} ({e})") from None
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise self.error(f"refused: numpy dtype {dtype} (only numbers, text and objects)")
        return _DtypeProxy(self, dtype)

    def check_array_state(self, state: Any) -> tuple:
        """An ndarray's pickled state: (version, shape, dtype, fortran, data) with data exactly the shape's;
        returns it with the real dtype."""
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise self.error("refused: a numpy array with a malformed state")
        state = state[:-3] + (_real_dtype(state[-3]),) + state[-2:]
        shape, dtype, data = state[-4], state[-3], state[-1]
        if not isinstance(dtype, np.dtype) or not isinstance(shape, tuple):
            raise self.error("refused: a numpy array with a malformed state")
        n = 1
        for d in shape:
            n *= self._count(d, "numpy array shape")
        if dtype.hasobject:
            if dtype != np.dtype(object):
                raise self.error(f"refused: a numpy array of {dtype} (objects inside a structured type)")
            if not isinstance(data, list) or len(data) != n:
                raise self.error(f"refused: an object array of shape {shape} whose data holds "
                                 f"{len(data) if isinstance(data, list) else type(data).__name__} items")
        elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
            raise self.error(f"refused: a {dtype} array of shape {shape} whose data is not {n * dtype.itemsize} bytes")
        self.charge(n * dtype.itemsize, f"a numpy array of shape {shape}")
        return state

    def _allowed_globals(self) -> dict[tuple[str, str], Any]:
        allowed: dict[tuple[str, str], Any] = {}
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            allowed[(mod, "_reconstruct")] = self._reconstruct
            allowed[(mod, "scalar")] = self._scalar  # a numpy scalar from its dtype and bytes
        allowed[("numpy", "ndarray")] = self._array_cls
        allowed[("numpy", "dtype")] = self._dtype
        # Plain containers (older protocols name them as globals) and the bytes helper of protocol-2 numpy pickles.
        for name, obj in (("list", self._sized(list, 8)), ("tuple", self._sized(tuple, 8)), ("dict", self._sized(dict, 64)),
                          ("set", self._sized(set, 64)), ("frozenset", self._sized(frozenset, 64)),
                          ("bytearray", self._bytearray), ("complex", complex)):
            allowed[("builtins", name)] = obj
            allowed[("__builtin__", name)] = obj
        allowed[("_codecs", "encode")] = self._encode
        return allowed

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise MmsaPickleError(
                f"{self.source}: refused to load global {module}.{name} (only numpy arrays and plain containers are "
                "allowed; a pickle naming other globals can run code)", "read", source_path=self.source)
        return obj


_DTYPE_KINDS = "biufcUSO"  # bool, integers, floats, complex, text, bytes, objects: all MMSA and our exports use


class _DtypeProxy:
    """What `numpy.dtype(...)` gives while unpickling: numpy 2.4 crashes on a dtype `__setstate__` whose flags do
    not fit the type (e.g. object flags on datetime64), so the state must equal the dtype's own, byte order aside."""

    def __init__(self, unpickler: RestrictedUnpickler, dtype: np.dtype) -> None:
        self.unpickler, self.dtype = unpickler, dtype

    def __setstate__(self, state: Any) -> None:
        own = self.dtype.__reduce__()[2]
        if not (isinstance(state, tuple) and len(state) == len(own) and state[0] == own[0] and state[2:] == own[2:]
                and state[1] in ("<", ">", "|", "=")):
            raise self.unpickler.error(f"refused: numpy dtype {self.dtype} with a state that does not fit it")
        if state[1] != own[1] and own[1] != "|":
            self.dtype = self.dtype.newbyteorder(state[1])


def _real_dtype(x: Any) -> Any:
    return x.dtype if isinstance(x, _DtypeProxy) else x


class _SizedReader:
    """The file as the unpickler reads it: a read of more bytes than remain (a length field claiming gigabytes in
    a small file) is refused before anything is allocated for it."""

    def __init__(self, f: Any, size: int, source: str) -> None:
        self._f, self.size, self.pos, self.source = f, size, 0, source

    def _check(self, n: int) -> None:
        if n > self.size - self.pos:
            raise MmsaPickleError(f"{self.source}: declares {n} bytes at offset {self.pos} but only {self.size - self.pos} "
                                  "remain (truncated, or crafted)", "read", source_path=self.source)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        self._check(n)
        data = self._f.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buf: Any) -> int:
        with memoryview(buf) as view:
            self._check(view.nbytes)
            k = self._f.readinto(view)
        self.pos += k
        return k

    def readline(self) -> bytes:
        line = self._f.readline()
        self.pos += len(line)
        return line


def _plain(obj: Any, depth: int = 0) -> Any:
    """The loaded structure with the unpickler's checked arrays turned back into plain ndarrays."""
    if depth > 64:
        raise ValueError("nested more than 64 levels deep")
    if isinstance(obj, _DtypeProxy):
        return obj.dtype
    if isinstance(obj, _CheckedArray):
        arr = obj.view(np.ndarray)
        if arr.dtype == object:
            flat = arr.reshape(-1)
            for i, v in enumerate(flat):
                if isinstance(v, (np.ndarray, dict, list, tuple)):
                    flat[i] = _plain(v, depth + 1)
        return arr
    if isinstance(obj, dict):
        return {k: _plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, depth + 1) for v in obj)
    return obj


def load_restricted(path: str | os.PathLike, budget: int | None = None) -> Any:
    """Unpickle a file through `RestrictedUnpickler` with a memory budget of BUDGET_FACTOR x its size (+ 64 MiB)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            limit = budget if budget is not None else BUDGET_FACTOR * size + BUDGET_EXTRA
            return _plain(RestrictedUnpickler(_SizedReader(f, size, str(p)), str(p), limit).load())
    except MmsaPickleError:
        raise
    except FileNotFoundError:
        raise MmsaPickleError(f"{p}: no such file", "read", source_path=str(p)) from None
    except IsADirectoryError:
        raise MmsaPickleError(f"{p}: is a folder, not a pickle file", "read", source_path=str(p)) from None
    except MemoryError:
        raise MmsaPickleError(f"{p}: refused: declares an item larger than memory allows (truncated, or crafted)", "read",
                              source_path=str(p)) from None
    except RecursionError:
        raise MmsaPickleError(f"{p}: refused: nested too deeply", "read", source_path=str(p)) from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged pickle raises, it is not a readable pickle
        raise MmsaPickleError(f"{p}: not a readable pickle ({type(e).__name__}: {e})", "read", source_path=str(p)) from None


def read_mmsa(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Load an MMSA pickle safely and check its layout; returns `{split: {key: array or list}}`."""
    p = Path(path)
    data = load_restricted(p)
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise MmsaPickleError(f"{p}: not MMSA's layout (expected a dict with train/valid/test)", "read", source_path=str(p))
    for split, d in data.items():
        if split not in SPLITS:
            continue
        if not isinstance(d, dict) or "id" not in d or "regression_labels" not in d:
            raise MmsaPickleError(f"{p}: split {split!r} lacks 'id' or 'regression_labels'", "read", source_path=str(p))
        try:
            n = len(d["id"])
            for key in ("text", "audio", "vision", "regression_labels", "raw_text"):
                if key in d and len(d[key]) != n:
                    raise MmsaPickleError(f"{p}: split {split!r}: {key} has {len(d[key])} rows for {n} ids", "read",
                                          source_path=str(p))
        except TypeError as e:
            raise MmsaPickleError(f"{p}: split {split!r}: not MMSA's layout ({e})", "read", source_path=str(p)) from None
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
            "sentiment_class": np.array(seg.loc[ids, "sentiment_class"].tolist(), dtype=object),
            "emotion_class": np.array(seg.loc[ids, "emotion_class"].tolist(), dtype=object),
            "labels": dict(st.manifest.labels),
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


def _text_label(d: Mapping[str, Any], key: str, i: int) -> str | None:
    if key not in d:
        return None
    v = d[key][i]
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) or not str(v).strip() else str(v)


def _row_labels(d: Mapping[str, Any], i: int, classes: ClassSet, source: str) -> dict[str, Any]:
    """Emotion presence, sentiment class and emotion class of row i, under the same rule as every route."""
    out: dict[str, Any] = {}
    if "emotion_labels" in d:
        row = np.asarray(d["emotion_labels"][i], np.float64)
        given = bool(np.isfinite(row).any())  # all NaN: the row gives no emotion; else absent ones are 0
        for e, v in zip(EMOTIONS, row, strict=True):
            out[e] = (float(v) if np.isfinite(v) else 0.0) if given else None
    word = _text_label(d, "sentiment_class", i) or _text_label(d, "annotations", i)
    if word is not None and word.strip().lower() in SENTIMENT_CLASSES:
        out["sentiment_class"] = word.strip().lower()
    value = _text_label(d, "emotion_class", i)
    if value is not None:
        try:
            name = classes.canonical(class_name(value))
        except ValueError as e:
            name, why = None, str(e)
        else:
            why = f"is not one of the store's emotion classes ({', '.join(classes.classes) or 'none'})"
        if name is None:
            raise PipelineError(f"{source}: segment {d['id'][i]!s}: emotion {value!r} {why}", "read", str(d["id"][i]), source)
        out["emotion_class"] = name
    return out


def mmsa_emotion_classes(data: Mapping[str, Any]) -> ClassSet:
    """The pickle's emotion class set: the one our export recorded, else found from its emotion_class values."""
    first = next(data[s] for s in SPLITS if s in data)
    rec = first.get("labels")
    if isinstance(rec, dict) and rec.get("emotion_classes"):
        name = rec.get("emotion_class_set")
        known = EMOTION_CLASS_SETS.get(name) if isinstance(name, str) else None
        return known or ClassSet(None, tuple(str(c) for c in rec["emotion_classes"]))
    found = set()
    for split in SPLITS:
        for j in range(len(data[split]["id"])) if split in data and "emotion_class" in data[split] else ():
            value = _text_label(data[split], "emotion_class", j)
            if value is not None:
                try:
                    found.add(class_name(value))
                except ValueError:
                    pass  # refused row by row when its record is made
    return emotion_class_set(found)


def _record(d: Mapping[str, Any], i: int, split: str, sets: Mapping[str, FeatureSet], aligned: bool, source: str,
            classes: ClassSet) -> SegmentRecord:
    sid = _id_text(d["id"][i])
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
        seg["video_id"] = _id_text(d["video_id"][i])
    for col, key in (("start", "segment_start"), ("end", "segment_end")):
        if key in d and np.isfinite(d[key][i]):
            seg[col] = float(d[key][i])
    seg.update(_row_labels(d, i, classes, source))
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
    """Turn one slice of a pickle's split (carried in the payload) into segment records; rows whose id the
    plan rejected become failure rows."""
    p = unit.payload
    sets = {m: FeatureSet.from_dict(fs) for m, fs in p["sets"].items()}
    classes = ClassSet(p["emotion_class_set"], tuple(p["emotion_classes"]),
                       EMOTION_CLASS_SETS[p["emotion_class_set"]].aliases if p["emotion_class_set"] in EMOTION_CLASS_SETS else {})
    rejected: dict[int, list[str]] = p.get("rejected", {})
    recs, failures = [], []
    for i in range(len(p["data"]["id"])):
        if i in rejected:
            item, reason = rejected[i]
            failures.append(Failure(item, "read", reason, p["source"]))
            continue
        try:
            recs.append(_record(p["data"], i, p["split"], sets, p["aligned"], p["source"], classes))
        except PipelineError as e:
            failures.append(Failure(e.item_id or _id_text(p["data"]["id"][i]), e.stage, str(e), e.source_path))
    report = {f"segments_imported.{p['split']}": len(recs)}
    if rejected:
        report[f"ids_rejected.{p['split']}"] = len(rejected)
    return UnitResult(records=recs, failures=failures, report=report)


def _id_problems(data: Mapping[str, Any], source: str) -> dict[str, dict[int, list[str]]]:
    """Per split, row -> (item id, reason) for ids the manifest's rules reject (`check_id`: no path separators,
    `..`, control characters, surrounding space) and for ids that appear more than once in the file."""
    from .inputs import RowError, check_id

    where: dict[str, list[tuple[str, int]]] = {}
    out: dict[str, dict[int, list[str]]] = {}
    for split in SPLITS:
        if split not in data:
            continue
        d = data[split]
        bad = out.setdefault(split, {})
        for i, raw in enumerate(d["id"]):
            try:
                sid = check_id(_id_text(raw))
                if "video_id" in d:
                    check_id(_id_text(d["video_id"][i]), "video_id")
                else:
                    check_id(sid.split("$_$", 1)[0], "video id (before '$_$')")
            except RowError as e:
                bad[i] = [f"{split}[{i}]", f"{source}: {split} row {i}: {e}"]
                continue
            where.setdefault(sid, []).append((split, i))
    for sid, rows in where.items():
        if len(rows) > 1:
            for split, i in rows:
                out[split][i] = [f"{split}[{i}]", f"{source}: {split} row {i}: segment id {sid!r} appears {len(rows)} times"]
    return out


def _id_text(value: Any) -> str:
    """An id as text: str, bytes (decoded) or an integer; anything else (a float, an array) is refused."""
    from .inputs import RowError

    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if not isinstance(value, str):
        raise RowError(f"id {value!r} is a {type(value).__name__}, not text")
    return value


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
    problems = _id_problems(data, str(p))
    st = p.stat()
    base = f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{sorted((m, fs.name) for m, fs in sets.items())}\0{aligned}"
    classes = mmsa_emotion_classes(data)
    keys = ["id", "raw_text", "regression_labels", "emotion_labels", "sentiment_class", "annotations", "emotion_class",
            "words", "word_start", "word_end", "video_id",
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
            rejected = {i - lo: v for i, v in problems.get(split, {}).items() if lo <= i < hi}
            units.append(WorkUnit(f"{split}-{lo:07d}", key, {
                "data": part, "split": split, "aligned": aligned, "source": str(p),
                "sets": {m: fs.to_dict() for m, fs in sets.items()}, "rejected": rejected,
                "emotion_classes": list(classes.classes), "emotion_class_set": classes.name,
            }))
    report = {"mmsa_file": p.name, "aligned": aligned, "segments": {s: len(data[s]["id"]) for s in SPLITS if s in data},
              "modalities": {m: fs.name for m, fs in sets.items()}, "labels": labels_record(classes),
              "ids_rejected": {s: len(v) for s, v in problems.items() if v}}
    return units, list(sets.values()), report


def plan_mmsa(
    path: str | os.PathLike,
    config: BuildConfig | None = None,
    names: Mapping[str, str] | None = None,
    aligned: bool | None = None,
    name: str | None = None,
    segments_per_unit: int = 256,
) -> BuildPlan:
    """Everything decided before work runs (the pickle read through the restricted unpickler, ids checked,
    units cut); for `pipelines.build.run_build` or a Prefect flow."""
    units, feature_sets, report = mmsa_units(path, names, aligned, segments_per_unit)
    build_info = {"recipe": RECIPE_VERSION, "file": str(Path(path).resolve()), "aligned": report["aligned"],
                  "segments_per_unit": segments_per_unit, "labels": report.pop("labels")}
    return BuildPlan(name or Path(path).stem, units, process_mmsa_unit, feature_sets, config or BuildConfig(), build_info, report)


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
    plan = plan_mmsa(path, BuildConfig(collapse=CollapseConfig(mode=mode), units_per_shard=MMSA_UNITS_PER_SHARD),
                     names, aligned, name)
    return run_build(plan, store, executor=executor, show_bar=progress)

