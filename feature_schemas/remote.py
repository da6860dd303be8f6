"""Reading a store that lives at a URL (`s3://bucket/prefix`, `gs://`, `abfs://`, ...) through fsspec.

A remote store is read the way a local one is: the manifest first, then only the objects it lists. Objects are
listed once per store (one LIST call gives every size and ETag), so the size check a reader makes before using a
file costs no request per file; the sha256 is computed only when asked (`Store(url, verify=True)`, `validate`),
by streaming the object, and remembered per ETag for the rest of the process.

Every error of the filesystem's client (botocore, aiohttp, gcsfs, adlfs) becomes a `StoreError` naming the
URL in its display form (no credentials) and saying what to check, never a traceback from the client; secret
values from the environment are masked in any text we pass on.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import StoreError
from .paths import contained_key
from .storage import Location, display, object_version, problem_of, scrub, url_filesystem


def store_error(location: Location, e: BaseException, what: str = "") -> StoreError | None:
    """The StoreError to raise instead of `e` (an error of storage access) while reading `location`, else None."""
    if isinstance(e, StoreError):
        return e
    problem = problem_of(e)
    return None if problem is None else StoreError(f"{display(location)}{what}: {problem}")


@contextlib.contextmanager
def reading(location: Location, what: str = "") -> Iterator[None]:
    """Errors of storage access inside the block become one StoreError naming `location` (and `what`)."""
    try:
        yield
    except Exception as e:
        error = store_error(location, e, what)
        if error is None or error is e:
            raise
        raise error from None


def open_filesystem(location: Location) -> tuple[Any, str]:
    """(fsspec filesystem, root path within it) of a URL store (`storage.url_filesystem`); credentials in the URL,
    an unknown scheme or a missing filesystem package are a StoreError."""
    try:
        fs, root = url_filesystem(os.fspath(location))
    except ValueError as e:
        raise StoreError(scrub(str(e))) from None
    return fs, root.rstrip("/")


def key_inside(location: Location, root: str, rel: object, what: str = "file") -> str:
    """`root/rel` for a manifest path that stays inside the store (`paths.contained_key`)."""
    return f"{root}/{contained_key(location, rel, what)}"


@dataclass(frozen=True)
class ObjectInfo:
    """What a LIST says of one object: enough to check its size and to know when its content changed."""

    size: int
    version: str | None  # ETag (S3, Azure) or generation/md5 (GCS); None when the filesystem gives neither


def list_objects(fs: Any, root: str, location: Location) -> dict[str, ObjectInfo]:
    """Every object under the store, by store-relative POSIX path (one paginated LIST, no cache: a store
    rebuilt since the last look is seen as it is now)."""
    with reading(location, " (listing its objects)"):
        fs.invalidate_cache(root)
        found = fs.find(root, detail=True)
    out = {}
    for name, info in found.items():
        name = name.split("://", 1)[-1]
        if info.get("type", "file") == "file" and name.startswith(root + "/"):
            out[name[len(root) + 1:]] = ObjectInfo(int(info.get("size") or 0), object_version(info))
    return out


# sha256 of objects that were hashed in this process, by (protocol, key, version, size)
_HASHED: dict[tuple[str, str, str, int], str] = {}


def sha256_object(fs: Any, key: str, info: ObjectInfo, location: Location, chunk: int = 8 << 20) -> str:
    """The object's sha256, streamed (memory: one chunk); remembered while its ETag and size stay the same."""
    cache = (str(fs.protocol), key, info.version, info.size) if info.version else None
    if cache is not None and cache in _HASHED:
        return _HASHED[cache]
    h = hashlib.sha256()
    with reading(location, f" ({display(key)})"), fs.open(key, "rb", block_size=chunk, cache_type="none") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    if cache is not None:
        _HASHED[cache] = digest
    return digest


def object_problem(fs: Any, key: str, info: ObjectInfo | None, sha256: str, location: Location,
                   check_sha256: bool = True, size: int | None = None) -> str | None:
    """What is wrong with an object the manifest lists (missing, or not the bytes it recorded), or None: the
    remote twin of `manifest.file_problem`, with the same words."""
    if info is None:
        return "file listed in the manifest is missing"
    if size is not None and info.size != size:
        return f"sha256 differs from the manifest (size {info.size} bytes, the manifest says {size}: file changed or truncated)"
    if check_sha256 and sha256_object(fs, key, info, location) != sha256:
        return "sha256 differs from the manifest (file changed or corrupt)"
    return None
