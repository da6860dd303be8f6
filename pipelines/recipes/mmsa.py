"""Recipe: an MMSA pickle (`aligned_50.pkl` / `unaligned_50.pkl`) into a store: what to build.

The pickle is read through the restricted unpickler (`pipelines.unpickle`: numpy arrays and plain containers
only) and its layout checked; ids that the manifest rules reject or that repeat become failure rows; each
split is cut into units of consecutive rows (`stages.mmsa.MmsaRows`) for the MMSA stage. Labels follow
feature_schemas/labels.py: an `emotion_labels` row that gives any emotion has 0 for the ones it leaves NaN (all
NaN: unknown); MMSA's `annotations` (Negative/Neutral/Positive) become sentiment_class; the emotion class set is
the export's recorded one, else found from the values.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import (
    EMOTION_CLASS_SETS,
    SPLITS,
    ClassSet,
    FeatureSet,
    class_name,
    emotion_class_set,
    labels_record,
)

from ..build import run_build
from ..collapse import CollapseConfig
from ..errors import MmsaPickleError
from ..inputs import RowError, check_id
from ..records import WorkUnit
from ..stages.mmsa import (
    MODALITIES,
    STORE_MODALITY,
    MmsaOptions,
    MmsaRows,
    id_text,
    process_mmsa_unit,
    text_label,
)
from ..store_writer import BuildConfig, BuildPlan, BuildResult
from ..unpickle import load_restricted
from .base import Recipe, option

RECIPE_VERSION = "mmsa/1"
MMSA_UNITS_PER_SHARD = 4  # units of 256 segments: about a thousand segments per shard (CLI and flow alike)


def read_mmsa(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Load an MMSA pickle safely and check its layout; returns `{split: {key: array or list}}`."""
    p = Path(path)
    data = load_restricted(p)
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise MmsaPickleError(f"{p}: not MMSA's layout (expected a dict with train/valid/test)", "read", source_path=str(p))
    for split, d in data.items():
        if split not in SPLITS:
            continue
        if not isinstance(d, dict) or "id" not in d or "regression_labels" not in d:
            raise MmsaPickleError(f"{p}: split {split!r} lacks 'id' or 'regression_labels'", "read", source_path=str(p))
        try:
            n = len(d["id"])
            for key in ("text", "audio", "vision", "regression_labels", "raw_text"):
                if key in d and len(d[key]) != n:
                    raise MmsaPickleError(f"{p}: split {split!r}: {key} has {len(d[key])} rows for {n} ids", "read",
                                          source_path=str(p))
        except TypeError as e:
            raise MmsaPickleError(f"{p}: split {split!r}: not MMSA's layout ({e})", "read", source_path=str(p)) from None
    return data


def _default_name(mod: str, dim: int) -> str:
    known = {("text", 300): "glove", ("text", 768): "bert", ("audio", 74): "covarep", ("vision", 35): "facet42"}
    return known.get((mod, dim), f"mmsa_{mod}")


def _one_step(data: Mapping[str, Any], mod: str) -> bool:
    """A modality whose sequences all have length 1 (an array of L = 1, or every `{mod}_lengths` 1): MMSA's way
    of carrying one vector per segment."""
    present = [data[s] for s in SPLITS if s in data and len(data[s].get(mod, ())) > 0]
    if not present:
        return False
    if all(np.asarray(d[mod]).shape[1] == 1 for d in present):
        return True
    lengths = [d.get(f"{mod}_lengths") for d in present]
    return all(x is not None and len(x) and np.all(np.asarray(x) == 1) for x in lengths)


def mmsa_feature_sets(data: Mapping[str, Any], names: Mapping[str, str] | None = None) -> dict[str, FeatureSet]:
    """modality -> FeatureSet for the modalities present; our own exports carry their original descriptions and
    levels (a modality they wrote as zeros, having no set, is skipped); a modality whose sequences all have length
    1 is utterance-level."""
    first = next(data[s] for s in SPLITS if s in data)
    stored = first.get("feature_sets") or {}
    levels = first.get("levels") if isinstance(first.get("levels"), dict) else {}
    out = {}
    for mod in MODALITIES:
        if mod not in first or (mod in stored and stored[mod] is None):
            continue
        arr = np.asarray(first[mod])
        dim = int(arr.shape[-1])
        given = (names or {}).get(mod)
        level = levels.get(mod) or ("utterance" if _one_step(data, mod) else "word")
        if isinstance(stored.get(mod), dict) and int(stored[mod].get("dim", -1)) == dim:
            fs = FeatureSet.from_dict({**stored[mod], "level": level})
            if given and given != fs.name:
                fs = FeatureSet.from_dict({**fs.to_dict(), "name": given})
        else:
            fs = FeatureSet(given or _default_name(mod, dim), tuple(f"{mod}_{i}" for i in range(dim)), STORE_MODALITY[mod],
                            "MMSA pickle", config={"mmsa_key": mod}, frame_rate=None,
                            description=f"{mod} features imported from an MMSA pickle", level=level)
        out[mod] = fs
    if len({fs.name for fs in out.values()}) != len(out):
        raise MmsaPickleError(f"two modalities map to one feature set name: {[fs.name for fs in out.values()]}", "read")
    return out


def mmsa_emotion_classes(data: Mapping[str, Any]) -> ClassSet:
    """The pickle's emotion class set: the one our export recorded, else found from its emotion_class values."""
    first = next(data[s] for s in SPLITS if s in data)
    rec = first.get("labels")
    if isinstance(rec, dict) and rec.get("emotion_classes"):
        name = rec.get("emotion_class_set")
        known = EMOTION_CLASS_SETS.get(name) if isinstance(name, str) else None
        return known or ClassSet(None, tuple(str(c) for c in rec["emotion_classes"]))
    found = set()
    for split in SPLITS:
        for j in range(len(data[split]["id"])) if split in data and "emotion_class" in data[split] else ():
            value = text_label(data[split], "emotion_class", j)
            if value is not None:
                try:
                    found.add(class_name(value))
                except ValueError:
                    pass  # refused row by row when its record is made
    return emotion_class_set(found)


def _id_problems(data: Mapping[str, Any], source: str) -> dict[str, dict[int, list[str]]]:
    """Per split, row -> (item id, reason) for ids the manifest's rules reject (`check_id`: no path separators,
    `..`, control characters, surrounding space) and for ids that appear more than once in the file."""
    where: dict[str, list[tuple[str, int]]] = {}
    out: dict[str, dict[int, list[str]]] = {}
    for split in SPLITS:
        if split not in data:
            continue
        d = data[split]
        bad = out.setdefault(split, {})
        for i, raw in enumerate(d["id"]):
            try:
                sid = check_id(id_text(raw))
                if "video_id" in d:
                    check_id(id_text(d["video_id"][i]), "video_id")
                else:
                    check_id(sid.split("$_$", 1)[0], "video id (before '$_$')")
            except RowError as e:
                bad[i] = [f"{split}[{i}]", f"{source}: {split} row {i}: {e}"]
                continue
            where.setdefault(sid, []).append((split, i))
    for sid, rows in where.items():
        if len(rows) > 1:
            for split, i in rows:
                out[split][i] = [f"{split}[{i}]", f"{source}: {split} row {i}: segment id {sid!r} appears {len(rows)} times"]
    return out


def mmsa_units(
    path: str | os.PathLike,
    names: Mapping[str, str] | None = None,
    aligned: bool | None = None,
    segments_per_unit: int = 256,
) -> tuple[list[WorkUnit], MmsaOptions, list[FeatureSet], dict[str, Any]]:
    """Read a pickle (restricted) and cut it into units (and what they share, the stage's options);
    `aligned=None` takes the layout from the file."""
    p = Path(path)
    data = read_mmsa(p)
    sets = mmsa_feature_sets(data, names)
    first = next(data[s] for s in SPLITS if s in data)
    if aligned is None:
        aligned = bool(first.get("aligned", "unaligned" not in p.name))
    problems = _id_problems(data, str(p))
    st = p.stat()
    base = f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{sorted((m, fs.name) for m, fs in sets.items())}\0{aligned}"
    classes = mmsa_emotion_classes(data)
    keys = ["id", "raw_text", "regression_labels", "emotion_labels", "sentiment_class", "annotations", "emotion_class",
            "words", "word_start", "word_end", "video_id",
            "segment_start", "segment_end", "text_lengths", "audio_lengths", "vision_lengths", "text_bert", *sets, *(f"{m}_coverage" for m in sets)]
    units = []
    for split in SPLITS:
        if split not in data:
            continue
        d = data[split]
        for lo in range(0, len(d["id"]), segments_per_unit):
            hi = lo + segments_per_unit
            part = {k: d[k][lo:hi] for k in keys if k in d}
            key = hashlib.sha256(f"{base}\0{split}\0{lo}".encode()).hexdigest()
            rejected = {i - lo: v for i, v in problems.get(split, {}).items() if lo <= i < hi}
            units.append(WorkUnit(f"{split}-{lo:07d}", key, MmsaRows(split, part, rejected)))
    options = MmsaOptions(str(p), aligned, sets, classes)
    report = {"mmsa_file": p.name, "aligned": aligned, "segments": {s: len(data[s]["id"]) for s in SPLITS if s in data},
              "modalities": {m: fs.name for m, fs in sets.items()}, "labels": labels_record(classes),
              "ids_rejected": {s: len(v) for s, v in problems.items() if v}}
    return units, options, list(sets.values()), report


def plan_mmsa(
    path: str | os.PathLike,
    config: BuildConfig | None = None,
    names: Mapping[str, str] | None = None,
    aligned: bool | None = None,
    name: str | None = None,
    segments_per_unit: int = 256,
) -> BuildPlan:
    """Everything decided before work runs (the pickle read through the restricted unpickler, ids checked,
    units cut); for `pipelines.build.run_build` or a Prefect flow. `config` None: the writer's BuildConfig with
    MMSA_UNITS_PER_SHARD units per shard, as the CLI and the flow use (a shard's key covers its size)."""
    units, options, feature_sets, report = mmsa_units(path, names, aligned, segments_per_unit)
    build_info = {"recipe": RECIPE_VERSION, "file": str(Path(path).resolve()), "aligned": report["aligned"],
                  "segments_per_unit": segments_per_unit, "labels": report.pop("labels")}
    config = config if config is not None else BuildConfig(units_per_shard=MMSA_UNITS_PER_SHARD)
    return BuildPlan(name or Path(path).stem, units, process_mmsa_unit, feature_sets, config, build_info, report, options)


def import_mmsa(
    path: str | os.PathLike,
    store: str | os.PathLike,
    names: Mapping[str, str] | None = None,
    aligned: bool | None = None,
    name: str | None = None,
    mode: str = "weighted",
    executor: Any = None,
    progress: bool = True,
) -> BuildResult:
    """Import an MMSA pickle into a store; returns the store writer's `BuildResult`."""
    plan = plan_mmsa(path, BuildConfig(collapse=CollapseConfig(mode=mode), units_per_shard=MMSA_UNITS_PER_SHARD),
                     names, aligned, name)
    return run_build(plan, store, executor=executor, show_bar=progress)


# --- as the command line and the flows offer it -------------------------------------------------------------

def _set_name(mod: str, example: str, note: str = "") -> Any:
    """The option naming one modality's feature set."""
    return option(None, f"feature set name for the {mod} features{note}",
                  flow_help=f"Feature set name for the {mod} features (e.g. {example}); empty: the pickle's own or one "
                            "from its dimension.")


@dataclass(frozen=True)
class MmsaRecipeOptions:
    input: str = option(help="the .pkl file", path=True,
                        flow_help="The MMSA pickle file, an absolute path on the machine serving this flow.")
    aligned: bool | None = option(None, "word-aligned layout (auto: the file's own flag, else its name)",
                                  flow_help="Whether the pickle's sequences are word-aligned; empty: from the pickle "
                                            "(or its file name).")
    text_name: str | None = _set_name("text", "bert", " (default from the dims)")
    audio_name: str | None = _set_name("audio", "covarep")
    vision_name: str | None = _set_name("vision", "facet41")


def plan_mmsa_recipe(options: MmsaRecipeOptions, config: BuildConfig) -> BuildPlan:
    names = {m: n for m in MODALITIES if (n := getattr(options, f"{m}_name"))}
    return plan_mmsa(options.input, config, names=names, aligned=options.aligned)


RECIPE = Recipe("mmsa", "an MMSA pickle (aligned_50.pkl / unaligned_50.pkl), read without running its code",
                MmsaRecipeOptions, plan_mmsa_recipe, flow="build-mmsa-features", function="build_mmsa_features",
                units_per_shard=MMSA_UNITS_PER_SHARD, unit_help="work units (runs of pickle rows)",
                shard_noun="segments", shard_count_at=("data", "id"))
