"""What a store already holds, read as shard records: a build in progress's `_build/shards/*.json` and a finished
store's manifest. Every path either names is checked to stay inside the store before anything uses it.

Nothing here deletes a file while the committed manifest may still list it: files a rebuild replaces are written
down in `_build/obsolete.json` when it opens and deleted only once the new manifest is committed (`drop_obsolete`),
the way Delta Lake and SQLite keep the last committed state readable until the next commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from feature_schemas import BUILD_DIR, Manifest, OutsideStoreError, table_roots

from .store_dirs import StoreDir, record_rel
from .store_plan import ShardRecord

OBSOLETE_FILE = f"{BUILD_DIR}/obsolete.json"  # files the committed store lists that the next commit may drop


def parse_record(d: StoreDir, shard_id: str, text: str | None) -> ShardRecord | None:
    """A build-in-progress record; None when unreadable or not a record of that shard (its shard is rewritten).
    Raises OutsideStoreError when it names a file outside the store: a crafted record never gets a file deleted."""
    if text is None:
        return None
    try:
        record = ShardRecord(**json.loads(text))
    except (ValueError, TypeError):
        return None
    if record.shard_id != shard_id or not isinstance(record.key, str) or not isinstance(record.files, dict):
        return None
    for rel, entry in record.files.items():
        try:
            d.check(rel, "shard record")
        except OutsideStoreError as e:
            raise OutsideStoreError(f"{e} (in {d.shown}/{record_rel(shard_id)}; remove that record, or "
                                    f"{d.shown}/{BUILD_DIR}, and rerun)") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            return None
    return record


def build_records(d: StoreDir) -> dict[str, ShardRecord]:
    """Every readable shard record of a build in progress, by shard id."""
    out = {}
    for sid, text in d.record_texts().items():
        if (record := parse_record(d, sid, text)) is not None:
            out[sid] = record
    return out


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def manifest_records(d: StoreDir, manifest: Manifest | None) -> dict[str, ShardRecord]:
    """A finished store's shards as records (files, input key, counters, units), so a rerun resumes from the
    manifest alone. Raises OutsideStoreError when the manifest names a file outside the store."""
    if manifest is None:
        return {}
    keys, counters = _dict(manifest.build.get("shards")), _dict(manifest.build.get("shard_counters"))
    notes, units = _dict(manifest.build.get("shard_notes")), _dict(manifest.build.get("shard_units"))
    files: dict[str, dict[str, dict[str, Any]]] = {}
    for rel, entry in manifest.files.items():
        d.check(rel, "manifest")
        files.setdefault(entry.shard, {})[rel] = entry.to_dict()
    out = {}
    for sid in sorted(set(files) | set(keys)):
        f = files.get(sid, {})
        out[sid] = ShardRecord(
            sid, str(keys.get(sid, "")), f, dict(counters.get(sid) or {}),
            sum(e["rows"] for e in f.values() if e["table"] == "segments"),
            sum(e["rows"] for e in f.values() if e["table"] == "failures"),
            list(notes.get(sid) or []), [str(u) for u in units.get(sid) or []],
        )
    return out


def record_intact(d: StoreDir, record: ShardRecord) -> bool:
    return not any(d.problem(rel, e["sha256"], e.get("bytes")) for rel, e in record.files.items())


def _deletable(d: StoreDir, rel: object) -> bool:
    """Only a Parquet file in the store's own table folders is ever deleted by a rebuild; the path is checked to
    stay inside the store first (raising for one that does not)."""
    d.check(rel, "obsolete file")
    return isinstance(rel, str) and rel.endswith(".parquet") and rel.split("/", 1)[0] in table_roots()


def note_obsolete(d: StoreDir, records: Iterable[ShardRecord]) -> None:
    """Add every file of `records` to the list the next commit checks (kept across killed runs), before a
    record that names them can be replaced."""
    previous = read_obsolete(d)
    found = sorted(previous | {rel for r in records for rel in r.files if _deletable(d, rel)})
    if found != sorted(previous):
        d.write_text(OBSOLETE_FILE, json.dumps(found, indent=0))


def read_obsolete(d: StoreDir) -> set[str]:
    try:
        found = json.loads(d.read_text(OBSOLETE_FILE) or "[]")
    except ValueError:
        return set()
    return {rel for rel in found if _deletable(d, rel)} if isinstance(found, list) else set()


def drop_obsolete(d: StoreDir, listed: Iterable[str]) -> list[str]:
    """After a commit: delete the obsolete files the new manifest does not list; returns them."""
    keep = set(listed)
    gone = sorted(read_obsolete(d) - keep)
    for rel in gone:
        d.remove(rel)
    d.remove(OBSOLETE_FILE)
    return gone
