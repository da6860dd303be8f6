"""Checks that a table or a whole store honours the contract, reporting each problem with its table,
column and row id instead of failing at the first."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .arrays import utterance_vectors
from .errors import StoreError
from .feature_set import FeatureSet
from .manifest import FileEntry, Manifest, file_problem
from .paths import (
    BUILD_DIR,
    OutsideStoreError,
    contained,
    normalise,
    same_file_twice,
    store_links,
    stored_files,
    table_roots,
)
from .remote import ObjectInfo, key_inside, list_objects, open_filesystem, reading, scrub
from .spec import (
    EMOTIONS,
    SPLITS,
    aligned_schema,
    coverage_column,
    failures_schema,
    frames_schema,
    is_optional,
    present_column,
    segments_schema,
    utterance_schema,
)
from .storage import is_url, local_path


@dataclass(frozen=True)
class Problem:
    table: str
    column: str | None
    row_id: str | None
    message: str

    def __str__(self) -> str:
        where = self.table + (f".{self.column}" if self.column else "") + (f" [{self.row_id}]" if self.row_id else "")
        return f"{where}: {self.message}"


@dataclass
class ValidationReport:
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    shown = 50  # problems printed; the list holds them all

    def __str__(self) -> str:
        if self.ok:
            return "valid"
        lines = [str(p) for p in self.problems[: self.shown]]
        more = len(self.problems) - self.shown
        return "\n".join(lines + ([f"... and {more} more problems"] if more > 0 else []))


_RANGES = {"sentiment": (-3.0, 3.0), **{e: (0.0, 3.0) for e in EMOTIONS}}


def _ids(table: pa.Table, mask: pa.Array | np.ndarray) -> list[str]:
    key = "segment_id" if "segment_id" in table.column_names else "item_id"
    return [str(x) for x in pc.filter(table.column(key), mask).to_pylist()]


def _check_schema(name: str, table: pa.Table, expected: pa.Schema) -> list[Problem]:
    out = []
    for f in expected:
        if f.name not in table.column_names:
            if not is_optional(f):
                out.append(Problem(name, f.name, None, "missing column"))
            continue
        got = table.schema.field(f.name).type
        if got != f.type:
            if pa.types.is_list(f.type) and pa.types.is_fixed_size_list(f.type.value_type) and pa.types.is_list(got) and pa.types.is_fixed_size_list(got.value_type):
                out.append(Problem(name, f.name, None, f"wrong dimension: {got.value_type.list_size}, expected {f.type.value_type.list_size}"))
            else:
                out.append(Problem(name, f.name, None, f"type {got}, expected {f.type}"))
        elif not f.nullable and table.column(f.name).null_count:
            mask = pc.is_null(table.column(f.name))
            out += [Problem(name, f.name, i, "null where not allowed") for i in _ids(table, mask)]
    return out


def _check_split_and_ids(name: str, table: pa.Table, unique: bool) -> list[Problem]:
    out = []
    if "split" in table.column_names:
        bad = pc.invert(pc.is_in(table.column("split"), value_set=pa.array(SPLITS)))
        for rid, split in zip(_ids(table, bad), pc.filter(table.column("split"), bad).to_pylist(), strict=True):
            out.append(Problem(name, "split", rid, f"unknown split {split!r} (allowed: {', '.join(SPLITS)})"))
    if unique and "segment_id" in table.column_names:
        counts = pc.value_counts(table.column("segment_id"))
        for item in counts.to_pylist():
            if item["counts"] > 1:
                out.append(Problem(name, "segment_id", str(item["values"]), f"duplicate id ({item['counts']} rows)"))
    return out


def _check_classes(table: pa.Table, column: str, allowed: Sequence[str]) -> list[Problem]:
    """Class labels outside the store's recorded set, each named with its row."""
    if column not in table.column_names:
        return []
    v = table.column(column)
    outside = pc.and_(pc.is_valid(v), pc.invert(pc.is_in(v, value_set=pa.array(list(allowed), pa.string()))))
    shown = ", ".join(allowed) or "none recorded"
    return [Problem("segments", column, i, f"{x!r} is not one of the store's classes ({shown})")
            for i, x in zip(_ids(table, outside), pc.filter(v, outside).to_pylist(), strict=True)]


def validate_segments(table: pa.Table, emotion_classes: Sequence[str] | None = None,
                      sentiment_classes: Sequence[str] | None = None) -> list[Problem]:
    """Schema, splits, ids and label ranges; class labels too when the store's class sets are given
    (`validate` passes the manifest's; a shard being written was checked against them when its inputs were read)."""
    out = _check_schema("segments", table, segments_schema(optional=True))
    out += _check_split_and_ids("segments", table, unique=True)
    for col, (lo, hi) in _RANGES.items():
        if col not in table.column_names:
            continue
        v = table.column(col)
        nan = pc.fill_null(pc.is_nan(v), False)
        out += [Problem("segments", col, i, "NaN label (use null for missing)") for i in _ids(table, nan)]
        outside = pc.fill_null(pc.or_(pc.less(v, lo), pc.greater(v, hi)), False)
        vals = pc.filter(v, outside).to_pylist()
        out += [Problem("segments", col, i, f"{x} outside [{lo}, {hi}]") for i, x in zip(_ids(table, outside), vals, strict=True)]
    if emotion_classes is not None:
        out += _check_classes(table, "emotion_class", emotion_classes)
    if sentiment_classes is not None:
        out += _check_classes(table, "sentiment_class", sentiment_classes)
    return out


def validate_aligned(table: pa.Table, feature_sets: dict[str, FeatureSet]) -> list[Problem]:
    present = {n: fs.dim for n, fs in feature_sets.items() if n in table.column_names}
    out = _check_schema("aligned", table, aligned_schema(present, with_optional=True))
    out += _check_split_and_ids("aligned", table, unique=True)
    if out:
        return out
    n_words = pc.list_value_length(table.column("words"))
    for col in ["word_start", "word_end", "word_confidence"] + [c for n in present for c in (n, coverage_column(n))]:
        diff = pc.not_equal(pc.list_value_length(table.column(col)), n_words)
        out += [Problem("aligned", col, i, "length differs from the number of words") for i in _ids(table, diff)]
    if "words_written" in table.column_names:  # schema 2.1, optional; null rows fall back to words
        diff = pc.fill_null(pc.not_equal(pc.list_value_length(table.column("words_written")), n_words), False)
        out += [Problem("aligned", "words_written", i, "length differs from the number of words") for i in _ids(table, diff)]
    for n in present:
        flat = pc.list_flatten(pc.list_flatten(table.column(n)))
        if len(flat) and not np.isfinite(flat.to_numpy(zero_copy_only=False)).all():
            parents = pc.list_parent_indices(table.column(n))
            values = flat.to_numpy(zero_copy_only=False).reshape(-1, present[n])
            bad_rows = np.unique(parents.to_numpy()[~np.isfinite(values).all(axis=1)])
            ids = table.column("segment_id").take(pa.array(bad_rows)).to_pylist()
            out += [Problem("aligned", n, i, "NaN or inf in word vectors (collapse must fill and mask)") for i in ids]
        column = table.column(coverage_column(n))
        cov = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        outside = (cov < 0) | (cov > 1) | ~np.isfinite(cov)
        if outside.any():
            bad_rows = np.unique(pc.list_parent_indices(column).to_numpy()[outside])
            ids = table.column("segment_id").take(pa.array(bad_rows)).to_pylist()
            out += [Problem("aligned", coverage_column(n), i, "coverage outside [0, 1]") for i in ids]
    return out


def validate_utterance(table: pa.Table, feature_sets: dict[str, FeatureSet]) -> list[Problem]:
    """Schema 2's utterance table: every utterance-level set's vector and presence, finite vectors, unique ids."""
    wanted = {n: fs.dim for n, fs in feature_sets.items() if fs.level == "utterance"}
    out = _check_schema("utterance", table, utterance_schema(wanted))
    out += _check_split_and_ids("utterance", table, unique=True)
    if out:
        return out
    for n in wanted:
        values = utterance_vectors(table.column(n))
        bad = ~np.isfinite(values).all(axis=1)
        out += [Problem("utterance", n, i, "NaN or inf in the vector (the writer must zero it and clear presence)")
                for i in _ids(table, bad)]
    known = {"segment_id", "split"} | set(wanted) | {present_column(n) for n in wanted}
    for n in [c for c in table.column_names if c not in known]:
        out.append(Problem("utterance", n, None, "column of a feature set the manifest does not describe as utterance-level"))
    return out


def validate_frames(table: pa.Table, feature_set: FeatureSet) -> list[Problem]:
    name = f"frames/{feature_set.name}"
    out = _check_schema(name, table, frames_schema(feature_set.dim))
    return out + _check_split_and_ids(name, table, unique=True)


def validate_failures(table: pa.Table) -> list[Problem]:
    return _check_schema("failures", table, failures_schema())


def validate(store: str | os.PathLike, check_files: bool = True) -> ValidationReport:
    """Validate a whole store: manifest, paths, checksums, files it does not list, each table, keys across tables.
    A store at a URL (s3://, gs://, ...) is validated in place: each object is read once, hashed and parsed."""
    try:
        manifest = Manifest.load(store)
        files = _RemoteFiles(store) if is_url(store) else _LocalFiles(local_path(store))
        problems = files.layout_problems(manifest)
    except StoreError as e:
        return ValidationReport([Problem("manifest", None, None, str(e))])
    problems += [Problem("manifest", None, None, f"{', '.join(repr(r) for r in twice)}: one file listed under "
                                                 f"{len(twice)} spellings (readers would read its rows twice)")
                 for twice in same_file_twice(list(manifest.files))]
    tables: dict[str, list[pa.Table]] = {}
    for rel, entry in sorted(manifest.files.items()):
        try:
            t, problem = files.read(rel, entry, check_files)
        except OutsideStoreError:
            problems.append(Problem("manifest", None, None, f"{rel!r}: path leads outside the store (refused, not read)"))
            continue
        if t is None:
            problems.append(Problem(entry.table, None, None, f"{rel}: {problem}"))
            continue
        if t.num_rows != entry.rows:
            problems.append(Problem(entry.table, None, None, f"{rel}: {t.num_rows} rows, manifest says {entry.rows}"))
        tables.setdefault(entry.table, []).append(t)

    def whole(name: str) -> pa.Table | None:
        parts = tables.get(name)
        return pa.concat_tables(parts, promote_options="default") if parts else None

    segments = whole("segments")
    if segments is not None:
        problems += validate_segments(segments, manifest.emotion_classes, manifest.sentiment_classes)
    aligned = whole("aligned")
    if aligned is not None:
        problems += validate_aligned(aligned, manifest.feature_sets)
        if segments is not None:
            orphan = pc.invert(pc.is_in(aligned.column("segment_id"), value_set=segments.column("segment_id")))
            problems += [Problem("aligned", "segment_id", i, "no such segment in segments") for i in _ids(aligned, orphan)]
    utterance = whole("utterance")
    if utterance is not None:
        problems += validate_utterance(utterance, manifest.feature_sets)
        if segments is not None:
            orphan = pc.invert(pc.is_in(utterance.column("segment_id"), value_set=segments.column("segment_id")))
            problems += [Problem("utterance", "segment_id", i, "no such segment in segments") for i in _ids(utterance, orphan)]
    elif any(fs.level == "utterance" for fs in manifest.feature_sets.values()) and manifest.rows("segments"):
        problems.append(Problem("utterance", None, None, "the manifest describes utterance-level sets but lists no utterance table"))
    for name in tables:
        if name.startswith("frames/"):
            fs = manifest.feature_sets.get(name.split("/", 1)[1])
            if fs is None:
                problems.append(Problem(name, None, None, "feature set not described in the manifest"))
            else:
                problems += validate_frames(whole(name), fs)
    failures = whole("failures")
    if failures is not None:
        problems += validate_failures(failures)
    return ValidationReport(problems)


class _LocalFiles:
    """A local store's files: read with the operating system, as every earlier release did."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def layout_problems(self, manifest: Manifest) -> list[Problem]:
        return _layout_problems(self.root, manifest)

    def read(self, rel: str, entry: FileEntry, check_files: bool) -> tuple[pa.Table | None, str | None]:
        """(table, None) for a file that is what the manifest says and parses, else (None, what is wrong)."""
        path = contained(self.root, rel, "manifest")
        problem = file_problem(path, entry.sha256, check_sha256=check_files, size=entry.bytes)
        if problem:
            return None, problem
        try:
            return pq.read_table(path), None
        except Exception as e:  # noqa: BLE001 - any reader error means the file is unusable
            return None, f"unreadable Parquet ({e})"


class _RemoteFiles:
    """A URL store's objects: listed once; each listed object downloaded once to hash and parse it."""

    def __init__(self, location: str | os.PathLike) -> None:
        self.location = os.fspath(location)
        self.fs, self.root = open_filesystem(self.location)
        self.objects = list_objects(self.fs, self.root, self.location)

    def layout_problems(self, manifest: Manifest) -> list[Problem]:
        """Objects in the table folders the manifest does not list, and build state left in a finished store."""
        listed = {normalise(rel) for rel in manifest.files}
        tops = tuple(f"{top}/" for top in table_roots())
        out = [Problem("store", None, None, f"{rel!r}: file not in the manifest (globbing readers would read it too); remove it")
               for rel in sorted(self.objects) if rel.startswith(tops) and rel not in listed]
        if any(rel.startswith(f"{BUILD_DIR}/") for rel in self.objects):
            out.append(Problem("store", None, None, f"{BUILD_DIR}/: build state in the store (a build is running, or was "
                                                    "killed: rerun it to finish)"))
        for rel in sorted(r for r in self.objects if r.startswith(f"{BUILD_DIR}/shards/") and r.endswith(".json")):
            try:
                with reading(self.location):
                    files = json.loads(self.fs.cat_file(f"{self.root}/{rel}")).get("files", {})
            except (StoreError, ValueError, AttributeError):
                continue  # an unreadable record is rewritten by the next build
            for name in files if isinstance(files, dict) else ():
                try:
                    key_inside(self.location, self.root, name, "shard record")
                except OutsideStoreError:
                    out.append(Problem("store", None, None, f"{rel}: names {name!r}, outside the store (a rebuild "
                                                            "refuses it; remove the record)"))
        return out

    def read(self, rel: str, entry: FileEntry, check_files: bool) -> tuple[pa.Table | None, str | None]:
        key = key_inside(self.location, self.root, rel, "manifest")
        info: ObjectInfo | None = self.objects.get(key[len(self.root) + 1:])
        if info is None:
            return None, "file listed in the manifest is missing"
        if entry.bytes is not None and info.size != entry.bytes:
            return None, (f"sha256 differs from the manifest (size {info.size} bytes, the manifest says {entry.bytes}: "
                          "file changed or truncated)")
        try:
            with reading(self.location, f" ({rel})"):
                data = self.fs.cat_file(key)
        except StoreError as e:
            return None, str(e)
        if check_files and hashlib.sha256(data).hexdigest() != entry.sha256:
            return None, "sha256 differs from the manifest (file changed or corrupt)"
        try:
            return pq.read_table(pa.BufferReader(data)), None
        except Exception as e:  # noqa: BLE001 - any reader error means the file is unusable
            return None, f"unreadable Parquet ({scrub(str(e))})"


def _layout_problems(root: Path, manifest: Manifest) -> list[Problem]:
    """Files in the table folders that the manifest does not list (a reader that globs a folder, as the card's
    pyarrow/pandas/DuckDB recipes do, would read their rows too), and build state left in a finished store."""
    listed = {normalise(rel) for rel in manifest.files}
    out = [Problem("store", None, None, f"{rel!r}: file not in the manifest (globbing readers would read it too); remove it")
           for rel in stored_files(root) if rel not in listed]
    links = store_links(root)
    out += [Problem("store", None, None, f"{link.relative_to(root).as_posix()!r}: is a symbolic link (to "
                                         f"{os.readlink(link)!r}); a build refuses a store with links; replace it")
            for link in links]
    if (root / BUILD_DIR).exists() or (root / BUILD_DIR).is_symlink():
        out.append(Problem("store", None, None, f"{BUILD_DIR}/: build state in the store (a build is running, or was "
                                                "killed: rerun it to finish)"))
    linked = any(link.relative_to(root).parts[0] == BUILD_DIR for link in links)
    for record in [] if linked else sorted((root / BUILD_DIR / "shards").glob("*.json")):
        try:
            files = json.loads(record.read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable record is rewritten by the next build
        for rel in files if isinstance(files, dict) else ():
            try:
                contained(root, rel, "shard record")
            except OutsideStoreError:
                out.append(Problem("store", None, None, f"{record.relative_to(root).as_posix()}: names {rel!r}, outside "
                                                        "the store (a rebuild refuses it; remove the record)"))
    return out
