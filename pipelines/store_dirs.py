"""Where a store lives and who may write it: a local folder (the OS directly: atomic renames, fsync, an fcntl lock)
or a URL through fsspec (a temporary key then the object's name, and a lock object with a lease).

The writer (`store_writer.py`) works on a `StoreDir` and never asks which kind it has.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from feature_schemas import (
    BUILD_DIR,
    LAYOUT,
    TEMPORARY_GLOB,
    Manifest,
    StoreError,
    atomic_path,
    atomic_write_text,
    contained,
    file_problem,
    sha256_file,
    table_roots,
)
from feature_schemas.paths import contained_key
from feature_schemas.remote import ObjectInfo, list_objects
from feature_schemas.storage import RemoteFiles, is_url, local_path

if TYPE_CHECKING:
    from .store_writer import BuildConfig

log = logging.getLogger(__name__)

SHARD_RECORDS = f"{BUILD_DIR}/shards"
LOCK_FILE = f"{BUILD_DIR}/lock"


def write_parquet_file(table: pa.Table, path: Path, config: BuildConfig) -> str:
    """Atomic Parquet write; returns the file's sha256. An OSError names the file (pyarrow's do not), so a full
    disk says where it happened."""
    try:
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression=config.compression, row_group_size=config.row_group_rows)
            digest = sha256_file(tmp)
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e
    return digest


def record_rel(shard_id: str) -> str:
    return f"{SHARD_RECORDS}/part-{shard_id}.json"


def _record_shard(name: str) -> str:
    """The shard id in a record's file name (`part-<id>.json`): `record_rel` read backwards."""
    return name[len("part-"):-len(".json")]



# -- where the store lives: a local folder (the OS directly) or a URL (fsspec) ----------------------
class LocalDir:
    """A store in a local folder: today's code path (atomic renames, fsync, fcntl lock), byte for byte."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shown = str(root)

    @property
    def location(self) -> Path:
        return self.root

    def check(self, rel: object, what: str) -> None:
        contained(self.root, rel, what)

    def exists(self) -> bool:
        return self.root.exists()

    def is_folder(self) -> bool:
        return self.root.is_dir()

    def names(self) -> list[str]:
        """The store folder's entries but the build state."""
        return sorted(p.name for p in self.root.iterdir() if p.name != BUILD_DIR)

    def has(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def read_text(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text()
        except OSError:
            return None

    def write_text(self, rel: str, text: str) -> None:
        atomic_write_text(self.root / rel, text)

    def write_parquet(self, table: pa.Table, rel: str, config: BuildConfig) -> tuple[str, int]:
        path = self.root / rel
        return write_parquet_file(table, path, config), path.stat().st_size

    def record_ids(self) -> list[str]:
        """The shard ids of the records of a build in progress."""
        return [_record_shard(path.name) for path in sorted((self.root / SHARD_RECORDS).glob("part-*.json"))]

    def record_texts(self) -> dict[str, str]:
        """Every shard record of a build in progress, by shard id, as text (unreadable ones left out)."""
        out = {}
        for sid in self.record_ids():
            if (text := self.read_text(record_rel(sid))) is not None:
                out[sid] = text
        return out

    def problem(self, rel: str, sha256: str, size: int | None) -> str | None:
        return file_problem(contained(self.root, rel, "shard record"), sha256, size=size)

    def size(self, rel: str) -> int:
        return (self.root / rel).stat().st_size

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def clean_temporaries(self) -> None:
        for tmp in self.root.rglob(TEMPORARY_GLOB):
            tmp.unlink(missing_ok=True)

    def prune_folders(self) -> None:
        """Folders left empty in the table tree, deepest first."""
        for top in table_roots():
            for folder, _, _ in sorted(os.walk(self.root / top), reverse=True):
                with contextlib.suppress(OSError):
                    Path(folder).rmdir()  # only succeeds when empty

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def lock(self) -> StoreLock:
        return StoreLock(self.root).__enter__()

    def load_manifest(self) -> Manifest:
        return Manifest.load(self.root)

    def read_columns(self, rel: str, columns: Sequence[str]) -> pa.Table:
        return pq.read_table(self.root / rel, columns=list(columns))


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

    def write_parquet(self, table: pa.Table, rel: str, config: BuildConfig) -> tuple[str, int]:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=config.compression, row_group_size=config.row_group_rows)
        data = sink.getvalue().to_pybytes()
        folder, _, name = rel.rpartition("/")
        tmp = f"{folder}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
        self.files.put(tmp, data)
        self.files.move(tmp, rel)
        if self._objects is not None:
            self._objects[rel] = ObjectInfo(len(data), None)
        return hashlib.sha256(data).hexdigest(), len(data)

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

    def load_manifest(self) -> Manifest:
        text = self.read_text(LAYOUT["manifest"])
        if text is None:
            raise StoreError(f"{self.shown}: not a feature store (no {LAYOUT['manifest']})")
        return Manifest.from_json(text, source=f"{self.shown}/{LAYOUT['manifest']}")

    def read_columns(self, rel: str, columns: Sequence[str]) -> pa.Table:
        return pq.read_table(self.files.key(rel), columns=list(columns), filesystem=self.files.fs)


StoreDir = LocalDir | RemoteDir


def store_dir(store: str | os.PathLike) -> StoreDir:
    """Where a build writes: a URL goes through fsspec, anything else (a path, `file://`) is a local folder."""
    return RemoteDir(os.fspath(store)) if is_url(store) else LocalDir(local_path(store))


LEASE_ENV = "MMOLRE_LOCK_LEASE_S"  # how long a build's lock on object storage stays valid unless renewed
DEFAULT_LEASE_S = 120.0


def _lease_s() -> float:
    try:
        return max(1.0, float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S)))
    except ValueError:
        return DEFAULT_LEASE_S


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


class ObjectLock:
    """The lock of a build on object storage: `_build/lock`, an object naming its owner (a random id, host, pid)
    and the time its lease ends. Created only if absent (S3's conditional PUT), renewed by a thread every third of
    the lease while the build runs, deleted when it ends. A lock whose lease ran out, or whose owner is a process
    on this host that no longer exists, is stale: taken over with a warning. A live one refuses the build."""

    def __init__(self, files: RemoteFiles, lease_s: float | None = None) -> None:
        self.files = files
        self.lease_s = lease_s or _lease_s()
        self.owner = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost: str | None = None  # why the lock is no longer ours (another build took it over)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def _body(self) -> bytes:
        pid = os.getpid()
        return json.dumps({"owner": self.owner, "host": socket.gethostname(), "pid": pid,
                           "pid_started": _process_started(pid), "lease_s": self.lease_s,
                           "expires": time.time() + self.lease_s}, sort_keys=True).encode()

    def _holder(self, info: dict[str, Any]) -> str:
        until = time.strftime("%H:%M:%S UTC", time.gmtime(float(info.get("expires") or 0)))
        return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, lease until {until}"

    def _stale(self, info: dict[str, Any]) -> str | None:
        """Why the holder is gone, or None when it may still be writing."""
        try:
            expires = float(info["expires"])
        except (KeyError, TypeError, ValueError):
            return "unreadable lock"
        if expires < time.time():
            return f"its lease ended at {time.strftime('%H:%M:%S UTC', time.gmtime(expires))}"
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            started = _process_started(info["pid"])
            if started is None or (info.get("pid_started") is not None and abs(started - float(info["pid_started"])) > 1):
                return f"its process {info['pid']} on this host is gone"
        return None

    def acquire(self) -> ObjectLock:
        conditional = self.files.conditional_writes
        try:
            if self.files.get(LOCK_FILE) is not None:  # also where a server ignores the PUT's condition
                raise FileExistsError(LOCK_FILE)  # judged below, as a refused conditional PUT is
            self.etag = self.files.put(LOCK_FILE, self._body(), exclusive=conditional)
        except FileExistsError:
            self._take_over(conditional)
        if not conditional:  # no conditional PUT: the last writer wins, so let a racing one land first
            time.sleep(0.5)
        got = self.files.get(LOCK_FILE)  # read back who holds it
        if got is None or json.loads(got[0]).get("owner") != self.owner:
            raise StoreError(f"{self.files.shown}: another build is writing this store; wait for it to finish")
        self._thread = threading.Thread(target=self._renew_loop, name="mmolre-lock-lease", daemon=True)
        self._thread.start()
        return self

    def _take_over(self, conditional: bool) -> None:
        """The lock object exists: refuse while its holder may be writing, else replace it (only the version
        read, where the store can make that condition)."""
        got = self.files.get(LOCK_FILE)
        data, etag = got if got is not None else (b"", None)
        try:
            info = json.loads(data)
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        why = self._stale(info) if got is not None else "it was just released"
        if why is None:
            raise StoreError(f"{self.files.shown}: another build is writing this store ({self._holder(info)}); wait for "
                             f"it to finish (a build that died frees {self.files.shown}/{LOCK_FILE} when its lease ends)")
        log.warning("%s: taking over the lock of a build that is gone (%s; %s)", self.files.shown, why, self._holder(info))
        try:
            if not conditional:
                self.etag = self.files.put(LOCK_FILE, self._body())
            elif etag is not None:
                self.etag = self.files.put(LOCK_FILE, self._body(), if_match=etag)
            else:
                self.etag = self.files.put(LOCK_FILE, self._body(), exclusive=True)
        except FileExistsError:
            raise StoreError(f"{self.files.shown}: another build took over this store's lock at the same time; "
                             "wait for it to finish") from None

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            self.renew()

    def renew(self) -> None:
        """Extend the lease; only the version this build wrote may be replaced."""
        with self._guard:
            if self.lost or self._stop.is_set():
                return
            try:
                if self.files.conditional_writes:
                    self.etag = self.files.put(LOCK_FILE, self._body(), if_match=self.etag)
                else:
                    self.files.put(LOCK_FILE, self._body())
            except FileExistsError:
                self.lost = "another build took over this store's lock (this build's lease ran out unrenewed)"
                log.error("%s: %s", self.files.shown, self.lost)
            except StoreError as e:  # a transient outage: try again at the next beat, the lease still runs
                log.warning("%s: could not renew the build lock: %s", self.files.shown, e)

    def check(self) -> None:
        """Raise StoreError when the lock is no longer this build's (before the manifest is written)."""
        if self.lost is None:
            got = self.files.get(LOCK_FILE)
            owner = json.loads(got[0]).get("owner") if got is not None else None
            if owner != self.owner:
                self.lost = "the lock was removed or taken over by another build"
        if self.lost:
            raise StoreError(f"{self.files.shown}: {self.lost}; not writing the manifest: rerun the build")

    def release(self, remove: bool = False) -> None:
        """Stop renewing and delete the lock object if it is still this build's (always: a finished or failed
        build both free the store; `remove` is the local lock's signature)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=5)
        self._thread = None
        with self._guard:
            if self.lost is None:
                with contextlib.suppress(StoreError):
                    self.files.remove(LOCK_FILE)

    def __enter__(self) -> ObjectLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()



class StoreLock:
    """Exclusive lock on a store for the length of a build; a second build refuses at once, naming the holder.
    The kernel drops the lock when the holder dies, even by SIGKILL."""

    def __init__(self, root: Path) -> None:
        self.path = root / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise StoreError(f"{self.path.parent.parent}: another build is writing this store (pid {holder}); wait for it to finish") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self, remove: bool = False) -> None:
        """Unlock; with `remove` (a finished build) also delete the lock file and `_build/` when nothing else is
        left in it, so a finished store carries no build state."""
        if self.fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        if remove:
            for folder in (self.path.parent / "shards", self.path.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()


