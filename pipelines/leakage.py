"""Leakage between splits: the same sentence or the same video in train and test makes a test score a memory test.

A built store is checked from its segments tables (segment id, video id, split, transcript): segments whose
normalised transcript (lower case, punctuation stripped, white space collapsed; at least `MIN_WORDS` words, so
that "oh really" does not count) occurs in more than one split, and video ids that occur in more than one split.
The result goes into the manifest's build report under `leakage`; the card, `mmolre inspect` and the end of the
build show it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from feature_schemas import SPLITS

MIN_WORDS = 4  # shorter transcripts ("oh really", "thank you") repeat across any corpus by chance
MAX_EXAMPLES = 20
MAX_IDS = 5  # segment ids shown per split and example
COLUMNS = ("segment_id", "video_id", "split", "transcript")

_PUNCT = re.compile(r"[^\w\s]|_")


def normalise_transcript(text: str | None) -> str:
    """Lower case, punctuation and symbols stripped ("don't" -> "dont"), white space collapsed."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return " ".join(_PUNCT.sub("", text).split())


def _split_order(splits: Iterable[str]) -> list[str]:
    return sorted(set(splits), key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


def find_leakage(rows: Iterable[dict[str, Any]], min_words: int = MIN_WORDS) -> dict[str, Any]:
    """The leakage report of segments given as dicts with segment_id, video_id, split and transcript."""
    by_text: dict[str, dict[str, list[str]]] = {}
    by_video: dict[str, dict[str, int]] = {}
    for r in rows:
        split, sid = str(r.get("split")), str(r.get("segment_id"))
        if r.get("video_id") is not None:
            per = by_video.setdefault(str(r["video_id"]), {})
            per[split] = per.get(split, 0) + 1
        text = normalise_transcript(r.get("transcript"))
        if len(text.split()) >= min_words:
            by_text.setdefault(text, {}).setdefault(split, []).append(sid)
    shared = {t: s for t, s in by_text.items() if len(s) > 1}
    per_split: dict[str, int] = {}
    for splits in shared.values():
        for split, ids in splits.items():
            per_split[split] = per_split.get(split, 0) + len(ids)
    text_examples = [
        {"transcript": t, "segments": {s: sorted(shared[t][s])[:MAX_IDS] for s in _split_order(shared[t])}}
        for t in sorted(shared, key=lambda t: (min(min(ids) for ids in shared[t].values()), t))[:MAX_EXAMPLES]
    ]
    videos = {v: s for v, s in by_video.items() if len(s) > 1}
    return {
        "min_words": min_words,
        "transcripts_in_several_splits": {
            "count": len(shared),
            "segments": sum(per_split.values()),
            "segments_by_split": {s: per_split[s] for s in _split_order(per_split)},
            "examples": text_examples,
        },
        "videos_in_several_splits": {
            "count": len(videos),
            "examples": [{"video_id": v, "segments": {s: videos[v][s] for s in _split_order(videos[v])}}
                         for v in sorted(videos)[:MAX_EXAMPLES]],
        },
    }


def store_leakage(root: str | Path, segment_files: Sequence[str]) -> dict[str, Any]:
    """The leakage report of a store from its segments Parquet files (paths relative to `root`), reading only
    the four columns it needs."""
    rows: list[dict[str, Any]] = []
    for rel in sorted(segment_files):
        rows += pq.read_table(Path(root) / rel, columns=list(COLUMNS)).to_pylist()
    return find_leakage(rows)


def has_leakage(report: dict[str, Any] | None) -> bool:
    if not report:
        return False
    return bool(report["transcripts_in_several_splits"]["count"] or report["videos_in_several_splits"]["count"])


def leakage_lines(report: dict[str, Any] | None, examples: int = 3) -> list[str]:
    """Plain-text lines for a terminal or a card; an empty report says so."""
    if not report:
        return ["leakage: not checked (the store was built before the check existed; rebuild to check)"]
    t, v = report["transcripts_in_several_splits"], report["videos_in_several_splits"]
    if not has_leakage(report):
        return [f"leakage: none (no transcript of {report['min_words']}+ words and no video id in more than one split)"]
    lines = []
    if t["count"]:
        by = ", ".join(f"{s} {t['segments_by_split'][s]}" for s in _split_order(t["segments_by_split"]))
        lines.append(f"leakage: {t['count']} transcripts of {report['min_words']}+ words occur in more than one split "
                     f"({t['segments']} segments: {by})")
        for e in t["examples"][:examples]:
            where = "; ".join(f"{s} {', '.join(e['segments'][s])}" for s in _split_order(e["segments"]))
            lines.append(f"  {e['transcript'][:80]!r}: {where}")
    if v["count"]:
        lines.append(f"leakage: {v['count']} video ids occur in more than one split")
        for e in v["examples"][:examples]:
            lines.append(f"  {e['video_id']!r}: " + ", ".join(f"{s} {e['segments'][s]}" for s in _split_order(e["segments"])))
    return lines
