"""Writing and deleting inside a local store without ever following a link out of it.

Every path is checked part by part (`feature_schemas.no_links`: no symbolic link below the store's root, the
deepest existing folder inside the root's real path) right before it is used; temporaries are created with
`O_EXCL | O_NOFOLLOW`, so a link planted under a temporary's name is refused, not written through; folders are
made one at a time, and the walks that clean up never descend into a linked folder.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from feature_schemas import TEMPORARY_GLOB, no_links, table_roots
from feature_schemas.paths import link_error

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def make_folders(root: Path, rel_folder: str) -> Path:
    """Create `root/rel_folder` one part at a time; a part that is (or becomes) a link is refused."""
    here = root
    for part in Path(rel_folder).parts:
        here = here / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(here)
        if os.path.islink(here):
            raise link_error(root, here)
    no_links(root, rel_folder)
    return here


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_atomic(root: Path, rel: str, data: bytes) -> None:
    """`data` under `root/rel`: written to a fresh hidden temporary (never an existing file or link), synced and
    renamed onto the name, so readers see the old file or the new one. An OSError names the file."""
    path = no_links(root, rel)
    folder = make_folders(root, Path(rel).parent.as_posix()) if "/" in rel else root
    tmp = folder / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        no_links(root, rel)  # the folder was not swapped for a link meanwhile
        os.replace(tmp, path)  # replaces a link at `path` itself, never what it points at
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e


def remove(root: Path, rel: str) -> None:
    """Delete one file of the store (a link there is refused, not followed; a missing file is fine)."""
    path = no_links(root, rel)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _walk(root: Path, top: str) -> list[tuple[str, list[str], list[str]]]:
    if (root / top).is_symlink():
        raise link_error(root, root / top)
    return list(os.walk(root / top))  # followlinks=False: a linked folder inside is listed, never entered


def clean_temporaries(root: Path, tops: list[str]) -> None:
    """Temporaries a killed writer left in the store's own folders."""
    for top in tops:
        for folder, _, files in _walk(root, top):
            for name in files:
                if Path(name).match(TEMPORARY_GLOB):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))


def prune_folders(root: Path) -> None:
    """Folders left empty in the table tree, deepest first (rmdir removes neither a link nor a full folder)."""
    for top in table_roots():
        for folder, _, _ in sorted(_walk(root, top), reverse=True):
            if not os.path.islink(folder):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
