"""Opening a build on a store: decide, changing nothing, whether it may write there (an empty folder, a store or
unfinished build of the same recipe and configuration, or anything with `--overwrite`), refuse a store with links
or one whose units these inputs would drop, lock it, and work out which shards still need writing."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from feature_schemas import LAYOUT, FeatureSet, Manifest, StoreError

from .records import WorkUnit
from .store_commit import StoreBuild
from .store_dirs import StoreDir, store_dir
from .store_plan import INPUT_KEYS, PLAN_FILE, RESUME_KEYS, BuildConfig, Shard, ShardRecord, plan_shards
from .store_records import build_records, manifest_records, note_obsolete, record_intact

log = logging.getLogger(__name__)
SHOWN_IDS = 5  # ids named in a refusal


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=lambda o: sorted(o) if isinstance(o, (set, frozenset)) else str(o))


def recipe_identity(build: dict[str, Any]) -> dict[str, Any]:
    """What makes two builds "the same store": the recipe and its configuration, not the inputs (new inputs
    extend a store) nor the writer's settings (a new collapse mode rewrites the shards in place)."""
    return {k: v for k, v in build.items() if k not in (*INPUT_KEYS, *RESUME_KEYS, "labels", "split_use")}  # labels come from the rows


def _read_plan(d: StoreDir) -> dict[str, Any] | None:
    try:
        plan = json.loads(d.read_text(PLAN_FILE) or "")
    except ValueError:
        return None
    return plan.get("identity") if isinstance(plan, dict) and isinstance(plan.get("identity"), dict) else None


@dataclass
class _Target:
    """What an existing output folder holds, and what the build replaces there (deleted only after its commit)."""

    manifest: Manifest | None = None  # the old store's manifest, when it resumes or is replaced
    remove_store: bool = False  # an --overwrite: the old manifest's files are not reused, and go after the commit
    records: dict[str, ShardRecord] = field(default_factory=dict)  # the manifest's shards (`manifest_records`)


def _inspect_target(d: StoreDir, identity: dict[str, Any], overwrite: bool) -> _Target:
    """Decide, changing nothing, whether a build may write into the store: an empty folder, a store (or unfinished
    build) of the same recipe and configuration, or anything with `overwrite`. Raises StoreError otherwise, and
    for any path the old manifest or records name outside the store."""
    root = d.shown
    if not d.exists():
        return _Target()
    if not d.is_folder():
        raise StoreError(f"{root}: exists and is not a folder; choose another --out")
    plan = _read_plan(d)
    manifest, unreadable = None, ""
    if d.has(LAYOUT["manifest"]):
        try:
            manifest = d.load_manifest()
        except StoreError as e:
            unreadable = f"; its {LAYOUT['manifest']} is unreadable: {e}"
    contents = d.names()
    build_records(d)  # raises for a record naming a file outside the store (its files go after the commit)
    held = manifest_records(d, manifest)  # and for such a manifest entry
    if not contents and plan is None:  # empty, or a build killed before it planned anything
        return _Target(manifest=None)
    found = plan if plan is not None else (recipe_identity(manifest.build) if manifest is not None else None)
    if found is not None and _canonical(found) == _canonical(identity):
        stale = manifest is not None and _canonical(recipe_identity(manifest.build)) != _canonical(identity)
        return _Target(manifest, stale, held)  # stale: an --overwrite killed before it finished
    if not overwrite:
        hint = "use --overwrite (overwrite=True) to replace it, or choose another --out"
        if found is None:
            shown = ", ".join(repr(n) for n in contents[:5]) + (", ..." if len(contents) > 5 else "")
            raise StoreError(f"{root}: is not empty and not a store (found {shown}){unreadable}; use --overwrite "
                             "(overwrite=True) to write into it anyway (its README.md and manifest.json are replaced), "
                             "or choose another --out")
        what = "a store built" if plan is None else "an unfinished build"
        differs = sorted(k for k in set(found) | set(identity) if _canonical(found.get(k)) != _canonical(identity.get(k)))
        raise StoreError(f"{root}: holds {what} by recipe {found.get('recipe')!r} with another configuration "
                         f"(this build: recipe {identity.get('recipe')!r}; differs in {', '.join(differs)}); {hint}")
    return _Target(manifest, manifest is not None, held)



def _refuse_dropped_units(d: StoreDir, target: _Target, shards: Sequence[Shard]) -> None:
    """A rebuild from inputs that lack units the store holds would delete their shards: refused (the user asks
    for that with --overwrite). Stores written before shards recorded their units compare shard ids instead."""
    if target.manifest is None or target.remove_store:
        return
    held = target.records
    if held and all(r.units for r in held.values()):
        planned = {u.unit_id for s in shards for u in s.units}
        dropped, what = sorted({u for r in held.values() for u in r.units} - planned), "unit"
    else:
        dropped, what = sorted(set(held) - {s.shard_id for s in shards}), "shard"
    if dropped:
        shown = ", ".join(repr(u) for u in dropped[:SHOWN_IDS]) + (", ..." if len(dropped) > SHOWN_IDS else "")
        raise StoreError(f"{d.shown}: holds {len(dropped)} {what}{'s' if len(dropped) > 1 else ''} these inputs do not "
                         f"have ({shown}); a rebuild never deletes data unasked: give inputs that include them (new "
                         "inputs extend a store), use --overwrite (overwrite=True) to replace the store with these "
                         "inputs only, or choose another --out")


def _sort_shards(d: StoreDir, shards: Sequence[Shard], from_build: dict[str, ShardRecord],
                 from_manifest: dict[str, ShardRecord]) -> tuple[dict[str, ShardRecord], list[Shard]]:
    """Shards already written (a record or the manifest with the plan's key, files intact) and those to write."""
    done: dict[str, ShardRecord] = {}
    todo: list[Shard] = []
    for s in shards:
        keep = next((r for r in (from_build.get(s.shard_id), from_manifest.get(s.shard_id))
                     if r is not None and r.key == s.key and record_intact(d, r)), None)
        if keep is not None:
            done[s.shard_id] = keep
        else:
            todo.append(s)
    return done, todo


def open_build(
    store: str | os.PathLike,
    name: str,
    units: Sequence[WorkUnit],
    feature_sets: Sequence[FeatureSet],
    config: BuildConfig | None = None,
    build_info: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> StoreBuild:
    """Check the output folder or URL (refusing, with nothing changed, a non-empty one that is not a store of this
    recipe and configuration unless `overwrite`, a store with links, and a rebuild that would drop units the store
    holds unless `overwrite`), lock it, and work out which shards still need writing: a shard whose key matches
    its record or the manifest and whose files are intact is kept. Nothing is deleted here: the files the build
    replaces are listed in `_build/obsolete.json` and deleted after the new manifest is committed."""
    config = config or BuildConfig()
    d = store_dir(store)
    build_info = dict(build_info or {})
    shards = plan_shards(units, feature_sets, config, build_info)
    identity = recipe_identity(build_info)
    # the one walk of the store for links, before anything is changed; every later write or delete checks its
    # own path part by part (`no_links`), so a link planted after this walk is refused where it is met
    d.refuse_links()
    target = _inspect_target(d, identity, overwrite)
    if not overwrite:
        _refuse_dropped_units(d, target, shards)
    d.prepare()
    lock = d.lock()
    try:
        from_build = build_records(d)
        note_obsolete(d, [*from_build.values(), *target.records.values()])
        plan = {"name": name, "identity": json.loads(_canonical(identity))}  # read back as _inspect_target compares it
        d.write_text(PLAN_FILE, json.dumps(plan, indent=1, sort_keys=True))
        d.clean_temporaries()
        done, todo = _sort_shards(d, shards, from_build, {} if target.remove_store else target.records)
    except BaseException:
        lock.release()
        raise
    log.info("%s: %d shards to write, %d already written", name, len(todo), len(done))
    return StoreBuild(d.location, name, shards, todo, done, list(feature_sets), config, build_info, lock, d)
