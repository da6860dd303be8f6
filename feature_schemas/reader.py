"""Reading a store: whole tables, one split, streamed batches or one segment as numpy.

Only pyarrow is needed; every read goes through the manifest's file list so a split is read alone and
half-written files (hidden temporaries) are never seen. A store at a URL (`s3://bucket/prefix`, `gs://`, ...)
is read through fsspec without a local copy (feature_schemas.remote); local paths keep the operating system.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .arrays import column_lists, column_vectors, utterance_vectors
from .errors import ChecksumError, StoreError
from .feature_set import FeatureSet
from .manifest import FileEntry, Manifest, file_problem, read_manifest, sha256_file
from .paths import contained, same_file_twice
from .remote import ObjectInfo, key_inside, list_objects, object_problem, open_filesystem, reading
from .spec import (
    SPLITS,
    aligned_schema,
    coverage_column,
    failures_schema,
    frames_schema,
    is_optional,
    present_column,
    segments_schema,
    utterance_schema,
)
from .storage import Location, display, is_url, local_path

# Files whose sha256 matched their manifest in this process, by (absolute path, mtime_ns, size): each shard is
# hashed once, and again only when it changes on disk.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def checked_file(root: Path, rel: str, entry: FileEntry) -> Path:
    """The path of a manifest file a reader may use: inside the store, of the recorded size (always) and sha256
    (once per file version). Raises ChecksumError naming the file otherwise."""
    path = contained(root, rel, "manifest")
    try:
        st = path.stat()
    except OSError:
        raise ChecksumError(f"{path}: file listed in the manifest is missing; rerun the build that made the store") from None
    if entry.bytes is not None and st.st_size != entry.bytes:
        raise ChecksumError(f"{path}: size differs from the manifest ({st.st_size} bytes, the manifest says "
                            f"{entry.bytes}): file changed or truncated; rerun the build that made the store to rewrite it")
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    if _VERIFIED.get(key) != entry.sha256:
        if sha256_file(path) != entry.sha256:
            raise ChecksumError(f"{path}: sha256 differs from the manifest (file changed or corrupt); "
                                "rerun the build that made the store to rewrite it")
        _VERIFIED[key] = entry.sha256
    return path


def _remote_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Errors of storage access while a remote store's method reads become a StoreError naming the store."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        if self.fs is None:
            return method(self, *args, **kwargs)
        with reading(self.location):
            return method(self, *args, **kwargs)

    return wrapper


_DRAIN_S = 0.2


@functools.lru_cache(maxsize=1)
def _drain_arrow_threads_at_exit() -> None:
    """Once a process reads Parquet through Python file objects (a URL store), pyarrow's scan threads drop
    their last references to those objects just after a scan returns, and need the GIL to do so. If the
    interpreter is already shutting down then, the thread is ended under a C++ destructor and the process
    aborts ("terminate called without an active exception", apache/arrow#49942; pyarrow 26.0.1 still does it:
    `mmolre inspect s3://...` about one run in seven). At exit, before shutdown, collect garbage and release
    the GIL for a moment so that those threads finish first."""
    import atexit
    import gc
    import time

    def drain() -> None:
        gc.collect()
        time.sleep(_DRAIN_S)

    atexit.register(drain)


def open_parquet(store: Location, path: str | os.PathLike, metadata: pq.FileMetaData | None = None) -> pq.ParquetFile:
    """One of a store's files (a path `Store.files` gave) opened for reading, in any process: for a URL store
    the filesystem is looked up again per process, so a forked or spawned DataLoader worker reads on its own.
    `metadata`: the file's footer read earlier (no footer read then: one ranged GET fewer at a URL)."""
    if not is_url(store):
        return pq.ParquetFile(path, metadata=metadata)
    fs = open_filesystem(store)[0]
    _drain_arrow_threads_at_exit()
    with reading(store, f" ({path})"):
        # no read-ahead cache: each row group's column chunks are fetched by ranged reads (pyarrow pre-buffers and
        # coalesces them); fsspec's default 50 MB read-ahead would fetch the rest of the file for every row group
        return pq.ParquetFile(fs.open(os.fspath(path), "rb", cache_type="none"), metadata=metadata)


class Store:
    """A feature store on disk or at a URL. `Store(path).aligned(split="train", feature_sets=["covarep"])`,
    `Store("s3://bucket/prefix")` (credentials and endpoint from the environment, e.g. AWS_ENDPOINT_URL).

    Every file is checked against the manifest before it is read (see `checked_file`): a local file's size and
    sha256 (hashed once per file version), a remote object's size from one listing (its sha256 with
    `verify=True` or `validate`: hashing means reading every byte)."""

    def __init__(self, path: Location, verify: bool = False) -> None:
        self.fs: Any = None  # the fsspec filesystem of a URL store; None for a local one
        self._objects: dict[str, ObjectInfo] | None = None
        if is_url(path):
            self.url = os.fspath(path)  # as given, to open; shown and recorded only as `location`
            self.fs, self.root = open_filesystem(self.url)
            shown = display(self.url)
            self.path: Path | str = shown.rstrip("/") if not shown.rstrip("/").endswith(":/") else shown
        else:
            self.path = local_path(path)
            self.url, self.root = os.fspath(self.path), os.fspath(self.path)
        data, source = read_manifest(path)
        self.manifest = Manifest.from_bytes(data, source)
        self.manifest_sha256 = hashlib.sha256(data).hexdigest()
        for rel in self.manifest.files:  # refuse a manifest naming files outside the store before anything reads
            self._where(rel)
        if twice := same_file_twice(list(self.manifest.files)):
            raise StoreError(f"{self.path}: the manifest lists the same file under {len(twice[0])} spellings "
                             f"({', '.join(repr(r) for r in twice[0])}): its rows would be read twice; refused "
                             "(rebuild the store)")
        if verify:
            problems = self.verify()
            if problems:
                raise ChecksumError(f"{self.path}: " + "; ".join(problems))

    @property
    def location(self) -> str:
        """Where the store is, as it may be shown or recorded (a URL without credentials)."""
        return str(self.path)

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def _where(self, rel: str) -> Path | str:
        """A manifest path as a path to read: inside the store (or OutsideStoreError)."""
        if self.fs is None:
            return contained(self.path, rel, "manifest")
        return key_inside(self.url, self.root, rel, "manifest")

    def objects(self) -> dict[str, ObjectInfo]:
        """A remote store's objects (store-relative path -> size, ETag), listed once per Store."""
        if self._objects is None:
            self._objects = list_objects(self.fs, self.root, self.url)
        return self._objects

    def _object(self, rel: str) -> tuple[str, ObjectInfo | None]:
        """A manifest path of a URL store: its key, and what the listing says of it (None: no such object)."""
        key = str(self._where(rel))
        return key, self.objects().get(key[len(self.root) + 1:])

    def _checked(self, rel: str, entry: FileEntry) -> Path | str:
        if self.fs is None:
            return checked_file(self.path, rel, entry)
        key, info = self._object(rel)
        problem = object_problem(self.fs, key, info, entry.sha256, self.url, check_sha256=False, size=entry.bytes)
        if problem:
            raise ChecksumError(f"{self.location}/{rel}: {problem}; rerun the build that made the store to rewrite it")
        return key

    def open_parquet(self, path: str | os.PathLike) -> pq.ParquetFile:
        """A file `files()` gave, opened for reading (footer read; row groups on demand)."""
        return open_parquet(self.url, path)

    def _arrow_fs(self) -> Any:
        """The filesystem pyarrow datasets read through: None (local), or the store's fsspec filesystem opening
        objects without read-ahead, so a projection or a filter fetches only the column chunks it needs."""
        if self.fs is None:
            return None
        if not hasattr(self, "_pyfs"):
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            class RangedReads(FSSpecHandler):
                def open_input_file(self, path: str) -> Any:
                    return pa.PythonFile(self.fs.open(path, mode="rb", cache_type="none"), mode="r")

            self._pyfs = PyFileSystem(RangedReads(self.fs))
            _drain_arrow_threads_at_exit()
        return self._pyfs

    # -- what is in it ---------------------------------------------------------------------------
    @property
    def feature_sets(self) -> dict[str, FeatureSet]:
        return self.manifest.feature_sets

    def aligned_sets(self) -> list[str]:
        """Feature sets that have word-aligned columns."""
        return [n for n in self.feature_sets if n in self._aligned_columns()]

    def utterance_sets(self) -> list[str]:
        """Utterance-level feature sets (schema 2): one vector per segment in the utterance table."""
        return [n for n, fs in self.feature_sets.items() if fs.level == "utterance"]

    def frame_sets(self) -> list[str]:
        return sorted({e.table.split("/", 1)[1] for e in self.manifest.files.values() if e.table.startswith("frames/")})

    def splits(self) -> list[str]:
        return self.manifest.splits()

    @_remote_errors
    def files(self, table: str, split: str | None = None) -> list[Path] | list[str]:
        """One table's files (of one split), each checked against the manifest before a reader gets it: paths
        for a local store, keys of its filesystem (`self.fs`) for a URL store."""
        if split is not None and split not in SPLITS:
            raise StoreError(f"unknown split {split!r}; a store has {', '.join(SPLITS)}")
        return [  # type: ignore[return-value]
            self._checked(rel, e)
            for rel, e in sorted(self.manifest.files.items())
            if e.table == table and (split is None or e.split == split) and e.rows > 0
        ]

    def _schema(self, table: str) -> pa.Schema:
        if table == "segments":
            return segments_schema(optional=self._columns("segments"))
        if table == "failures":
            return failures_schema()
        if table == "aligned":
            return aligned_schema({n: fs.dim for n, fs in self.feature_sets.items() if n in self._aligned_columns()},
                                  with_optional="words_written" in self._aligned_columns())
        if table == "utterance":
            return utterance_schema({n: self.feature_sets[n].dim for n in self.utterance_sets()})
        if table.startswith("frames/"):
            return frames_schema(self.feature_sets[table.split("/", 1)[1]].dim)
        raise StoreError(f"unknown table {table!r}")

    def _aligned_columns(self) -> set[str]:
        return self._columns("aligned")

    def _columns(self, table: str) -> set[str]:
        """The columns of the table's first file (a media build's segments carry `language`, schema 2.2)."""
        cache = self.__dict__.setdefault("_table_cols", {})
        if table not in cache:
            # one file's footer names the columns; reading that needs no checksum of every shard
            files = [(e.rows == 0, rel) for rel, e in sorted(self.manifest.files.items()) if e.table == table]
            first = min(files)[1] if files else None  # a file with rows first: an empty one may lack optional columns
            if first is None:
                cache[table] = set()
            else:
                with reading(self.url, f" ({first})") if self.fs is not None else contextlib.nullcontext():
                    cache[table] = set(pq.read_schema(os.fspath(self._where(first)), filesystem=self._arrow_fs()).names)
        return cache[table]

    def dataset(self, table: str, split: str | None = None) -> ds.Dataset:
        """A lazy pyarrow dataset over one table (and split); nothing is read until asked. A URL store's dataset
        reads through its fsspec filesystem (`self.fs`, ranged reads)."""
        return ds.dataset([os.fspath(p) for p in self.files(table, split)], schema=self._schema(table), format="parquet",
                          filesystem=self._arrow_fs())

    # -- whole tables ----------------------------------------------------------------------------
    @_remote_errors
    def segments(self, split: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        return self.dataset("segments", split).to_table(columns=list(columns) if columns else None)

    @_remote_errors
    def aligned(
        self,
        split: str | None = None,
        feature_sets: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        return self.dataset("aligned", split).to_table(columns=self.aligned_columns(feature_sets, columns))

    @_remote_errors
    def utterance(
        self,
        split: str | None = None,
        feature_sets: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """The utterance table (schema 2): `segment_id`, `split` and, per set, its vector and `{set}__present`.
        A store without utterance-level sets gives an empty table with those key columns."""
        cols = self.utterance_columns(feature_sets, columns)
        if not self.files("utterance", split):
            schema = self._schema("utterance")
            return schema.empty_table().select(cols or schema.names)
        return self.dataset("utterance", split).to_table(columns=cols)

    def utterance_columns(self, feature_sets: Sequence[str] | None, columns: Sequence[str] | None = None) -> list[str] | None:
        """The utterance table's columns to read; raises StoreError for a set the store lacks at that level."""
        if feature_sets is None and columns is None:
            return None
        cols = list(columns) if columns else utterance_schema({}).names
        for name in feature_sets or []:
            if name not in self.utterance_sets():
                raise StoreError(f"{self.path}: no utterance-level feature set {name!r} (has: {', '.join(self.utterance_sets()) or 'none'})")
            cols += [name, present_column(name)]
        return cols

    @_remote_errors
    def frames(self, feature_set: str, split: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        if feature_set not in self.frame_sets():
            raise StoreError(f"{self.path}: no frame-level set {feature_set!r} (has: {', '.join(self.frame_sets()) or 'none'})")
        return self.dataset(f"frames/{feature_set}", split).to_table(columns=list(columns) if columns else None)

    @_remote_errors
    def failures(self) -> pa.Table:
        return self.dataset("failures").to_table()

    # -- streaming -------------------------------------------------------------------------------
    def iter_batches(
        self,
        table: str = "aligned",
        split: str | None = None,
        columns: Sequence[str] | None = None,
        feature_sets: Sequence[str] | None = None,
        batch_size: int = 256,
    ) -> Iterator[pa.RecordBatch]:
        """Record batches one after another; memory is bounded by `batch_size`, not by the store."""
        cols = self.aligned_columns(feature_sets, columns) if table == "aligned" else (list(columns) if columns else None)
        for path in self.files(table, split):
            with reading(self.url) if self.fs is not None else contextlib.nullcontext():
                yield from self.open_parquet(path).iter_batches(batch_size=batch_size, columns=cols)

    def aligned_columns(self, feature_sets: Sequence[str] | None, columns: Sequence[str] | None = None) -> list[str] | None:
        """The aligned table's columns to read: `columns` (default: every word column) plus each named feature set
        with its coverage; None (all) when neither is given. Raises StoreError for a set the store lacks."""
        if feature_sets is None and columns is None:
            return None
        # optional columns (a minor version's, e.g. 2.1's words_written) only where the store's files have them
        cols = list(columns) if columns else [f.name for f in aligned_schema({}, with_optional=True)
                                              if not is_optional(f) or f.name in self._aligned_columns()]
        for name in feature_sets or []:
            if name not in self.aligned_sets():
                raise StoreError(f"{self.path}: no word-aligned feature set {name!r} (has: {', '.join(self.aligned_sets()) or 'none'})")
            cols += [name, coverage_column(name)]
        return cols

    # -- one segment -----------------------------------------------------------------------------
    @_remote_errors
    def segment(self, segment_id: str, feature_sets: Sequence[str] | None = None) -> dict[str, Any]:
        """One segment's words, labels and features as numpy arrays (word-level: (W, D); utterance-level: (D,)
        with `{set}__present`)."""
        seg = self.dataset("segments").to_table(filter=ds.field("segment_id") == segment_id)
        if seg.num_rows == 0:
            raise StoreError(f"{self.path}: no segment {segment_id!r}")
        split = seg.column("split")[0].as_py()
        word_sets = [n for n in (feature_sets or self.aligned_sets()) if n not in self.utterance_sets()]
        utt_sets = [n for n in (feature_sets or self.utterance_sets()) if n in self.utterance_sets()]
        out: dict[str, Any] = {k: v[0] for k, v in seg.to_pydict().items()}
        if utt_sets and self.files("utterance", split):
            urow = self.dataset("utterance", split).to_table(
                filter=ds.field("segment_id") == segment_id, columns=self.utterance_columns(utt_sets)
            )
            for name in utt_sets if urow.num_rows else []:
                out[name] = utterance_vectors(urow.column(name))[0]
                out[present_column(name)] = bool(urow.column(present_column(name))[0].as_py())
        if not self.files("aligned", split):
            return out
        row = self.dataset("aligned", split).to_table(
            filter=ds.field("segment_id") == segment_id, columns=self.aligned_columns(word_sets, None)
        )
        if row.num_rows:
            out["words"] = row.column("words")[0].as_py()
            written = row.column("words_written")[0].as_py() if "words_written" in row.column_names else None
            out["words_written"] = written if written is not None and len(written) == len(out["words"]) else out["words"]
            out["word_start"] = column_lists(row.column("word_start"), np.float64)[0]
            out["word_end"] = column_lists(row.column("word_end"), np.float64)[0]
            for name in word_sets:
                out[name] = column_vectors(row.column(name))[0]
                out[coverage_column(name)] = column_lists(row.column(coverage_column(name)))[0]
        return out

    # -- integrity -------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Files missing or whose size or sha256 differs from the manifest (a URL store's objects are streamed
        to hash them)."""
        if self.fs is None:
            found = ((rel, file_problem(contained(self.path, rel, "manifest"), entry.sha256, size=entry.bytes))
                     for rel, entry in sorted(self.manifest.files.items()))
        else:
            found = ((rel, object_problem(self.fs, *self._object(rel), entry.sha256, self.url, size=entry.bytes))
                     for rel, entry in sorted(self.manifest.files.items()))
        return [f"{rel}: {problem}" for rel, problem in found if problem]
