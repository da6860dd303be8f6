"""A store written as MMSA's pickle (`aligned_50.pkl` / `unaligned_50.pkl`).

Layout: `{split: {"id", "raw_text", "text" (N, L, Dt), "audio" (N, T, Da), "vision" (N, T, Dv), "audio_lengths",
"vision_lengths", "regression_labels" (N,), ...}}` with splits train/valid/test. Aligned: every modality has
one row per word, L = T = 50, zero-padded at the end. Unaligned: audio and vision are frames (T per modality).

Export also writes a few keys MMSA ignores ("words", "word_start", "word_end", "emotion_labels",
"sentiment_class", "emotion_class", "labels", "feature_sets") so that importing our own export
(`pipelines.recipes.mmsa`) restores the store's values and names.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import (
    EMOTIONS,
    Store,
    StoreError,
    atomic_path,
    column_lists,
    column_vectors,
    coverage_column,
    present_column,
    utterance_vectors,
)

from ..stages.mmsa import STORE_MODALITY


def _pick_sets(store: Store, text: str | None, audio: str | None, vision: str | None) -> dict[str, str | None]:
    chosen = {"text": text, "audio": audio, "vision": vision}
    for mod, name in chosen.items():
        if name is None:
            usable = store.aligned_sets() + store.utterance_sets()  # word-level first
            cands = [n for n in usable if store.feature_sets[n].modality == STORE_MODALITY[mod]]
            chosen[mod] = cands[0] if cands else None
        elif name not in store.feature_sets:
            raise StoreError(f"{store.path}: no feature set {name!r} for {mod} (has: {', '.join(store.feature_sets)})")
    return chosen


def _pad(rows: list[np.ndarray], length: int, dim: int) -> tuple[np.ndarray, list[int]]:
    out = np.zeros((len(rows), length, dim), np.float32)
    lengths = []
    for i, r in enumerate(rows):
        k = min(len(r), length)
        out[i, :k] = r[:k]
        lengths.append(k)
    return out, lengths


def _utterance_rows(st: Store, split: str, name: str, ids: list[str]) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """An utterance-level set as MMSA arrays: (N, 1, D), coverage [1] or [0], length 1 (0 where absent)."""
    t = st.utterance(split, [name], ["segment_id"])
    index = {sid: i for i, sid in enumerate(t.column("segment_id").to_pylist())}
    values = utterance_vectors(t.column(name))
    present = t.column(present_column(name)).to_numpy(zero_copy_only=False).astype(bool)
    dim = st.feature_sets[name].dim
    out = np.zeros((len(ids), 1, dim), np.float32)
    lengths = []
    for k, sid in enumerate(ids):
        i = index.get(sid)
        ok = i is not None and bool(present[i])
        if ok:
            out[k, 0] = values[i]
        lengths.append(int(ok))
    return out, [np.array([float(n)], np.float32) for n in lengths], lengths


def export_mmsa(
    store: str | os.PathLike,
    out_path: str | os.PathLike,
    text: str | None = None,
    audio: str | None = None,
    vision: str | None = None,
    aligned: bool = True,
    seq_len: int = 50,
    frame_len: int = 500,
) -> Path:
    """Write a store as MMSA's pickle. Feature sets are chosen by name (default: the first text, audio and
    visual sets). aligned=True: all three per word, padded/truncated to `seq_len`; aligned=False: audio and
    vision from the frame tables (build with keep_frames), padded/truncated to `frame_len`."""
    st = Store(store)
    sets = _pick_sets(st, text, audio, vision)
    out: dict[str, dict[str, Any]] = {}
    for split in st.splits():
        seg = st.segments(split).to_pandas().set_index("segment_id")
        names = [n for n in dict.fromkeys(sets.values()) if n is not None and n not in st.utterance_sets()]
        al = st.aligned(split, feature_sets=names)
        ids = al.column("segment_id").to_pylist()
        words = al.column("words").to_pylist()
        d: dict[str, Any] = {
            "id": np.array(ids, dtype=object),
            "raw_text": np.array([t if isinstance(t, str) else " ".join(w) for t, w in zip(seg.loc[ids, "transcript"], words, strict=True)],
                                 dtype=object),
            "regression_labels": seg.loc[ids, "sentiment"].to_numpy(np.float32, na_value=np.nan),
            "emotion_labels": seg.loc[ids, list(EMOTIONS)].to_numpy(np.float32, na_value=np.nan).reshape(-1, len(EMOTIONS)),
            "sentiment_class": np.array(seg.loc[ids, "sentiment_class"].tolist(), dtype=object),
            "emotion_class": np.array(seg.loc[ids, "emotion_class"].tolist(), dtype=object),
            "labels": dict(st.manifest.labels),
            "words": [w[:seq_len] for w in words],
            "word_start": [x[:seq_len] for x in column_lists(al.column("word_start"), np.float64)],
            "word_end": [x[:seq_len] for x in column_lists(al.column("word_end"), np.float64)],
            "video_id": np.array(seg.loc[ids, "video_id"].tolist(), dtype=object),
            "segment_start": seg.loc[ids, "start"].to_numpy(np.float64, na_value=np.nan),
            "segment_end": seg.loc[ids, "end"].to_numpy(np.float64, na_value=np.nan),
            "feature_sets": {m: (st.feature_sets[n].to_dict() if n else None) for m, n in sets.items()},
            "aligned": aligned,
            "levels": {m: (st.feature_sets[n].level if n else None) for m, n in sets.items()},
        }
        for mod, name in sets.items():
            if name is None:
                continue
            dim = st.feature_sets[name].dim
            if name in st.utterance_sets():  # schema 2: one vector per segment, exported as a one-step sequence
                d[mod], d[f"{mod}_coverage"], lengths = _utterance_rows(st, split, name, ids)
            elif aligned or mod == "text":
                rows = column_vectors(al.column(name))
                d[mod], lengths = _pad(rows, seq_len, dim)
                d[f"{mod}_coverage"] = [c[:seq_len] for c in column_lists(al.column(coverage_column(name)))]
            else:
                if name not in st.frame_sets():
                    raise StoreError(f"{st.path}: no frame-level table for {name!r}; build with keep_frames=True or export aligned")
                fr = st.frames(name, split, columns=["segment_id", "values"])
                by_id = dict(zip(fr.column("segment_id").to_pylist(), column_vectors(fr.column("values")), strict=True))
                rows = [by_id.get(i, np.zeros((0, dim), np.float32)) for i in ids]
                rows = [np.where(np.isfinite(r), r, 0.0) for r in rows]
                d[mod], lengths = _pad(rows, frame_len, dim)
            d[f"{mod}_lengths"] = lengths
        out[split] = d
    dest = Path(out_path)
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        pickle.dump(out, f, protocol=4)
    return dest
