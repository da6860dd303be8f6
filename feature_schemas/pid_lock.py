"""One writer at a time: a lock file holding its holder's pid, for a store's build (`pipelines.store_locks`) and a
training run's folder (`mmolre.run_dir`). An fcntl lock, which the kernel drops when its holder dies (even by
SIGKILL). The file is truncated when taken, so it is opened without following a link and refused unless it is a
plain file with one name (a second name would truncate a file elsewhere)."""

from __future__ import annotations

import errno
import fcntl
import os
import stat


class LockRefused(Exception):
    """The lock file is not one a lock may truncate; `what` says what it is (`link`: a symbolic link)."""

    def __init__(self, what: str, link: bool = False) -> None:
        super().__init__(what)
        self.what, self.link = what, link


class LockBusy(Exception):
    """Another process holds the lock; `holder` is the pid it wrote there ("unknown" when none)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def take_pid_lock(path: str | os.PathLike) -> int:
    """The descriptor of `path` (created if absent), locked without waiting and holding this process's pid; closing
    it releases the lock. Raises LockRefused or LockBusy, with nothing written."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LockRefused("a symbolic link", link=True) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise LockRefused("not a regular file" if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} hard links")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
