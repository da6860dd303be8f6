"""Where a store lives: a local path, or a URL that fsspec understands (`s3://bucket/prefix`, `gs://`, `abfs://`,
`file://`).

Local paths keep using the operating system directly (fast, byte-identical to every earlier build); URLs go
through fsspec, whose filesystems take credentials and endpoints only from their standard environment and
config files (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `~/.aws/`). Nothing here
accepts or records a credential, and `display` strips any that a user put into a URL before it reaches a log,
a manifest or a Prefect artifact.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

Location = str | os.PathLike

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def is_url(location: Location) -> bool:
    """True for `scheme://...` other than `file://` (which is a local path)."""
    text = os.fspath(location)
    return isinstance(text, str) and bool(_SCHEME.match(text)) and not text.startswith("file://")


def local_path(location: Location) -> Path:
    """A local location as a Path (`file://` stripped); a remote URL is refused."""
    text = os.fspath(location)
    if is_url(text):
        raise ValueError(f"{display(text)} is not a local path")
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def display(location: Location) -> str:
    """The location as it may be shown or stored: any `user:secret@` in a URL is removed."""
    return _USERINFO.sub(r"\1", os.fspath(location))


def filesystem(location: Location) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL; credentials come from the filesystem's own environment."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(os.fspath(location))
    except (ImportError, ValueError) as e:  # an unknown scheme, or its package (s3fs, gcsfs, adlfs) missing
        raise ValueError(f"{display(location)}: cannot open this location ({e})") from None


def join(location: Location, *parts: str) -> str:
    """`location/part/...` for a URL or a local path, as a string."""
    text = os.fspath(location)
    if is_url(text):
        return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(text).joinpath(*parts))


# -- writing to a URL (the build side) --------------------------------------------------------------
class RemoteFiles:
    """A store folder on an fsspec filesystem, addressed by keys relative to the store (`aligned/train/x.parquet`).

    Every failure of the filesystem (no such bucket, no permission, an unreachable endpoint, missing credentials)
    becomes a StoreError naming the display URL and the key, never a botocore traceback. The filesystem is made
    on first use in each process (a Dask worker builds its own from its own environment) and never pickled."""

    def __init__(self, url: str) -> None:
        self.url = os.fspath(url).rstrip("/")
        self.shown = display(self.url)
        self._fs: Any = None
        self._base = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "shown": self.shown, "_fs": None, "_base": ""}

    @property
    def fs(self) -> Any:
        if self._fs is None:
            try:
                self._fs, self._base = _writer_filesystem(self.url)
            except ValueError as e:
                from .errors import StoreError

                raise StoreError(str(e)) from None
            self._base = self._base.rstrip("/")
        return self._fs

    @property
    def conditional_writes(self) -> bool:
        """Whether `put(exclusive=...)`/`put(if_match=...)` are atomic on the server (S3 and S3-compatible)."""
        protocol = self.fs.protocol
        return bool({"s3", "s3a"} & set(protocol if isinstance(protocol, (tuple, list)) else [protocol]))

    def key(self, rel: str = "") -> str:
        fs = self.fs  # noqa: F841 - sets _base
        return f"{self._base}/{rel}" if rel else self._base

    def _error(self, rel: str, e: BaseException, doing: str) -> Exception:
        from .errors import StoreError

        where = f"{self.shown}/{rel}" if rel else self.shown
        reason = re.sub(r"//[^/@\s]*@", "//", _storage_reason(e))  # userinfo in any URL the library echoed
        userinfo = _userinfo(self.url)
        if userinfo:
            reason = reason.replace(userinfo, "")
        return StoreError(f"{where}: cannot {doing} ({reason})")

    def put(self, rel: str, data: bytes, *, exclusive: bool = False, if_match: str | None = None) -> str | None:
        """Write one object whole (an object store's PUT is all or nothing); returns its ETag where the store
        gives one. `exclusive`: fail with FileExistsError when it exists; `if_match`: only replace that version
        (raises FileExistsError when another build changed it). Both need `conditional_writes`."""
        extra: dict[str, Any] = {}
        if exclusive:
            extra["mode"] = "create"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            out = self.fs.pipe_file(self.key(rel), data, **extra)
        except FileExistsError:
            raise
        except OSError as e:
            if if_match is not None and ("precondition" in str(e).lower() or getattr(e, "errno", None) == 22):
                raise FileExistsError(f"{self.shown}/{rel}: changed by another writer") from None
            raise self._error(rel, e, "write") from None
        except Exception as e:  # noqa: BLE001 - botocore/aiohttp errors are not OSErrors
            raise self._error(rel, e, "write") from None
        etag = out.get("ETag") if isinstance(out, dict) else None
        return etag.strip('"') if isinstance(etag, str) else None

    def get(self, rel: str) -> tuple[bytes, str | None] | None:
        """(contents, ETag) of one object, or None when it does not exist."""
        try:
            self.fs.invalidate_cache(self.key(rel))  # a cached listing may predate another process's write
            info = self.fs.info(self.key(rel))
            data = self.fs.cat_file(self.key(rel))
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._error(rel, e, "read") from None
        etag = info.get("ETag") or info.get("etag")
        return data, (etag.strip('"') if isinstance(etag, str) else None)

    def size(self, rel: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        try:
            self.fs.invalidate_cache(self.key(rel))
            info = self.fs.info(self.key(rel))
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise self._error(rel, e, "read") from None
        return None if info.get("type") == "directory" else int(info.get("size") or 0)

    def listing(self, rel: str = "", recursive: bool = False) -> list[str]:
        """Keys under `rel` relative to the store (every object below with `recursive`, else the names of its
        direct children); [] when nothing is there."""
        base = self.key(rel)
        try:
            self.fs.invalidate_cache()  # other processes (workers) write here: never trust a cached listing
            found = self.fs.find(base) if recursive else self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        except Exception as e:  # noqa: BLE001
            raise self._error(rel, e, "list") from None
        root = self.key() + "/"
        return sorted(p[len(root):] for p in found if p.startswith(root))

    def sizes(self) -> dict[str, int]:
        """Every object under the store with its size, from one listing (pages of 1,000 keys on S3)."""
        try:
            self.fs.invalidate_cache()
            found = self.fs.find(self.key(), detail=True)
        except FileNotFoundError:
            return {}
        except Exception as e:  # noqa: BLE001
            raise self._error("", e, "list") from None
        root = self.key() + "/"
        return {p[len(root):]: int(info.get("size") or 0) for p, info in found.items()
                if p.startswith(root) and info.get("type") != "directory"}

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.key(rel))
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001
            raise self._error(rel, e, "remove") from None

    def move(self, src: str, dst: str) -> None:
        """Publish `src` under `dst` (a server-side copy on object stores), then remove `src`."""
        try:
            self.fs.cp_file(self.key(src), self.key(dst))
            self.fs.rm_file(self.key(src))
        except Exception as e:  # noqa: BLE001
            raise self._error(dst, e, "write") from None

    def get_many(self, rels: list[str]) -> dict[str, bytes]:
        """The contents of several objects at once (concurrent requests where the filesystem can); missing ones
        are left out."""
        if not rels:
            return {}
        keys = {self.key(r): r for r in rels}
        try:
            self.fs.invalidate_cache()
            found = self.fs.cat(list(keys), on_error="omit")
        except Exception as e:  # noqa: BLE001
            raise self._error(rels[0], e, "read") from None
        return {keys[k]: v for k, v in found.items() if k in keys and isinstance(v, bytes)}


_CREDENTIAL_ENV = ("AWS_", "GOOGLE_", "GCS", "AZURE_", "FSSPEC_")
_WRITER_FILESYSTEMS: dict[tuple[str, frozenset[tuple[str, str]]], Any] = {}  # (scheme://bucket, env) -> fs


def _writer_filesystem(url: str) -> tuple[Any, str]:
    """`filesystem(url)`, one instance per scheme and credential environment: fsspec's own instance cache ignores
    the environment, so a process whose `AWS_ENDPOINT_URL` changed (a test's new server, another profile) would
    keep talking to the old endpoint."""
    import fsspec

    scheme, _, rest = url.partition("://")
    where = f"{scheme}://{rest.split('/', 1)[0]}"  # a bucket or an account may carry its own options
    env = frozenset((k, v) for k, v in os.environ.items() if k.startswith(_CREDENTIAL_ENV))
    cached = _WRITER_FILESYSTEMS.get((where, env))
    if cached is None:
        try:
            cached, _ = fsspec.core.url_to_fs(url, skip_instance_cache=True)
        except (ImportError, ValueError) as e:
            raise ValueError(f"{display(url)}: cannot open this location ({e})") from None
        _WRITER_FILESYSTEMS[(where, env)] = cached
    return cached, cached._strip_protocol(url)


def _userinfo(url: str) -> str:
    """The `user:secret@` of a URL, '' when none."""
    m = _USERINFO.match(url)
    return m.group(0)[len(m.group(1)):] if m else ""


def _storage_reason(e: BaseException) -> str:
    """A short cause for a storage error, no traceback: what botocore or the filesystem said, by kind."""
    name = type(e).__name__
    text = str(e).strip().splitlines()[0] if str(e).strip() else name
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the filesystem's own config)"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError") or "Could not connect" in text:
        return f"endpoint unreachable: {text}"
    if isinstance(e, PermissionError):
        return f"permission denied: {text}"
    if isinstance(e, FileNotFoundError):
        return f"not found (does the bucket exist?): {text}"
    return f"{name}: {text}"
