"""The store's manifest: schema version, feature-set provenance, files with row counts and sha256, and the
build report (what was dropped, imputed or cleaned).

It is deterministic JSON (sorted keys, no timestamps) so that two builds of the same inputs are byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SchemaVersionError, StoreError
from .feature_set import FeatureSet
from .labels import recorded_emotion_classes, recorded_sentiment_classes
from .spec import LAYOUT, READABLE_MAJORS, SCHEMA_VERSION


@dataclass(frozen=True)
class FileEntry:
    table: str  # segments, aligned, utterance, frames/<set>, failures
    split: str | None
    shard: str
    rows: int
    sha256: str
    bytes: int | None = None  # file size; checked on every read (manifests written before it: sha256 only)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None or k == "split"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileEntry:
        known = {"table", "split", "shard", "rows", "sha256", "bytes"}
        return cls(**{k: v for k, v in d.items() if k in known})  # keys a later minor version adds are ignored


@dataclass
class Manifest:
    name: str
    schema_version: str = SCHEMA_VERSION
    feature_sets: dict[str, FeatureSet] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)  # recipe, configuration, input key
    report: dict[str, Any] = field(default_factory=dict)  # drops, imputations, non-finite counts
    labels: dict[str, Any] = field(default_factory=dict)  # vocabularies (feature_schemas.labels); {} in older stores
    split_use: dict[str, dict[str, Any]] = field(default_factory=dict)  # split -> {"select": false, "why": ...}

    def fit_for_selection(self, split: str) -> tuple[bool, str]:
        """Whether a split may select a model (best epoch, early stopping), and why not when it may not."""
        use = self.split_use.get(split, {})
        return bool(use.get("select", True)), str(use.get("why", ""))

    @property
    def emotion_classes(self) -> tuple[str, ...]:
        """The single-label emotion classes this store allows (MELD's for stores written before `labels`)."""
        return recorded_emotion_classes(self.labels)

    @property
    def sentiment_classes(self) -> tuple[str, ...]:
        return recorded_sentiment_classes(self.labels)

    def to_json(self) -> str:
        d = {
            "name": self.name,
            "schema_version": self.schema_version,
            "feature_sets": {k: v.to_dict() for k, v in sorted(self.feature_sets.items())},
            "files": {k: v.to_dict() for k, v in sorted(self.files.items())},
            "build": self.build,
            "report": self.report,
        }
        if self.labels:  # optional key (a minor addition): stores without it read as before
            d["labels"] = self.labels
        if self.split_use:  # optional, like labels (schema_v2.json: manifest_split_use)
            d["split_use"] = self.split_use
        return json.dumps(d, indent=2, sort_keys=True, default=_jsonable) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "manifest.json") -> Manifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise StoreError(f"{source}: not valid JSON ({e})") from None
        version = d.get("schema_version")
        if schema_major(version) not in READABLE_MAJORS:
            raise SchemaVersionError(
                f"{source}: schema version {version!r}, this code reads {SCHEMA_VERSION} "
                f"(majors {', '.join(map(str, READABLE_MAJORS))}; rebuild the store, or install the mmolre release that wrote it)"
            )
        try:
            return cls(
                name=d["name"],
                schema_version=version,
                feature_sets={k: FeatureSet.from_dict(v) for k, v in d.get("feature_sets", {}).items()},
                files={k: FileEntry.from_dict(v) for k, v in d.get("files", {}).items()},
                build=d.get("build", {}),
                report=d.get("report", {}),
                labels=_labels(d.get("labels", {})),
                split_use=_split_use(d.get("split_use", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"{source}: malformed manifest ({e})") from None

    @classmethod
    def load(cls, store: str | os.PathLike) -> Manifest:
        """The manifest of a store at a local path or a URL (s3://, gs://, ...)."""
        data, source = read_manifest(store)
        return cls.from_bytes(data, source)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "manifest.json") -> Manifest:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StoreError(f"{source}: not valid JSON (not UTF-8: {e.reason} at byte {e.start})") from None
        return cls.from_json(text, source=source)

    def save(self, store: str | os.PathLike) -> Path | str:
        """Write `manifest.json`: atomically renamed into a local folder, one whole PUT at a URL."""
        from .storage import RemoteFiles, is_url

        if is_url(store):
            RemoteFiles(os.fspath(store)).put(LAYOUT["manifest"], self.to_json().encode())
            return f"{os.fspath(store).rstrip('/')}/{LAYOUT['manifest']}"
        path = Path(store) / LAYOUT["manifest"]
        atomic_write_text(path, self.to_json())
        return path

    def rows(self, table: str, split: str | None = None) -> int:
        return sum(f.rows for f in self.files.values() if f.table == table and (split is None or f.split == split))

    def splits(self) -> list[str]:
        return sorted({f.split for f in self.files.values() if f.table == "segments" and f.split and f.rows})


def _labels(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"labels must be an object, not {type(value).__name__}")
    for key in ("emotion_classes", "sentiment_classes", "emotions"):
        if key in value and not (isinstance(value[key], list) and all(isinstance(c, str) for c in value[key])):
            raise ValueError(f"labels.{key} must be a list of names")
    return value


def _split_use(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError("split_use must map split names to objects such as {\"select\": false, \"why\": \"...\"}")
    for split, use in value.items():
        if not isinstance(use.get("select", True), bool):
            raise ValueError(f"split_use.{split}.select must be true or false")
    return value


def read_manifest(store: str | os.PathLike) -> tuple[bytes, str]:
    """(bytes, where shown) of a store's manifest.json: a local file, or one object read through fsspec with
    errors of storage access (no bucket, no permission, no endpoint) as StoreError naming the URL."""
    from .storage import display, is_url, local_path

    if not is_url(store):
        path = local_path(store) / LAYOUT["manifest"]
        if not path.is_file():
            raise StoreError(f"{store}: not a feature store (no {LAYOUT['manifest']})")
        return path.read_bytes(), str(path)
    from .remote import open_filesystem, store_error

    fs, root = open_filesystem(store)
    source = f"{display(store).rstrip('/')}/{LAYOUT['manifest']}"
    try:
        return fs.cat_file(f"{root}/{LAYOUT['manifest']}"), source
    except FileNotFoundError as e:
        detail = str(e) if "bucket" in str(e).lower() else ""
        raise StoreError(f"{display(store)}: not a feature store (no {LAYOUT['manifest']}"
                         + (f"; {detail}" if detail else "") + ")") from None
    except Exception as e:
        error = store_error(store, e)
        if error is None:
            raise
        raise error from None


def schema_major(version: Any) -> int | None:
    """The MAJOR of a `MAJOR.MINOR` schema version, None when it is not one."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_problem(path: Path, sha256: str, check_sha256: bool = True, size: int | None = None) -> str | None:
    """What is wrong with a file the manifest lists (missing, or not the bytes it recorded), or None."""
    if not path.is_file():
        return "file listed in the manifest is missing"
    if size is not None and (actual := path.stat().st_size) != size:
        return f"size differs from the manifest ({actual} bytes, the manifest says {size}): file changed or truncated"
    if check_sha256 and sha256_file(path) != sha256:
        return "sha256 differs from the manifest (file changed or corrupt)"
    return None


TEMPORARY_GLOB = ".*.tmp-*"  # what atomic_path leaves behind when its process is killed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A hidden temporary beside `path` to write to: when the block succeeds it is fsynced and renamed onto
    `path`, so readers see the old file or the new one, never half; when it fails it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer (pyarrow, h5py, torch) has closed its handle: sync its bytes
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
