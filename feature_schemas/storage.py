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
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Location = str | os.PathLike

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# `user:secret@` after the scheme; a secret may hold `/`, `+`, `=` (AWS secret keys often do), so a `:` before the
# first `@` marks credentials too, slashes or not (`s3://bucket/dir/a@b` has none and is a plain key)
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@]*@|[^@\s]*:[^@\s]*@)")


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
    """The location as it may be shown or stored: any `user:secret@` in a URL is removed (again while one is
    left: a password may hold `@`)."""
    text, shown = os.fspath(location), None
    while shown != text:
        shown, text = text, _USERINFO.sub(r"\1", text, count=1)
    return text


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
                self._fs, self._base = url_filesystem(self.url)
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
        return StoreError(f"{where}: cannot {doing} ({problem_of(e) or f'{type(e).__name__}: {_first_line(e)}'})")

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
_FILESYSTEMS: dict[tuple[int, str, frozenset[tuple[str, str]]], Any] = {}  # (pid, scheme://bucket, env) -> fs


def refuse_url_credentials(url: str) -> None:
    """Refuse credentials written into a URL: a URL ends up in logs, unit keys, manifests and failure rows."""
    if display(url) != url:
        raise ValueError(f"{display(url)}: credentials in a URL are refused; give them in the environment instead "
                         "(for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")


def url_filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for a URL, readers and writers alike: credentials in the URL refused,
    one instance per process, scheme and credential environment. fsspec's own instance cache ignores the
    environment, so a process whose `AWS_ENDPOINT_URL` changed (a test's new server, another profile) would keep
    talking to the old endpoint; the pid keeps a forked worker (DataLoader, Dask) from sharing its parent's
    client session."""
    import fsspec

    url = os.fspath(url)
    refuse_url_credentials(url)
    scheme, _, rest = url.partition("://")
    where = f"{scheme}://{rest.split('/', 1)[0]}"  # a bucket or an account may carry its own options
    env = frozenset((k, v) for k, v in os.environ.items() if k.startswith(_CREDENTIAL_ENV))
    key = (os.getpid(), where, env)
    cached = _FILESYSTEMS.get(key)
    if cached is None:
        try:
            cached, _ = fsspec.core.url_to_fs(url, skip_instance_cache=True)
        except (ImportError, ValueError) as e:  # an unknown scheme, or its package (s3fs, gcsfs, adlfs) missing
            raise ValueError(f"{display(url)}: cannot open this location ({e})") from None
        _FILESYSTEMS[key] = cached
    return cached, cached._strip_protocol(url)


def object_version(info: dict[str, Any]) -> str | None:
    """What changes when an object's content changes, from a listing or HEAD: the ETag (S3, Azure), generation
    (GCS) or modification time; None when the filesystem gives none."""
    for k in ("ETag", "etag", "generation", "md5Hash", "LastModified", "last_modified", "mtime"):
        if info.get(k) is not None:
            value = info[k]
            return value.strip('"') if isinstance(value, str) else str(value)
    return None


# client packages whose exceptions mean "object storage said no, or could not be reached"
_CLIENT_MODULES = frozenset({"botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "azure", "google",
                             "fsspec", "urllib3", "requests"})
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|ACCOUNT_KEY|ACCESS_KEY|CREDENTIAL|SAS", re.IGNORECASE)
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@\s]*@|[^@\s\"']*:[^@\s\"']*@)")
_BARE_USERINFO = re.compile(r"[^\s/\"'@:]+:[^\s\"'@]+@")  # `user:secret@` without a scheme (a bucket name as a client quotes it)


def scrub(text: str) -> str:
    """`text` with any `user:secret@` of a URL removed and the values of secret-looking environment variables
    (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AZURE_STORAGE_ACCOUNT_KEY, ...) masked."""
    shown = None
    while shown != text:
        shown, text = text, _BARE_USERINFO.sub("", _URL_USERINFO.sub(r"\1", text))
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
        return ("cannot reach the object store (endpoint unreachable: check the endpoint, e.g. AWS_ENDPOINT_URL, "
                f"and the network): {_first_line(e)}")
    if "NoCredentials" in names or "PartialCredentials" in names:
        return ("no credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, in the "
                f"environment): {_first_line(e)}")
    if isinstance(e, FileNotFoundError):
        return f"not found ({_first_line(e)})"
    if isinstance(e, OSError) or type(e).__module__.split(".")[0] in _CLIENT_MODULES:
        return f"{type(e).__name__}: {_first_line(e)}"
    return None


# -- reading inputs from a URL (the build side: .csd releases, manifests, media) ---------------------------
# h5py asks for small scattered pieces (object headers, B-tree nodes: a few KiB) and then contiguous slices of
# a video's rows. fsspec's default for s3fs is a 50 MiB read-ahead buffer: one metadata read would pull 50 MiB,
# and every seek back refills it. A cache of fixed 256 KiB blocks (LRU, at most 64 = 16 MiB per open file)
# fetches only what is asked for, rounded up to a block, and keeps the metadata blocks h5py revisits.
INPUT_BLOCK_SIZE = 256 << 10
INPUT_MAX_BLOCKS = 64


@dataclass(frozen=True)
class InputObject:
    """One input object as a listing (or HEAD) describes it: what decides whether a unit must be rebuilt.
    `version` is the ETag (S3, Azure), generation (GCS) or modification time; None when the store gives none."""

    url: str
    size: int
    version: str | None

    @property
    def name(self) -> str:
        return input_name(self.url)

    def key(self) -> list[Any]:
        """A unit's input key for this object: `local_input_key`'s remote twin ([where, size, version])."""
        return [self.url, self.size, self.version]


def local_input_key(path: str | os.PathLike) -> list[Any]:
    """A unit's input key for a local file: [resolved path, size, modification time in ns] (os.stat; raises
    OSError when it cannot be read)."""
    p = Path(path)
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def input_name(location: Location) -> str:
    """The file name at the end of a local path or URL (`s3://b/x/CMU_MOSEI_COVAREP.csd` -> `CMU_MOSEI_COVAREP.csd`)."""
    text = os.fspath(location)
    return text.rstrip("/").rsplit("/", 1)[-1] if is_url(text) else Path(text).name


def input_suffix(location: Location) -> str:
    """The lower-case suffix of a local path's or URL's file name (`.csd`, `.mp4`), '' when none."""
    name = input_name(location)
    return name[name.rfind("."):].lower() if "." in name.strip(".") else ""


def resolve_input(base: Location, ref: str) -> str:
    """A path or URL named inside a file at `base` (a manifest's `video_path`): URLs and absolute paths as
    given; a relative one against `base`'s folder (`s3://b/m/manifest.csv` + `clips/a.mp4` -> `s3://b/m/clips/a.mp4`)."""
    if is_url(ref) or ref.startswith("/"):
        return ref
    base_text = os.fspath(base)
    if not is_url(base_text):
        return str(local_path(base_text).parent / ref)
    folder = base_text.rstrip("/").rsplit("/", 1)[0]
    scheme, _, rest = folder.partition("://")
    bucket, _, prefix = rest.partition("/")
    joined = posixpath.normpath(posixpath.join("/" + prefix, ref)).lstrip("/")
    return f"{scheme}://{bucket}/{joined}" if joined else f"{scheme}://{bucket}"


def _object(url: str, info: dict[str, Any]) -> InputObject:
    return InputObject(url, int(info.get("size") or 0), object_version(info))


def _url_of(url: str, fs: Any, path: str) -> str:
    """`path` (as the filesystem names it) as a URL with `url`'s scheme."""
    scheme = url.split("://", 1)[0]
    return f"{scheme}://{fs._strip_protocol(path)}"


def stat_input(url: str) -> InputObject:
    """One object's identity (a HEAD). FileNotFoundError when it is absent or a folder; other errors as the
    filesystem raises them (see `input_problem`)."""
    fs, path = url_filesystem(url)
    fs.invalidate_cache(path)
    info = fs.info(path)
    if info.get("type") == "directory":
        raise IsADirectoryError(f"{display(url)} is a folder")
    return _object(url, info)


def list_inputs(url: str, suffix: str) -> list[InputObject]:
    """The objects directly under the folder `url` whose names end in `suffix`, sorted by URL, from one listing
    (their sizes and ETags come with it: no request per object). FileNotFoundError when nothing is there."""
    fs, path = url_filesystem(url)
    fs.invalidate_cache(path)
    found = fs.ls(path.rstrip("/"), detail=True)
    out = [_object(_url_of(url, fs, info["name"]), info) for info in found
           if info.get("type", "file") == "file" and info["name"].lower().endswith(suffix)]
    return sorted(out, key=lambda o: o.url)


def open_input(url: str, block_size: int = INPUT_BLOCK_SIZE) -> Any:
    """A seekable binary file object reading `url` by byte ranges (blocks of `block_size`, LRU-cached): for
    h5py, which reads a .csd's metadata and one video's rows, never the whole file."""
    fs, path = url_filesystem(url)
    fs.invalidate_cache(path)  # a listing cached by this process may predate a change: read the object as it is now
    return fs.open(path, "rb", block_size=block_size, cache_type="blockcache",
                   cache_options={"maxblocks": INPUT_MAX_BLOCKS})


def opened_version(f: Any) -> str | None:
    """The version (ETag, generation, mtime) of the object an `open_input` file object reads; its reads stay on
    that version (s3fs sends If-Match), so comparing it with the planned one tells whether the object changed."""
    details = getattr(f, "details", None)
    return _object("", details).version if isinstance(details, dict) else None


def read_input_bytes(url: str) -> bytes:
    """A whole (small) input object: a manifest or label file."""
    fs, path = url_filesystem(url)
    return fs.cat_file(path)


def fetch_input(url: str, dest: Location) -> None:
    """Copy one object to a local file (streamed in 8 MiB requests), e.g. a media file for a decoder that opens
    paths; `dest` is left partial or absent on error, the caller removes it."""
    fs, path = url_filesystem(url)
    with fs.open(path, "rb", block_size=8 << 20, cache_type="none") as src, open(dest, "wb") as out:
        while block := src.read(8 << 20):
            out.write(block)


def input_problem(url: str, e: BaseException) -> str:
    """`<url>: <what went wrong>` for an error reading an input, one line without credentials or traceback
    (not found, no such bucket, permission denied, unreachable endpoint, missing credentials)."""
    if isinstance(e, FileNotFoundError):
        problem = "does not exist (no such object, or no such bucket)"
    elif isinstance(e, IsADirectoryError):
        problem = "is a folder, not a file"
    else:
        problem = problem_of(e) or f"{type(e).__name__}: {_first_line(e)}"
    return f"{display(url)}: {problem}"
