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
