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
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import StoreError
from .paths import OutsideStoreError
from .storage import Location, display, filesystem

# client packages whose exceptions mean "object storage said no, or could not be reached"
_CLIENT_MODULES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "azure", "google",
                             "fsspec", "urllib3", "requests"})
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCOUNT_KEY|ACCESS_KEY|CREDENTIAL|SAS", re.IGNORECASE)
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_USERINFO = re.compile(r"[^\s/\"'@:]+:[^\s/\"'@]+@")  # `user:secret@` without a scheme (a bucket name as a client quotes it)


def scrub(text: str) -> str:
    """`text` with any `user:secret@` of a URL removed and the values of secret-looking environment variables
    (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AZURE_STORAGE_ACCOUNT_KEY, ...) masked."""
    text = _USERINFO.sub("", _URL_USERINFO.sub(r"\1", text))
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name) and len(value) >= 6 and value in text:
            text = text.replace(value, "***")
    return text


def _first_line(e: BaseException) -> str:
    """The message's first line (and the next, when the first only announces it, as botocore's validation does)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return scrub(text.split(": Bucket name must match")[0])  # botocore's regexes after it say nothing more


def problem_of(e: BaseException) -> str | None:
    """What went wrong talking to object storage, in words; None when `e` is not an error of storage access."""
    chain = [e, *(c for c in (e.__cause__, e.__context__) if c is not None)]
    names = " ".join(type(x).__name__ for x in chain)
    if isinstance(e, PermissionError) or "AccessDenied" in names or "Forbidden" in str(e):
        return ("permission denied (check the credentials in the environment, e.g. AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the bucket's policy): {_first_line(e)}")
    if "Endpoint" in names or "Connect" in names or isinstance(e, (ConnectionError, TimeoutError)):
        return ("cannot reach the object store (check the endpoint, e.g. AWS_ENDPOINT_URL, and the network): "
                f"{_first_line(e)}")
    if "NoCredentials" in names or "PartialCredentials" in names:
        return ("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the "
                f"environment): {_first_line(e)}")
    if isinstance(e, FileNotFoundError):
        return f"not found ({_first_line(e)})"
    if isinstance(e, OSError) or type(e).__module__.split(".")[0] in _CLIENT_MODULES:
        return f"{type(e).__name__}: {_first_line(e)}"
    return None


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
    """(fsspec filesystem, root path within it) of a URL store; an unknown scheme or a missing filesystem
    package is a StoreError. fsspec keeps one instance per process and options (a forked DataLoader worker
    gets its own), so calling this per read is cheap."""
    if display(location) != os.fspath(location):
        raise StoreError(f"{display(location)}: credentials in a URL are refused (a URL ends up in logs and "
                         "records); give them in the environment instead (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    try:
        fs, root = filesystem(location)
    except ValueError as e:
        raise StoreError(scrub(str(e))) from None
    return fs, root.rstrip("/")


def key_inside(location: Location, root: str, rel: object, what: str = "file") -> str:
    """`root/rel` for a manifest path that stays inside the store: relative, no `..` out of it. Object stores have
    no symlinks, so the check is on the text alone. Raises OutsideStoreError naming the store otherwise."""
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
        raise OutsideStoreError(f"{display(location)}: {what} path {rel!r} is not a relative path inside the store; refused")
    norm = posixpath.normpath(rel)
    if rel.startswith("/") or norm in (".", "..") or norm.startswith("../") or "://" in rel:
        raise OutsideStoreError(f"{display(location)}: {what} path {rel!r} leads outside the store; refused")
    return f"{root}/{norm}"


@dataclass(frozen=True)
class ObjectInfo:
    """What a LIST says of one object: enough to check its size and to know when its content changed."""

    size: int
    version: str | None  # ETag (S3, Azure) or generation/md5 (GCS); None when the filesystem gives neither


def _version(info: dict[str, Any]) -> str | None:
    for k in ("ETag", "etag", "generation", "md5Hash", "LastModified", "last_modified", "mtime"):
        if info.get(k) is not None:
            return f"{k}={info[k]}"
    return None


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
            out[name[len(root) + 1:]] = ObjectInfo(int(info.get("size") or 0), _version(info))
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
