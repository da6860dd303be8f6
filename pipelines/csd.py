"""CMU-MultimodalSDK computational sequences (.csd): read one video at a time, recognise the standard
sequences of the CMU-MOSEI / CMU-MOSI release (writing one: `pipelines.export.csd`).

A .csd is HDF5: `<root>/data/<video_id>/{features,intervals}` and `<root>/metadata/<key>` (one-element string
datasets). The SDK loads whole files into memory and its users hit KeyErrors, -inf and undocumented
dimensions; here a file stays open and each video is read on demand (`CsdFile.features(vid, lo, hi)` reads a
slice), every structural fault is a `PipelineError` naming the file (and video), and dimension names fall
back to the published ones when the file lacks them.

A .csd may also be an object at a URL (`s3://bucket/CMU_MOSEI/CMU_MOSEI_COVAREP.csd`): h5py then reads it
through an fsspec file object, by byte ranges (`feature_schemas.storage.open_input`), so a worker fetches only
the metadata and the rows of its own videos, never the whole file.
"""

from __future__ import annotations

import ast
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from feature_schemas import EMOTIONS
from feature_schemas.storage import (
    InputObject,
    input_name,
    input_problem,
    is_url,
    list_inputs,
    open_input,
    opened_version,
)

from .errors import FETCH_STAGE, PipelineError

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

LABEL_DIMS_MOSEI: tuple[str, ...] = ("sentiment", *EMOTIONS)  # the release's label columns, in file order


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
_PARSE_LOCK = threading.Lock()


def _literal(text: str) -> Any:
    """`ast.literal_eval` one thread at a time: CPython 3.11's parser can fail with "AST constructor recursion
    depth mismatch" when two threads parse at once (cpython#106905), and a served flow has Prefect's threads."""
    with _PARSE_LOCK:
        return ast.literal_eval(text)


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
        for parse in (json.loads, _literal):
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
# An entry may declare any shape: a dataset never written reads as its fill value, so a few bytes of file can ask
# for terabytes. A read is refused, naming the video, when it would allocate more than this budget: far more than
# the file could hold even compressed (float features compress about 1-3x), like the pickle reader's budget.
BUDGET_FACTOR = 64
BUDGET_EXTRA = 64 * 2**20


class CsdFile:
    """An open computational sequence; `with CsdFile(path) as f: f.features(vid)` reads one video only.
    `path` is a local path or a URL (read by byte ranges); `self.path` is a Path for a local file and the URL,
    as a string, otherwise. `version`: for a URL, the ETag (or other version) the build was planned with; an
    object that changed since is refused (its rows would not match the unit's key)."""

    def __init__(self, path: str | os.PathLike, version: str | None = None) -> None:
        self.path: Path | str = str(path) if is_url(path) else Path(path)
        self._remote: Any = None
        try:
            self._h5 = h5py.File(self._open_remote(version) if is_url(self.path) else self.path, "r")
        except PipelineError:
            raise
        except FileNotFoundError:
            self._close_remote()
            raise PipelineError(f"{self.path}: no such .csd file", "read", source_path=str(self.path)) from None
        except OSError as e:
            self._close_remote()
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
            self.close()
            raise
        except (OSError, KeyError, RuntimeError) as e:
            self.close()
            raise self._error(f"is damaged ({e})") from None

    @property
    def name(self) -> str:
        """The file's name (the last part of its path or URL)."""
        return input_name(self.path)

    def _open_remote(self, version: str | None) -> Any:
        """The fsspec file object h5py reads through; any failure of the object store is one PipelineError."""
        url = str(self.path)
        try:
            self._remote = open_input(url)
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors
            raise PipelineError(input_problem(url, e), FETCH_STAGE, source_path=url) from None
        now = opened_version(self._remote)
        if version is not None and now is not None and now != version:
            self._close_remote()
            raise PipelineError(f"{url}: changed since the build was planned (version {now}, planned {version}); "
                                "rerun the build to plan it again", "read", source_path=url)
        return self._remote

    def _close_remote(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def _file_size(self) -> int:
        try:
            return int(self._remote.size if self._remote is not None else os.path.getsize(self.path))
        except (AttributeError, OSError, TypeError, ValueError):
            return 0

    def _budget(self, video_id: str, ds: h5py.Dataset, rows: int, what: str) -> None:
        """Refuse a read of `rows` rows of `ds` that would allocate far more than the file could hold."""
        width = int(np.prod(ds.shape[1:], dtype=np.int64)) if ds.ndim > 1 else 1
        nbytes = max(rows, 0) * width * max(ds.dtype.itemsize, 1)
        limit = BUDGET_EXTRA + BUDGET_FACTOR * self._file_size()
        if nbytes > limit:
            raise self._error(f"{what} declare shape {tuple(ds.shape)} ({nbytes / 2**20:,.0f} MiB to read), far more "
                              f"than a file of {self._file_size():,} bytes can hold (budget {limit / 2**20:,.0f} MiB); "
                              "refused before reading: a damaged or crafted entry", video_id)

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
        self._close_remote()

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
        """D of the first readable entry (every entry of a sequence has the same D; a damaged one fails its own
        video when it is read, not the whole file); None for an empty sequence."""
        first: PipelineError | None = None
        for vid in self.ids():
            try:
                return self.shape(vid)[1]
            except PipelineError as e:
                first = first or e
        if first is not None:
            raise self._error(f"no readable entry (the first: {first})")
        return None

    def intervals(self, video_id: str) -> np.ndarray:
        _, ivs = self._entry(video_id)
        self._budget(video_id, ivs, int(ivs.shape[0]), "intervals")
        try:
            return np.asarray(ivs[()], dtype=np.float64).reshape(-1, 2)
        except (OSError, ValueError, RuntimeError) as e:
            raise self._error(f"unreadable intervals ({e})", video_id) from None

    def features(self, video_id: str, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Rows lo..hi of one entry's features (a slice read: the rest of the video stays on disk)."""
        feats, _ = self._entry(video_id)
        self._budget(video_id, feats, len(range(*slice(lo, hi).indices(int(feats.shape[0])))), "features")
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
    """A recognised sequence in an input folder (`path`: a Path, or a URL as a string; `source`: the object's
    identity from the listing when it is at a URL)."""

    path: Path | str
    role: str
    root_name: str
    dim: int | None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    source: InputObject | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return input_name(self.path)

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


def inspect_csd(path: str | os.PathLike, source: InputObject | None = None) -> CsdInfo | None:
    """Open a file, recognise its role and check its dimension; None when it is not a standard sequence."""
    with CsdFile(path) as f:
        role = role_of(f.root_name, f.name)
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
        return CsdInfo(f.path, role, f.root_name, dim, dict(f.metadata), source)


def _remote_csd_files(url: str) -> list[InputObject]:
    """The .csd objects directly under a URL, from one listing; a missing bucket or prefix, no permission or an
    unreachable endpoint is one PipelineError naming the URL."""
    try:
        objects = list_inputs(url, ".csd")
    except FileNotFoundError:
        objects = []
    except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors
        raise PipelineError(f"{input_problem(url, e)} (listing the .csd files)", "read", source_path=url) from None
    if not objects:
        raise PipelineError(f"{url}: no .csd files there; give the folder URL of the release's computational "
                            "sequences (e.g. s3://bucket/CMU_MOSEI) and check its bucket and prefix", "read", source_path=url)
    return objects


def discover(csd_dir: str | os.PathLike) -> tuple[dict[str, CsdInfo], list[str]]:
    """The standard sequences in a folder or at a folder URL (any subset) by role, and the names of .csd files
    not recognised."""
    where: Path | str
    if is_url(csd_dir):
        where = str(csd_dir).rstrip("/")
        candidates = [(o.url, o) for o in _remote_csd_files(where)]
    else:
        where = Path(csd_dir).resolve()  # one spelling of the folder: paths feed the unit keys and source_path
        if not where.is_dir():
            raise PipelineError(f"{where}: not a folder of .csd files", "read", source_path=str(where))
        candidates = [(p, None) for p in sorted(where.glob("*.csd"))]
    found: dict[str, CsdInfo] = {}
    ignored: list[str] = []
    for path, source in candidates:
        info = inspect_csd(path, source)
        if info is None:
            ignored.append(input_name(path))
            continue
        if info.role in found:
            raise PipelineError(
                f"{where}: two {info.role} sequences ({found[info.role].name}, {input_name(path)}); keep one",
                "read", source_path=str(path),
            )
        found[info.role] = info
    return found, ignored
