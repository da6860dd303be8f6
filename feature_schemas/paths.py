"""Paths read from a store (its manifest, a build's shard records) are data, not trusted: each is resolved and
must stay inside the store, so a crafted `/etc/passwd` or `../outside` entry is refused instead of read or deleted."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import StoreError
from .spec import LAYOUT

BUILD_DIR = "_build"  # a build's lock, plan and shard records; exists only while a build runs


class OutsideStoreError(StoreError):
    """A path named by a store's manifest or a build record leads outside the store."""


class StoreLinkError(OutsideStoreError):
    """A symbolic link among a store's own files or folders: a build never follows one (it could write, truncate
    or delete outside the store), whatever it points at."""


def link_error(root: str | os.PathLike, link: str | os.PathLike) -> StoreLinkError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    rel = Path(link).relative_to(root).as_posix() if Path(link).is_relative_to(root) else str(link)
    return StoreLinkError(f"{root}: {rel!r} is a symbolic link (to {target!r}); refused: a store is never written "
                          "through a link (it could change files outside the store); replace the link with a real "
                          "folder or file, or choose another --out")


def store_entries(root: str | os.PathLike) -> list[str]:
    """The names a store owns at its top: manifest, card, build state and table folders."""
    return sorted({LAYOUT["manifest"], LAYOUT["card"], BUILD_DIR, *table_roots()})


def store_links(root: str | os.PathLike) -> list[Path]:
    """Every symbolic link among the store's own entries and below its table folders and build state (links are
    listed, never followed), so a build can refuse the store before it touches anything."""
    base = Path(root)
    found = []
    for name in store_entries(base):
        top = base / name
        if top.is_symlink():
            found.append(top)
            continue
        for folder, dirs, files in os.walk(top):  # does not descend into linked folders
            dirs.sort()
            found += [Path(folder) / n for n in sorted(dirs + files) if os.path.islink(os.path.join(folder, n))]
    return found


def no_links(root: str | os.PathLike, rel: str) -> Path:
    """`root / rel` after checking that no existing part of it below `root` is a symbolic link and that its
    deepest existing folder resolves inside `root`'s real path: the check before every local write or delete."""
    if not isinstance(rel, str) or not rel or "\0" in rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise OutsideStoreError(f"{root}: path {rel!r} is not a relative path inside the store; refused")
    here = Path(root)
    existing = here
    for part in Path(rel).parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            break
        if stat.S_ISLNK(st.st_mode):
            raise link_error(root, here)
        existing = here
    real_root, real = os.path.realpath(root), os.path.realpath(existing)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise OutsideStoreError(f"{root}: path {rel!r} leads outside the store ({real}); refused")
    return Path(root) / rel


def contained(root: str | os.PathLike, rel: object, what: str = "file") -> Path:
    """`root / rel` when `rel` is a relative path that, resolved (symlinks included), stays inside `root`.

    Raises OutsideStoreError naming the store and the path otherwise; the returned path is not resolved, so it
    reads the same as the store path the caller gave. Cheap for plain paths (one lstat per component); a path
    with `..` or a symlink in it is resolved in full."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise OutsideStoreError(f"{root}: {what} path {rel!r} is not a relative path inside the store; refused")
    path = Path(root) / rel
    parts = Path(rel).parts
    if os.path.isabs(rel):
        raise OutsideStoreError(f"{root}: {what} path {rel!r} leads outside the store; refused")
    needs_resolve = ".." in parts
    here = Path(root)
    for part in parts if not needs_resolve else ():
        here = here / part
        if here.is_symlink():
            needs_resolve = True
            break
    if needs_resolve or not parts:
        base, target = Path(root).resolve(), path.resolve()
        if target == base or base not in target.parents:
            raise OutsideStoreError(f"{root}: {what} path {rel!r} leads outside the store; refused")
    return path


def table_roots() -> list[str]:
    """Top-level folders that hold table files (segments, aligned, frames, failures)."""
    return sorted({v.split("/", 1)[0] for v in LAYOUT.values() if "/" in v})


def stored_files(root: str | os.PathLike) -> list[str]:
    """Every regular file under the store's table folders, as store-relative POSIX paths (symlinks not followed),
    so `validate` can name the ones its manifest does not list."""
    base = Path(root)
    found = []
    for top in table_roots():
        if (base / top).is_symlink():
            continue  # never walked: `store_links` names it
        for folder, dirs, files in os.walk(base / top):
            dirs.sort()
            for name in sorted(files):
                found.append((Path(folder) / name).relative_to(base).as_posix())
    return found


def normalise(rel: str) -> str:
    """A manifest path in the form `stored_files` gives (no `./`, no doubled slashes)."""
    return Path(os.path.normpath(rel)).as_posix()


def same_file_twice(rels: list[str]) -> list[list[str]]:
    """Manifest paths that name one file under several spellings (`aligned/x.parquet`, `aligned/./x.parquet`):
    a reader would read its rows twice."""
    by_file: dict[str, list[str]] = {}
    for rel in rels:
        if isinstance(rel, str):
            by_file.setdefault(normalise(rel), []).append(rel)
    return [sorted(v) for _, v in sorted(by_file.items()) if len(v) > 1]


def contained_key(root: object, rel: object, what: str = "file") -> str:
    """`rel` as a key inside the store at URL `root`, when it is a relative key that stays inside it: the one
    check for object stores, used by the writer and the readers alike.

    Object stores have no symlinks, so the check is on the text: no absolute path, no `..` or `.` part, no empty
    part, no NUL or backslash. Raises OutsideStoreError naming the store (as `display` shows it) otherwise."""
    from .storage import display

    if not isinstance(rel, str) or not rel or "\0" in rel or rel.startswith("/") or "\\" in rel or "://" in rel:
        raise OutsideStoreError(f"{display(str(root))}: {what} path {rel!r} is not a relative path inside the store; refused")
    parts = rel.split("/")
    if ".." in parts:
        raise OutsideStoreError(f"{display(str(root))}: {what} path {rel!r} is not a relative path inside the store "
                                "(it leads outside the store); refused")
    if any(p in ("", ".") for p in parts):
        raise OutsideStoreError(f"{display(str(root))}: {what} path {rel!r} is not a relative path inside the store; refused")
    return rel
