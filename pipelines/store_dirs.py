"""Where a store lives and who may write it: a local folder (the OS directly: atomic renames, fsync, an fcntl lock)
or a URL through fsspec (a temporary key then the object's name, and a lock object with a lease).

The writer (`store_writer.py`) works on a `StoreDir` and never asks which kind it has.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from feature_schemas import (
    BUILD_DIR,
    TEMPORARY_GLOB,
    contained,
    file_problem,
    no_links,
    store_links,
    table_roots,
)
from feature_schemas.paths import contained_key, link_error
from feature_schemas.remote import ObjectInfo, list_objects
from feature_schemas.storage import RemoteFiles, is_url, local_path

from . import local_files
from .store_locks import LOCK_FILE, ObjectLock, StoreLock

log = logging.getLogger(__name__)

SHARD_RECORDS = f"{BUILD_DIR}/shards"
__all__ = ["LOCK_FILE", "SHARD_RECORDS", "LocalDir", "ObjectLock", "RemoteDir", "StoreDir", "StoreLock", "store_dir"]


def record_rel(shard_id: str) -> str:
    return f"{SHARD_RECORDS}/part-{shard_id}.json"


def _record_shard(name: str) -> str:
    """The shard id in a record's file name (`part-<id>.json`): `record_rel` read backwards."""
    return name[len("part-"):-len(".json")]



# -- where the store lives: a local folder (the OS directly) or a URL (fsspec) ----------------------
class LocalDir:
    """A store in a local folder: atomic renames, fsync, an fcntl lock, and never a step through a symbolic link
    (every path is checked part by part before it is written or deleted: `local_files`)."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shown = str(root)

    @property
    def location(self) -> Path:
        return self.root

    def check(self, rel: object, what: str) -> None:
        contained(self.root, rel, what)

    def refuse_links(self) -> None:
        """Refuse, naming it, a link among the store's own entries, before anything is read, written or deleted."""
        if links := store_links(self.root):
            raise link_error(self.root, links[0])

    def exists(self) -> bool:
        return self.root.exists()

    def is_folder(self) -> bool:
        return self.root.is_dir()

    def names(self) -> list[str]:
        """The store folder's entries but the build state."""
        return sorted(p.name for p in self.root.iterdir() if p.name != BUILD_DIR)

    def has(self, rel: str) -> bool:
        return no_links(self.root, rel).exists()

    def read_text(self, rel: str) -> str | None:
        try:
            return no_links(self.root, rel).read_text()
        except OSError:
            return None

    def write_text(self, rel: str, text: str) -> None:
        local_files.write_atomic(self.root, rel, text.encode())

    def write_file(self, rel: str, data: bytes) -> None:
        local_files.write_atomic(self.root, rel, data)

    def record_ids(self) -> list[str]:
        """The shard ids of the records of a build in progress."""
        folder = no_links(self.root, SHARD_RECORDS)
        return [_record_shard(path.name) for path in sorted(folder.glob("part-*.json")) if not path.is_symlink()]

    def record_texts(self) -> dict[str, str]:
        """Every shard record of a build in progress, by shard id, as text (unreadable ones left out)."""
        out = {}
        for sid in self.record_ids():
            if (text := self.read_text(record_rel(sid))) is not None:
                out[sid] = text
        return out

    def problem(self, rel: str, sha256: str, size: int | None) -> str | None:
        contained(self.root, rel, "shard record")
        return file_problem(no_links(self.root, rel), sha256, size=size)

    def size(self, rel: str) -> int:
        return no_links(self.root, rel).stat().st_size

    def remove(self, rel: str) -> None:
        local_files.remove(self.root, rel)

    def clean_temporaries(self) -> None:
        local_files.clean_temporaries(self.root, [BUILD_DIR, *table_roots()])
        for name in os.listdir(self.root):  # the manifest's and card's
            if fnmatch.fnmatch(name, TEMPORARY_GLOB):
                local_files.remove(self.root, name)

    def prune_folders(self) -> None:
        local_files.prune_folders(self.root)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self) -> StoreLock:
        return StoreLock(self.root).__enter__()

    def read_columns(self, rel: str, columns: Sequence[str]) -> pa.Table:
        return pq.read_table(no_links(self.root, rel), columns=list(columns))


class RemoteDir:
    """A store at a URL (`s3://bucket/prefix`, ...) through fsspec. Each Parquet file goes to a temporary key and
    is then copied to its name; records, plan, card and manifest are single PUTs (whole or absent on an object
    store), the manifest last. Resume checks each listed object's presence and size (hashing would download the
    whole store). Credentials come only from the filesystem's environment; messages show `display(url)`."""

    remote = True

    def __init__(self, url: str) -> None:
        self.files = RemoteFiles(url)
        self.shown = self.files.shown
        self._objects: dict[str, ObjectInfo] | None = None  # one listing serves every resume check; kept up to date

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_objects": None}

    @property
    def location(self) -> str:
        return self.files.url

    def check(self, rel: object, what: str) -> None:
        contained_key(self.files.url, rel, what)

    def exists(self) -> bool:
        return bool(self.files.listing())

    def is_folder(self) -> bool:
        return self.files.size("") is None  # an object at the prefix itself: not a store

    def names(self) -> list[str]:
        return [n for n in self.files.listing() if n != BUILD_DIR]

    def has(self, rel: str) -> bool:
        return self.files.size(rel) is not None

    def read_text(self, rel: str) -> str | None:
        got = self.files.get(rel)
        return None if got is None else got[0].decode(errors="replace")

    def write_text(self, rel: str, text: str) -> None:
        self.files.put(rel, text.encode())

    def refuse_links(self) -> None:
        """Object stores have no links."""

    def write_file(self, rel: str, data: bytes) -> None:
        folder, _, name = rel.rpartition("/")
        tmp = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        self.files.put(tmp, data)
        self.files.move(tmp, rel)
        if self._objects is not None:
            self._objects[rel] = ObjectInfo(len(data), None)

    def record_ids(self) -> list[str]:
        names = [r.rpartition("/")[2] for r in self.files.listing(SHARD_RECORDS)]
        return [_record_shard(n) for n in names if fnmatch.fnmatch(n, "part-*.json")]

    def record_texts(self) -> dict[str, str]:
        found = self.files.get_many([record_rel(sid) for sid in self.record_ids()])
        return {_record_shard(rel.rpartition("/")[2]): data.decode(errors="replace")
                for rel, data in sorted(found.items())}

    def problem(self, rel: str, sha256: str, size: int | None) -> str | None:
        contained_key(self.files.url, rel, "shard record")
        found = (self._objects if self._objects is not None else self._list()).get(rel)
        if found is None:
            return "file listed in the manifest is missing"
        if size is not None and found.size != size:
            return f"size {found.size} bytes, the manifest says {size}: object replaced or truncated"
        return None

    def _list(self) -> dict[str, ObjectInfo]:
        """Every object under the store now (one paginated LIST), kept for the resume checks that follow."""
        self._objects = list_objects(self.files.fs, self.files.key(), self.files.url)
        return self._objects

    def size(self, rel: str) -> int:
        return int(self.files.size(rel) or 0)

    def remove(self, rel: str) -> None:
        self.files.remove(rel)
        if self._objects is not None:
            self._objects.pop(rel, None)

    def clean_temporaries(self) -> None:
        for rel in list(self._list()):  # a fresh listing, which the resume checks then reuse
            if fnmatch.fnmatch(rel.rpartition("/")[2], TEMPORARY_GLOB):
                self.remove(rel)

    def prune_folders(self) -> None:
        """Object stores have no folders to leave behind."""

    def prepare(self) -> None:
        """Nothing to create: a key's prefix exists as soon as an object is under it."""

    def lock(self) -> ObjectLock:
        return ObjectLock(self.files).acquire()

    def read_columns(self, rel: str, columns: Sequence[str]) -> pa.Table:
        return pq.read_table(self.files.key(rel), columns=list(columns), filesystem=self.files.fs)


StoreDir = LocalDir | RemoteDir


def store_dir(store: str | os.PathLike) -> StoreDir:
    """Where a build writes: a URL goes through fsspec, anything else (a path, `file://`) is a local folder."""
    return RemoteDir(os.fspath(store)) if is_url(store) else LocalDir(local_path(store))


