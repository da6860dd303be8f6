"""Committing a build: the manifest (and card) from every shard's record, written last, then the files the
previous commit listed that this one does not are deleted, then the build state. A build that fails or is killed
before the manifest is written leaves the last committed store whole and readable."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from feature_schemas import LAYOUT, FeatureSet, FileEntry, Manifest, StoreError

from .card import render_card
from .errors import FETCH_STAGE
from .leakage import COLUMNS as LEAKAGE_COLUMNS
from .leakage import find_leakage, has_leakage, leakage_lines, store_leakage
from .shard_writer import first_notes
from .store_dirs import ObjectLock, StoreDir, StoreLock, record_rel
from .store_plan import PLAN_FILE, BuildConfig, BuildResult, Shard, ShardRecord
from .store_records import drop_obsolete

log = logging.getLogger(__name__)


def _merge_report(recipe_report: dict[str, Any] | None, records: list[ShardRecord]) -> dict[str, Any]:
    counters: dict[str, int] = {}
    for r in records:
        for k, v in r.counters.items():
            counters[k] = counters.get(k, 0) + v
    report: dict[str, Any] = dict(recipe_report or {})
    report["counters"] = dict(sorted(counters.items()))
    report["segments"] = sum(r.n_segments for r in records)
    report["failures"] = sum(r.n_failures for r in records)
    if notes := first_notes(n for r in records for n in r.notes):
        report["notes"] = notes
    return report


def _check_build(d: StoreDir, records: Sequence[ShardRecord], report: dict[str, Any]) -> None:
    """Leakage between splits (read back from the segments files just written) and the warnings a build must
    not keep quiet: shared sentences or videos across splits, mostly guessed word times, nothing written."""
    rels = [rel for r in records for rel, e in r.files.items() if e["table"] == "segments"]
    root = d.shown
    try:
        if d.remote:
            report["leakage"] = find_leakage([row for rel in sorted(rels) for row in d.read_columns(rel, LEAKAGE_COLUMNS).to_pylist()])
        else:
            report["leakage"] = store_leakage(d.location, rels)
    except (OSError, StoreError, pa.ArrowException) as e:
        log.error("%s: could not check the splits for leakage: %s", root, e)
        report["leakage"] = None
    warnings: list[str] = []
    if has_leakage(report["leakage"]):
        lines = leakage_lines(report["leakage"])
        warnings += [line for line in lines if not line.startswith(" ")]  # the counts; examples only in the log
        log.warning("%s: scores on a split that shares sentences or videos with another measure memory, in part:\n%s",
                    root, "\n".join(lines))
    n, counters = report.get("segments", 0), report.get("counters", {})
    uniform = counters.get("segments.uniform", 0)
    if n and uniform * 2 > n:
        why = ", ".join(f"{k.removeprefix('align_fallback.uniform.')} {v}" for k, v in counters.items()
                        if k.startswith("align_fallback.uniform."))
        warnings.append(f"{uniform} of {n} segments have uniformly spaced word times, not aligned ones"
                        + (f" ({why})" if why else "") + "; the build report's notes say why per segment")
    if retry := counters.get("shards_to_retry", 0):
        warnings.append(f"{retry} shard{'s' if retry > 1 else ''} could not fetch some inputs from storage (failure stage "
                        f"`{FETCH_STAGE}`); rerun the same build to try them again")
    if not n:
        warnings.append("no segment was written; see the failures table (`mmolre inspect`)")
    if warnings:
        report["warnings"] = warnings
        for w in warnings:
            if not w.startswith("leakage"):
                log.warning("%s: %s", root, w)


@dataclass
class StoreBuild:
    """A build in progress: the lock is held, and `todo` lists the shards to write.

    `pipelines.build.run_build` writes `todo` on an executor (or a caller's own scheduler) and then calls `finish`."""

    root: Path | str  # a local folder, or the store's URL
    name: str
    shards: list[Shard]
    todo: list[Shard]
    done: dict[str, ShardRecord]
    feature_sets: list[FeatureSet]
    config: BuildConfig
    build_info: dict[str, Any]
    lock: StoreLock | ObjectLock
    files: StoreDir  # where the files go: the local folder `root`, or the URL
    finished: bool = False  # the manifest records every shard: release the lock with the rest of _build/

    @property
    def skipped(self) -> int:
        return len(self.shards) - len(self.todo)

    def finish(self, written: Sequence[ShardRecord], report: dict[str, Any] | None = None) -> BuildResult:
        """Write the manifest and card from every shard's record (the commit), delete the files the previous
        commit listed and this one does not, then release the lock."""
        try:
            done = dict(self.done) | {r.shard_id: r for r in written}
            missing = [s.shard_id for s in self.shards if s.shard_id not in done]
            records = [done[s.shard_id] for s in self.shards if s.shard_id in done]
            if missing:  # a worker died past its retries: keep what was written, say what to rerun
                report = {**(report or {}), "incomplete_shards": missing}
                log.error("%s: %d shards were not written (%s); rerun the same build to complete them",
                          self.files.shown, len(missing), ", ".join(missing[:5]))
            manifest = self._manifest(records, report)
            _check_build(self.files, records, manifest.report)
            if isinstance(self.lock, ObjectLock):
                self.lock.check()  # the manifest is the commit point: only while this build holds the store
            self.files.write_text(LAYOUT["card"], render_card(manifest))
            self.files.write_text(LAYOUT["manifest"], manifest.to_json())  # the commit
            gone = drop_obsolete(self.files, manifest.files)
            if gone:
                log.info("%s: removed %d files the previous manifest listed and this one does not",
                         self.files.shown, len(gone))
            self.files.prune_folders()
            self._drop_build_state()
        finally:
            self.close()
        n_written = len({r.shard_id for r in written} - set(self.done))  # what this run wrote, not what it planned
        return BuildResult(self.files.shown if self.files.remote else self.root, manifest, n_written, self.skipped,
                           manifest.report["segments"], manifest.report["failures"])

    def _manifest(self, records: list[ShardRecord], report: dict[str, Any] | None) -> Manifest:
        units = {s.shard_id: [u.unit_id for u in s.units] for s in self.shards}
        return Manifest(
            name=self.name,
            feature_sets={fs.name: fs for fs in self.feature_sets},
            files={rel: self._file_entry(rel, e) for r in records for rel, e in r.files.items()},
            build={**{k: v for k, v in self.build_info.items() if k not in ("labels", "split_use")},  # stored once, below
                   "writer": self.config.to_dict(),  # "config" stays the recipe's
                   "shards": {r.shard_id: r.key for r in records},  # what a rerun compares: no _build/ needed
                   "shard_counters": {r.shard_id: r.counters for r in records if r.counters},
                   "shard_notes": {r.shard_id: r.notes for r in records if r.notes},
                   "shard_units": {r.shard_id: units[r.shard_id] for r in records}},  # what a rebuild must keep
            report=_merge_report(report, records),
            labels=dict(self.build_info.get("labels") or {}),  # the recipe's label vocabularies (feature_schemas.labels)
            split_use=dict(self.build_info.get("split_use") or {}),  # what the recipe says each split is fit for
        )

    def _file_entry(self, rel: str, entry: dict[str, Any]) -> FileEntry:
        size = entry.get("bytes")
        return FileEntry.from_dict({**entry, "bytes": size if size is not None else self.files.size(rel)})

    def _drop_build_state(self) -> None:
        """The manifest now records every shard: remove the records, the plan and (on release) the lock."""
        for sid in self.files.record_ids():
            self.files.remove(record_rel(sid))
        self.files.remove(PLAN_FILE)
        if self.files.remote:  # a worker killed mid-upload leaves its temporary key: the next run would, too
            self.files.clean_temporaries()
        self.finished = True

    def close(self) -> None:
        self.lock.release(remove=self.finished)
