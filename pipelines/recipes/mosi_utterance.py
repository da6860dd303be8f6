"""Recipe: CMU-MOSI utterance-level features of the bc-LSTM release (Poria et al., ACL 2017) to a feature store.

The release gives one vector per utterance (text 100, audio 73, video 100) in CSVs without headers:
`transcripts.csv` (id, transcript, video number, binary label), `text_{train,test}.csv` (row index into the
transcripts, then the text vector) and `{text,audio,video}_{train,test}0.csv` (the vector, then the binary label),
rows in the same order. The store gets three utterance-level sets (schema 2), the words of each transcript
(untimed) in `aligned/`, continuous labels joined from CMU-MOSI's `label.csv`, and the release's binary label
as `sentiment_class` (negative / positive).

Splits: the release's own speaker-independent split (62 / 31 videos), NOT the standard folds: its text and video
extractors were trained on its training videos, so scoring on the standard folds leaks labels. `valid` is carved
from the training VIDEOS (seeded, ~10%); it is contaminated like the training set (the extractors saw it).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import FeatureSet, labels_record

from ..build import run_build
from ..inputs import RowError, check_id, read_mosi_labels
from ..records import Failure, PipelineError, SegmentRecord, UnitResult, Words, WorkUnit
from ..store_writer import BuildConfig, BuildPlan, BuildResult

RECIPE_VERSION = "mosi-utterance/1"
SOURCE = "mosi-utterance"
# store name -> (release file prefix, modality, what it is)
SETS: dict[str, tuple[str, str, str]] = {
    "bclstm_text": ("text", "text", "CNN over word2vec embeddings, trained on the release's training videos"),
    "bclstm_audio": ("audio", "audio", "openSMILE functionals (73), as released"),
    "bclstm_video": ("video", "visual", "3D-CNN over the face frames, trained on the release's training videos"),
}
RELEASE_SPLITS = ("train", "test")
CITATION = "Poria et al., Context-Dependent Sentiment Analysis in User-Generated Videos, ACL 2017"


@dataclass
class Release:
    """The release read and checked: one row per segment with its vectors, and the rows that failed."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    dims: dict[str, int] = field(default_factory=dict)


def _require(path: Path) -> Path:
    if not path.is_file():
        raise PipelineError(f"{path}: missing (a bc-LSTM release folder has transcripts.csv, text_{{train,test}}.csv "
                            "and {text,audio,video}_{train,test}0.csv)", stage="read", source_path=str(path))
    return path


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(_require(path), newline="", encoding="utf-8") as f:
            return [row for row in csv.reader(f) if row]
    except (UnicodeDecodeError, csv.Error) as e:
        raise PipelineError(f"{path}: not a readable CSV ({e})", stage="read", source_path=str(path)) from None


def _floats(cells: list[str], what: str) -> np.ndarray:
    try:
        return np.array([float(c) for c in cells], np.float32)
    except ValueError as e:
        raise RowError(f"{what}: not a number ({e})") from None


def _binary(value: str, what: str) -> int:
    try:
        v = float(value)
    except ValueError:
        raise RowError(f"{what}: binary label {value!r} is not 0 or 1") from None
    if v not in (0.0, 1.0):
        raise RowError(f"{what}: binary label {value!r} is not 0 or 1")
    return int(v)


def _transcripts(root: Path) -> list[tuple[str, str, str] | None]:
    """(id, transcript, binary label) per row; None for a row without 4 columns (its segment fails alone)."""
    return [(row[0], row[1], row[3]) if len(row) >= 4 else None for row in _read_csv(root / "transcripts.csv")]


def read_release(root: str | os.PathLike, labels: str | os.PathLike | None = None) -> Release:
    """Read and cross-check the release: parallel files have equal row counts, indices point into the
    transcripts, every file's binary label agrees with the transcripts', ids are valid and unique; continuous
    labels are joined from `labels` (default `../label.csv` beside the folder)."""
    root = Path(root)
    transcripts = _transcripts(root)
    label_path = Path(labels) if labels is not None else root.parent / "label.csv"
    parsed = read_mosi_labels(label_path)
    continuous = {s.segment_id: s.labels.get("sentiment") for s in parsed.specs}
    out = Release()
    seen: set[str] = set()
    for split in RELEASE_SPLITS:
        index_path = root / f"text_{split}.csv"
        index = _read_csv(index_path)
        tables = {name: _read_csv(root / f"{prefix}_{split}0.csv") for name, (prefix, _, _) in SETS.items()}
        for name, rows in tables.items():
            if len(rows) != len(index):
                raise PipelineError(f"{root / (SETS[name][0] + f'_{split}0.csv')}: {len(rows)} rows, but {index_path.name} has "
                                    f"{len(index)}; the release's files must be row-parallel", stage="read", source_path=str(root))
            dim = len(rows[0]) - 1 if rows else 0
            if out.dims.setdefault(name, dim) != dim:
                raise PipelineError(f"{name}: {dim} features in the {split} file, {out.dims[name]} in the other",
                                    stage="read", source_path=str(root))
        for i, irow in enumerate(index):
            sid = None
            try:
                k = int(float(irow[0]))
                if not 0 <= k < len(transcripts):
                    raise RowError(f"{index_path.name} row {i + 1}: index {irow[0]!r} outside transcripts.csv")
                if transcripts[k] is None:
                    raise RowError(f"transcripts.csv row {k + 1}: expected 4 columns (id, transcript, video, label)")
                raw_id, transcript, binary = transcripts[k]  # type: ignore[misc]
                sid = check_id(raw_id)
                if sid in seen:
                    raise RowError(f"segment {sid!r} appears twice in the release")
                label = _binary(binary, f"transcripts.csv row {k + 1}")
                vectors = {}
                for name, rows in tables.items():
                    cells = rows[i]
                    if len(cells) != out.dims[name] + 1:
                        raise RowError(f"{SETS[name][0]}_{split}0.csv row {i + 1}: {len(cells)} columns, expected {out.dims[name] + 1}")
                    if _binary(cells[-1], f"{SETS[name][0]}_{split}0.csv row {i + 1}") != label:
                        raise RowError(f"{SETS[name][0]}_{split}0.csv row {i + 1}: binary label differs from transcripts.csv (rows out of order?)")
                    vectors[name] = _floats(cells[:-1], f"{SETS[name][0]}_{split}0.csv row {i + 1}")
                seen.add(sid)
                out.rows.append({
                    "segment_id": sid, "video_id": sid.rsplit("_", 1)[0] if "_" in sid else sid, "release_split": split,
                    "transcript": transcript, "binary": label, "sentiment": continuous.get(sid), "vectors": vectors,
                })
            except (RowError, ValueError, IndexError) as e:
                out.failures.append(Failure(sid or f"{index_path.name}:{i + 1}", "read", f"{root}: {e}", str(index_path)))
    return out


def valid_videos(train_videos: list[str], fraction: float = 0.1, seed: int = 0) -> list[str]:
    """~`fraction` of the training videos (at least one), drawn with `seed` from the sorted ids: the same on
    every machine and run."""
    videos = sorted(set(train_videos))
    n = max(1, round(fraction * len(videos))) if fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(videos))
    return sorted(videos[i] for i in order[:n])


def feature_sets(dims: dict[str, int]) -> list[FeatureSet]:
    return [
        FeatureSet(
            name=name, dims=tuple(f"{SETS[name][0]}_{j:03d}" for j in range(dim)), modality=SETS[name][1],
            extractor="bc-lstm-release", extractor_version="948cf07c",
            config={"file": f"{SETS[name][0]}_{{train,test}}0.csv", "citation": CITATION},
            description=SETS[name][2], level="utterance",
        )
        for name, dim in dims.items()
    ]


def _stamp(root: Path, labels: Path) -> str:
    """A digest of the release's files on disk (path, size, mtime): the cache below rereads when it changes."""
    files = sorted(root.glob("*.csv")) + [labels]
    return hashlib.sha256(repr([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]).encode()).hexdigest()


@functools.lru_cache(maxsize=2)
def _release_rows(root: str, labels: str, stamp: str) -> dict[str, dict[str, Any]]:
    """The release parsed once per worker process, by segment id (units carry ids, not 2 MB of vectors: a
    Prefect flow's parameters must stay small)."""
    return {r["segment_id"]: r for r in read_release(root, labels).rows}


def process_mosi_utterance_unit(unit: WorkUnit) -> UnitResult:
    """One video's segments: words of the transcript (untimed), labels, and the three utterance vectors."""
    records = []
    failures = [Failure(**f) for f in unit.payload.get("failures", [])]
    p = unit.payload
    release = _release_rows(p["root"], p["labels"], p["stamp"]) if p["rows"] else {}
    for split_row in p["rows"]:
        r = {**release[split_row["segment_id"]], "split": split_row["split"]}
        words = r["transcript"].lower().split()
        segment = {
            "segment_id": r["segment_id"], "video_id": r["video_id"], "split": r["split"], "start": None, "end": None,
            "transcript": r["transcript"].lower(), "sentiment": r["sentiment"],
            "sentiment_class": "positive" if r["binary"] == 1 else "negative",
            "source": SOURCE, "source_path": unit.payload["source_path"],
        }
        records.append(SegmentRecord(segment, Words.untimed(words),
                                     utterance_features={k: np.asarray(v, np.float32) for k, v in r["vectors"].items()}))
    return UnitResult(records=records, failures=failures)


def plan_mosi_utterance(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    config: BuildConfig | None = None,
) -> BuildPlan:
    """Units (one per video), feature sets and the split report, for `pipelines.build.run_build` or a Prefect flow."""
    root = Path(root).resolve()
    label_path = (Path(labels) if labels is not None else root.parent / "label.csv").resolve()
    release = read_release(root, label_path)
    if not release.rows:
        raise PipelineError(f"{root}: no usable segment in the release ({len(release.failures)} rows failed)", stage="read")
    train_videos = [r["video_id"] for r in release.rows if r["release_split"] == "train"]
    valid = set(valid_videos(train_videos, valid_fraction, seed))
    by_video: dict[str, list[dict[str, Any]]] = {}
    for r in release.rows:
        split = "test" if r["release_split"] == "test" else ("valid" if r["video_id"] in valid else "train")
        by_video.setdefault(r["video_id"], []).append({**r, "split": split})
    stamp = _stamp(root, label_path)
    units = []
    for vid, rows in sorted(by_video.items()):
        rows.sort(key=lambda x: x["segment_id"])
        h = hashlib.sha256()
        for r in rows:  # the unit's key covers its values, labels and split
            h.update(json.dumps({k: v for k, v in r.items() if k != "vectors"}, sort_keys=True).encode())
            for name in sorted(r["vectors"]):
                h.update(r["vectors"][name].tobytes())
        payload = {"rows": [{"segment_id": r["segment_id"], "split": r["split"]} for r in rows], "root": str(root),
                   "labels": str(label_path), "stamp": stamp, "source_path": str(root)}
        units.append(WorkUnit(vid, h.hexdigest(), payload))
    if release.failures:  # rows the release got wrong go to the store's failures table like any other
        failed = [vars(f) for f in release.failures]
        key = hashlib.sha256(json.dumps(failed, sort_keys=True).encode()).hexdigest()
        units.append(WorkUnit("~release-rows", key, {"rows": [], "failures": failed, "source_path": str(root)}))
    n_missing = sum(1 for r in release.rows if r["sentiment"] is None or (isinstance(r["sentiment"], float) and math.isnan(r["sentiment"])))
    report = {
        "split": {"scheme": "bc-LSTM release (speaker-independent, 62/31 videos); valid = seeded share of the training videos",
                  "valid_videos": sorted(valid), "valid_fraction": valid_fraction, "seed": seed,
                  "contamination": "the release's text and video extractors were trained on its training videos, "
                                   "valid included: select on valid at your own risk; report fixed-epoch results too"},
        "release_rows": len(release.rows) + len(release.failures),
        "rows_failed": len(release.failures),
        "without_continuous_label": n_missing,
        "failed_rows": [vars(f) for f in release.failures[:20]],
    }
    build_info = {"recipe": RECIPE_VERSION, "input": str(root), "labels_file": str(label_path),
                  "labels": labels_record(),  # sentiment only: no emotion classes
                  "valid_fraction": valid_fraction, "seed": seed, "sets": list(SETS)}
    return BuildPlan("cmu-mosi-utterance", units, process_mosi_utterance_unit, feature_sets(release.dims),
                     config or BuildConfig(), build_info, report)


def build_mosi_utterance(
    root: str | os.PathLike,
    store: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    valid_fraction: float = 0.1,
    seed: int = 0,
    config: BuildConfig | None = None,
    executor: Any = None,
    progress: bool = True,
) -> BuildResult:
    """Build a store from the release's folder; returns the store writer's `BuildResult`."""
    plan = plan_mosi_utterance(root, labels, valid_fraction, seed, config)
    return run_build(plan, store, executor=executor, show_bar=progress)
