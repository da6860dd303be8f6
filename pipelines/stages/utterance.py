"""The utterance stage: the bc-LSTM release's rows (CMU-MOSI, Poria et al., ACL 2017) -> segment records.

The release gives one vector per utterance (text 100, audio 73, video 100) in CSVs without headers:
`transcripts.csv` (id, transcript, video number, binary label), `text_{train,test}.csv` (row index into the
transcripts, then the text vector) and `{text,audio,video}_{train,test}0.csv` (the vector, then the binary label),
rows in the same order. Each segment gets the words of its transcript (untimed), its continuous label (joined
from CMU-MOSI's `label.csv`), the release's binary label as `sentiment_class`, and three utterance vectors.
Units carry segment ids, not vectors: each worker reads the release once (`_release_rows`).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..inputs import RowError, check_id
from ..recipes.mosi_text import read_mosi_labels
from ..records import Failure, SegmentRecord, UnitResult, Words, WorkUnit

SOURCE = "mosi-utterance"
# store name -> (release file prefix, modality, what it is)
SETS: dict[str, tuple[str, str, str]] = {
    "bclstm_text": ("text", "text", "CNN over word2vec embeddings, trained on the release's training videos"),
    "bclstm_audio": ("audio", "audio", "openSMILE functionals (73), as released"),
    "bclstm_video": ("video", "visual", "3D-CNN over the face frames, trained on the release's training videos"),
}
RELEASE_SPLITS = ("train", "test")


@dataclass(frozen=True)
class UtteranceOptions:
    """Where every unit of one build reads the release from; `stamp` changes when its files do."""

    root: str
    labels: str
    stamp: str


@dataclass(frozen=True)
class UtteranceRows:
    """A unit of the utterance stage: one video's segments (id, split), or the release rows that failed."""

    rows: tuple[tuple[str, str], ...]  # (segment id, split)
    source_path: str
    failures: tuple[Failure, ...] = ()


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


def release_stamp(root: Path, labels: Path) -> str:
    """A digest of the release's files on disk (path, size, mtime): the cache below rereads when it changes."""
    files = sorted(root.glob("*.csv")) + [labels]
    return hashlib.sha256(repr([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]).encode()).hexdigest()


@functools.lru_cache(maxsize=2)
def _release_rows(root: str, labels: str, stamp: str) -> dict[str, dict[str, Any]]:
    """The release parsed once per worker process, by segment id (units carry ids, not 2 MB of vectors: a
    Prefect flow's parameters must stay small)."""
    return {r["segment_id"]: r for r in read_release(root, labels).rows}


def process_utterance_unit(unit: WorkUnit, options: UtteranceOptions) -> UnitResult:
    """One video's segments: words of the transcript (untimed), labels, and the three utterance vectors."""
    rows: UtteranceRows = unit.payload
    records = []
    release = _release_rows(options.root, options.labels, options.stamp) if rows.rows else {}
    for segment_id, split in rows.rows:
        r = {**release[segment_id], "split": split}
        words = r["transcript"].lower().split()
        segment = {
            "segment_id": r["segment_id"], "video_id": r["video_id"], "split": r["split"], "start": None, "end": None,
            "transcript": r["transcript"].lower(), "sentiment": r["sentiment"],
            "sentiment_class": "positive" if r["binary"] == 1 else "negative",
            "source": SOURCE, "source_path": rows.source_path,
        }
        records.append(SegmentRecord(segment, Words.untimed(words),
                                     utterance_features={k: np.asarray(v, np.float32) for k, v in r["vectors"].items()}))
    return UnitResult(records=records, failures=list(rows.failures))
