"""Who may write a store: one build at a time. A local store holds an fcntl lock on `_build/lock` (the kernel
drops it when the holder dies, even by SIGKILL); a store at a URL holds a lock object with a lease."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

from feature_schemas import BUILD_DIR, StoreError
from feature_schemas.paths import link_error
from feature_schemas.pid_lock import LockBusy, LockRefused, take_pid_lock
from feature_schemas.storage import RemoteFiles

from .local_files import make_folders

log = logging.getLogger(__name__)

LOCK_FILE = f"{BUILD_DIR}/lock"


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
        self.root = root
        self.path = root / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        make_folders(self.root, BUILD_DIR)  # one part at a time, never through a link
        try:
            self.fd = take_pid_lock(self.path)  # never through a link, never a file with another name
        except LockRefused as e:
            if e.link:
                raise link_error(self.root, self.path) from None
            raise StoreError(f"{self.path}: is {e.what}; refused: the build lock is truncated when taken, and that "
                             "would change a file elsewhere; remove it and rerun") from None
        except LockBusy as e:
            raise StoreError(f"{self.root}: another build is writing this store (pid {e.holder}); wait for it to "
                             "finish") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self, remove: bool = False) -> None:
        """Unlock; with `remove` (a finished build) also delete the lock file and `_build/` when nothing else is
        left in it, so a finished store carries no build state."""
        if self.fd is None:
            return
        if remove and not self.path.parent.is_symlink():
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
        if remove and not self.path.parent.is_symlink():
            for folder in (self.path.parent / "shards", self.path.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()
