"""The MMSA stage: one slice of a pickle's split -> segment records.

Rows carry their words (our own exports) or MMSA's `raw_text`; aligned pickles give one row per word for every
modality (word features), unaligned ones give audio and vision frames, spread over a nominal [0, 1) timeline
when the pickle has no times. Rows whose id the plan rejected become failure rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from feature_schemas import EMOTIONS, SENTIMENT_CLASSES, ClassSet, FeatureSet, class_name

from ..errors import PipelineError
from ..folds import video_id_of
from ..inputs import RowError
from ..records import Failure, FrameFeatures, SegmentRecord, UnitResult, WordFeatures, Words, WorkUnit

MODALITIES = ("text", "audio", "vision")
STORE_MODALITY = {"text": "text", "audio": "audio", "vision": "visual"}  # MMSA's key -> the store's modality


@dataclass(frozen=True)
class MmsaOptions:
    """What every unit of one pickle's import shares."""

    source: str  # the pickle's path, as failure rows and segments name it
    aligned: bool  # one row per word for every modality; else audio and vision are frames
    sets: dict[str, FeatureSet]  # MMSA modality -> the store's feature set
    classes: ClassSet  # the store's emotion class set


@dataclass(frozen=True)
class MmsaRows:
    """A unit of the MMSA stage: consecutive rows of one split, each key sliced alike."""

    split: str
    data: dict[str, Any]
    rejected: dict[int, list[str]] = field(default_factory=dict)  # row in the slice -> [item id, reason]


def id_text(value: Any) -> str:
    """An id as text: str, bytes (decoded) or an integer; anything else (a float, an array) is refused."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if not isinstance(value, str):
        raise RowError(f"id {value!r} is a {type(value).__name__}, not text")
    return value


def _n_real(rows: np.ndarray) -> int:
    """Rows up to the last one that is not all zeros (MMSA pads with zeros at the end)."""
    nz = np.flatnonzero(np.any(rows != 0, axis=1))
    return int(nz[-1]) + 1 if nz.size else 0


def text_label(d: Mapping[str, Any], key: str, i: int) -> str | None:
    if key not in d:
        return None
    v = d[key][i]
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) or not str(v).strip() else str(v)


def _row_labels(d: Mapping[str, Any], i: int, classes: ClassSet, source: str) -> dict[str, Any]:
    """Emotion presence, sentiment class and emotion class of row i, under the same rule as every route."""
    out: dict[str, Any] = {}
    if "emotion_labels" in d:
        row = np.asarray(d["emotion_labels"][i], np.float64)
        given = bool(np.isfinite(row).any())  # all NaN: the row gives no emotion; else absent ones are 0
        for e, v in zip(EMOTIONS, row, strict=True):
            out[e] = (float(v) if np.isfinite(v) else 0.0) if given else None
    word = text_label(d, "sentiment_class", i) or text_label(d, "annotations", i)
    if word is not None and word.strip().lower() in SENTIMENT_CLASSES:
        out["sentiment_class"] = word.strip().lower()
    value = text_label(d, "emotion_class", i)
    if value is not None:
        try:
            name = classes.canonical(class_name(value))
        except ValueError as e:
            name, why = None, str(e)
        else:
            why = f"is not one of the store's emotion classes ({', '.join(classes.classes) or 'none'})"
        if name is None:
            raise PipelineError(f"{source}: segment {d['id'][i]!s}: emotion {value!r} {why}", "read", str(d["id"][i]), source)
        out["emotion_class"] = name
    return out


def _record(d: Mapping[str, Any], i: int, split: str, sets: Mapping[str, FeatureSet], aligned: bool, source: str,
            classes: ClassSet) -> SegmentRecord:
    sid = id_text(d["id"][i])
    words = _words(d, i, sets)
    n = len(words)
    if "word_start" in d and "word_end" in d:
        w = Words(words, d["word_start"][i], d["word_end"][i], np.ones(n, np.float32), "given")
        if not np.isfinite(w.start).all():
            w = Words(words, w.start, w.end, np.zeros(n, np.float32), "none")
    elif aligned:
        w = Words.untimed(words)
    else:  # frames and words spread evenly over a nominal [0, 1) timeline: the best MMSA's layout allows
        edges = np.arange(n + 1) / max(n, 1)
        w = Words(words, edges[:-1], edges[1:], np.zeros(n, np.float32), "uniform")
    label = float(d["regression_labels"][i])
    seg: dict[str, Any] = {
        "segment_id": sid,
        "video_id": video_id_of(sid.split("$_$", 1)[0]),
        "split": split,
        "transcript": str(d["raw_text"][i]) if "raw_text" in d else " ".join(words),
        "sentiment": label if np.isfinite(label) else None,
        "source": "mmsa",
        "source_path": source,
    }
    if "video_id" in d:
        seg["video_id"] = id_text(d["video_id"][i])
    for col, key in (("start", "segment_start"), ("end", "segment_end")):
        if key in d and np.isfinite(d[key][i]):
            seg[col] = float(d[key][i])
    seg.update(_row_labels(d, i, classes, source))
    rec = SegmentRecord(seg, w)
    for mod, fs in sets.items():
        rows = np.asarray(d[mod][i], np.float32)
        cov = np.asarray(d[f"{mod}_coverage"][i], np.float32) if f"{mod}_coverage" in d else None
        if fs.level == "utterance":  # one step; a zero step our export marked uncovered is no vector at all
            if len(rows) and _length(d, mod, i, len(rows)) >= 1 and (cov is None or len(cov) == 0 or cov[0] > 0):
                rec.utterance_features[fs.name] = rows[0]
        elif aligned or mod == "text":
            vals = rows[:n] if len(rows) >= n else np.vstack([rows, np.zeros((n - len(rows), fs.dim), np.float32)])
            if cov is None or len(cov) != n:  # rows past the modality's own length are padding, not data
                cov = (np.arange(n) < _length(d, mod, i, n)).astype(np.float32) if f"{mod}_lengths" in d and mod != "text" else None
            rec.word_features[fs.name] = WordFeatures(vals, cov)
        else:
            k = _length(d, mod, i, None)
            t = np.arange(k + 1) / max(k, 1)
            rec.frames[fs.name] = FrameFeatures(t[:-1], t[1:], rows[:k])
    return rec


def _length(d: Mapping[str, Any], mod: str, i: int, default: int | None) -> int:
    """The true length of row i of a modality: its `{mod}_lengths`, else `default`, else up to the last
    non-zero step."""
    if f"{mod}_lengths" in d:
        return int(d[f"{mod}_lengths"][i])
    return default if default is not None else _n_real(np.asarray(d[mod][i]))


def _words(d: Mapping[str, Any], i: int, sets: Mapping[str, FeatureSet]) -> list[str]:
    """Row i's words: our export's own; else as many as the text sequence really has (its `text_lengths`, the
    text_bert attention mask, the raw text's word count, or up to its last non-zero step), named by the raw text
    where the counts agree."""
    if "words" in d:
        return [str(w) for w in d["words"][i]]
    toks = str(d["raw_text"][i]).split() if "raw_text" in d else []
    if "text" not in d or ("text" in sets and sets["text"].level == "utterance"):
        return toks
    rows = np.asarray(d["text"][i])
    if "text_lengths" in d:
        n = int(d["text_lengths"][i])
    elif "text_bert" in d:
        n = int(np.asarray(d["text_bert"][i])[1].sum())
    elif toks:
        n = len(toks)
    else:
        n = _n_real(rows)
    n = min(n, len(rows))
    return toks if len(toks) == n else [f"<w{j}>" for j in range(n)]


def process_mmsa_unit(unit: WorkUnit, options: MmsaOptions) -> UnitResult:
    """Turn one slice of a pickle's split into segment records; rows whose id the plan rejected become
    failure rows."""
    rows: MmsaRows = unit.payload
    recs, failures = [], []
    for i in range(len(rows.data["id"])):
        if i in rows.rejected:
            item, reason = rows.rejected[i]
            failures.append(Failure(item, "read", reason, options.source))
            continue
        try:
            recs.append(_record(rows.data, i, rows.split, options.sets, options.aligned, options.source, options.classes))
        except PipelineError as e:
            failures.append(Failure(e.item_id or id_text(rows.data["id"][i]), e.stage, str(e), e.source_path))
    report = {f"segments_imported.{rows.split}": len(recs)}
    if rows.rejected:
        report[f"ids_rejected.{rows.split}"] = len(rows.rejected)
    return UnitResult(records=recs, failures=failures, report=report)
