"""A store written as MMSA's pickle (`aligned_50.pkl` / `unaligned_50.pkl`), in a form MMSA's own loader and
trainers use as they are (checked with `mmsa` 2.2.1's `MMDataLoader` and its TFN, tests/test_peers.py).

Layout: `{train|valid|test: {"id", "raw_text", "text" (N, L, Dt), "text_bert" (N, 3, Lb), "audio" (N, T, Da),
"vision" (N, T, Dv), "audio_lengths", "vision_lengths", "regression_labels" (N,), ...}}`, all three splits
present (an empty split has zero rows). `layout="aligned"`: every modality one row per word, all padded to one
length L (utterance-level sets: one row). `layout="unaligned"`: text per word, audio and vision as their frames
(frame tables; build with keep_frames) or one row for utterance-level sets.

MMSA regresses on `regression_labels`, so segments without a sentiment score are left out (named in the
summary), never written as NaN. A modality the store lacks is written as zeros of dimension 1 and length 1
(MMSA's loader reads all three), with a warning. `*_lengths` are the true lengths (at least 1: MMSA's packed
LSTMs refuse 0; a segment without values keeps a zero row, marked in `{mod}_coverage`).

Export also writes keys MMSA ignores ("words", "word_start", "word_end", "text_lengths", "emotion_labels",
"sentiment_class", "emotion_class", "labels", "feature_sets", "levels", "video_id", "segment_start",
"segment_end", "*_coverage") so that importing our own export (`pipelines.recipes.mmsa`) restores the store.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import (
    EMOTIONS,
    SPLITS,
    Store,
    StoreError,
    atomic_path,
    column_lists,
    column_vectors,
    coverage_column,
    present_column,
    utterance_vectors,
)

from ..stages.mmsa import MODALITIES, STORE_MODALITY
from . import bert_tokens

LAYOUTS = ("aligned", "unaligned")


@dataclass
class MmsaExport:
    """What an export wrote and what it left out: the CLI prints it, tests read it."""

    path: Path
    layout: str
    segments: dict[str, int] = field(default_factory=dict)  # split -> rows written
    unlabeled: list[str] = field(default_factory=list)  # segment ids left out: no sentiment score
    sets: dict[str, str | None] = field(default_factory=dict)  # MMSA modality -> feature set (None: zeros)
    truncated: dict[str, int] = field(default_factory=dict)  # modality -> segments cut to the length
    lengths: dict[str, int] = field(default_factory=dict)  # modality (and text_bert) -> L written
    tokenizer: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        shown = self.unlabeled[:20]
        return {"path": str(self.path), "layout": self.layout, "segments": self.segments, "sets": self.sets,
                "left_out_unlabeled": {"count": len(self.unlabeled), "ids": shown,
                                       "more": max(0, len(self.unlabeled) - len(shown))},
                "lengths": self.lengths, "truncated": self.truncated, "tokenizer": self.tokenizer,
                "warnings": self.warnings}


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


def _pad(rows: list[np.ndarray], length: int, dim: int) -> tuple[np.ndarray, list[int], int]:
    """Rows zero-padded/cut to `length`; true lengths (at least 1) and how many were cut."""
    out = np.zeros((len(rows), length, dim), np.float32)
    lengths, cut = [], 0
    for i, r in enumerate(rows):
        k = min(len(r), length)
        out[i, :k] = r[:k]
        lengths.append(max(k, 1))
        cut += len(r) > length
    return out, lengths, cut


class _Split:
    """One split's rows, labelled ones only, in segment-id order (an export is the same whatever the shards)."""

    def __init__(self, st: Store, split: str, names: list[str], unlabeled: list[str]) -> None:
        seg = st.segments(split).to_pandas().set_index("segment_id") if st.files("segments", split) else None
        al = st.aligned(split, feature_sets=names) if st.files("aligned", split) else None
        stored = al.column("segment_id").to_pylist() if al is not None else []
        ids = sorted(stored)
        if seg is not None and ids:
            scored = seg.loc[ids, "sentiment"].notna().to_numpy()
            unlabeled += [i for i, ok in zip(ids, scored, strict=True) if not ok]
            ids = [i for i, ok in zip(ids, scored, strict=True) if ok]
        self.ids, self.seg = ids, seg
        if al is not None and ids:
            order = {sid: k for k, sid in enumerate(stored)}
            self.take = [order[i] for i in ids]
            self.al = al
        else:
            self.take, self.al = [], None
        self.words = self._words()
        self.fields = _labels(self)

    def column_vectors(self, name: str) -> list[np.ndarray]:
        rows = column_vectors(self.al.column(name)) if self.al is not None else []
        return [rows[k] for k in self.take]

    def column_lists(self, name: str, dtype: type = np.float32) -> list[np.ndarray]:
        rows = column_lists(self.al.column(name), dtype) if self.al is not None else []
        return [rows[k] for k in self.take]

    def _words(self) -> list[list[str]]:
        rows = self.al.column("words").to_pylist() if self.al is not None else []
        return [rows[k] for k in self.take]


def _labels(sp: _Split) -> dict[str, Any]:
    seg, ids, words = sp.seg, sp.ids, sp.words
    if not ids:
        return {"id": np.array([], dtype=object), "raw_text": np.array([], dtype=object),
                "regression_labels": np.zeros(0, np.float32), "emotion_labels": np.zeros((0, len(EMOTIONS)), np.float32),
                "sentiment_class": np.array([], dtype=object), "emotion_class": np.array([], dtype=object),
                "video_id": np.array([], dtype=object), "segment_start": np.zeros(0), "segment_end": np.zeros(0)}
    rows = seg.loc[ids]
    return {
        "id": np.array(ids, dtype=object),
        "raw_text": np.array([t if isinstance(t, str) else " ".join(w) for t, w in zip(rows["transcript"], words, strict=True)],
                             dtype=object),
        "regression_labels": rows["sentiment"].to_numpy(np.float32),
        "emotion_labels": rows[list(EMOTIONS)].to_numpy(np.float32, na_value=np.nan).reshape(-1, len(EMOTIONS)),
        "sentiment_class": np.array(rows["sentiment_class"].tolist(), dtype=object),
        "emotion_class": np.array(rows["emotion_class"].tolist(), dtype=object),
        "video_id": np.array(rows["video_id"].tolist(), dtype=object),
        "segment_start": rows["start"].to_numpy(np.float64, na_value=np.nan),
        "segment_end": rows["end"].to_numpy(np.float64, na_value=np.nan),
    }


def _utterance_rows(st: Store, split: str, name: str, ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """An utterance-level set as one-row sequences; coverage [1] where present, [0] (a zero row) where absent."""
    t = st.utterance(split, [name], ["segment_id"]) if st.files("utterance", split) else None
    dim = st.feature_sets[name].dim
    index, values, present = {}, np.zeros((0, dim), np.float32), np.zeros(0, bool)
    if t is not None:
        index = {sid: i for i, sid in enumerate(t.column("segment_id").to_pylist())}
        values = utterance_vectors(t.column(name))
        present = t.column(present_column(name)).to_numpy(zero_copy_only=False).astype(bool)
    rows, cov = [], []
    for sid in ids:
        i = index.get(sid)
        ok = i is not None and bool(present[i])
        rows.append(values[i : i + 1].astype(np.float32) if ok else np.zeros((1, dim), np.float32))
        cov.append(np.array([float(ok)], np.float32))
    return rows, cov


def _frame_rows(st: Store, split: str, name: str, ids: list[str]) -> list[np.ndarray]:
    if name not in st.frame_sets():
        raise StoreError(f"{st.path}: no frame-level table for {name!r}; build with --keep-frames or export "
                         "--layout aligned")
    dim = st.feature_sets[name].dim
    fr = st.frames(name, split, columns=["segment_id", "values"]) if st.files(f"frames/{name}", split) else None
    by_id = dict(zip(fr.column("segment_id").to_pylist(), column_vectors(fr.column("values")), strict=True)) if fr else {}
    rows = [by_id.get(i, np.zeros((0, dim), np.float32)) for i in ids]
    return [np.where(np.isfinite(r), r, 0.0).astype(np.float32) for r in rows]  # MMSA expects finite frames


def _modality_rows(st: Store, sp: _Split, split: str, mod: str, name: str, layout: str
                   ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Rows of one modality (one (n, D) array per segment) and their coverage where the store has it."""
    if name in st.utterance_sets():
        return _utterance_rows(st, split, name, sp.ids)
    if layout == "aligned" or mod == "text":
        return sp.column_vectors(name), sp.column_lists(coverage_column(name))
    return _frame_rows(st, split, name, sp.ids), None


def write_mmsa(
    store: str | os.PathLike,
    out_path: str | os.PathLike,
    text: str | None = None,
    audio: str | None = None,
    vision: str | None = None,
    layout: str = "aligned",
    seq_len: int | None = None,
    frame_len: int | None = None,
    bert_len: int | None = None,
    tokenizer: str | None = None,
    text_bert: bool = True,
) -> MmsaExport:
    """Write a store as MMSA's pickle; returns what was written and left out.

    Feature sets are chosen by name (default: the first text, audio and visual sets). `seq_len` / `frame_len`
    None: the longest sequence (nothing is cut); `bert_len` None: the aligned length L (MMSA's aligned BERT
    models add audio and vision per token position), else the longest tokenization. `tokenizer`: a local BERT
    tokenizer folder (default: the packaged MiniLM's, bert-base-uncased's vocabulary)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    st = Store(store)
    sets = _pick_sets(st, text, audio, vision)
    report = MmsaExport(Path(out_path), layout, sets=dict(sets))
    word_sets = [n for n in dict.fromkeys(sets.values()) if n is not None and n not in st.utterance_sets()]
    splits = {s: _Split(st, s, word_sets, report.unlabeled) for s in SPLITS}
    if not any(sp.ids for sp in splits.values()):
        raise StoreError(f"{st.path}: no segment has a sentiment score; MMSA trains on `regression_labels` "
                         f"({len(report.unlabeled)} segments without one)")
    rows = {s: {m: _modality_rows(st, sp, s, m, n, layout) for m, n in sets.items() if n is not None}
            for s, sp in splits.items()}
    longest = {m: max([len(r) for s in SPLITS for r in rows[s].get(m, ([], None))[0]] or [1]) for m in MODALITIES}
    if layout == "aligned":
        aligned_len = seq_len or max(longest.values())
        target = dict.fromkeys(MODALITIES, aligned_len)
    else:
        target = {"text": seq_len or longest["text"], "audio": frame_len or longest["audio"],
                  "vision": frame_len or longest["vision"]}
    tok = None
    if text_bert:
        tok, report.tokenizer = bert_tokens.load_tokenizer(tokenizer)
        if bert_len is None:
            every = [str(t) for sp in splits.values() for t in sp.fields["raw_text"]]
            bert_len = target["text"] if layout == "aligned" and word_sets else bert_tokens.longest(tok, every)
        report.lengths["text_bert"] = bert_len
    for mod, name in sets.items():
        if name is None:
            report.warnings.append(f"the store has no {STORE_MODALITY[mod]} feature set: '{mod}' is written as zeros "
                                   f"(dimension 1, length 1) so MMSA's loader finds it; models learn nothing from it")
    out: dict[str, dict[str, Any]] = {}
    for split, sp in splits.items():
        out[split] = _split_dict(st, sp, rows[split], sets, target, layout, tok, bert_len, report)
        report.segments[split] = len(sp.ids)
        if not sp.ids:
            report.warnings.append(f"split {split!r} is empty: MMSA's loader reads train, valid and test, and its "
                                   "trainers need rows in each")
    report.lengths.update({m: target[m] for m in MODALITIES})
    if report.unlabeled:
        report.warnings.append(f"{len(report.unlabeled)} segments without a sentiment score left out "
                               f"(e.g. {', '.join(report.unlabeled[:3])})")
    with atomic_path(report.path) as tmp, open(tmp, "wb") as f:
        pickle.dump(out, f, protocol=4)
    return report


def _split_dict(st: Store, sp: _Split, rows: dict[str, tuple[list[np.ndarray], Any]], sets: dict[str, str | None],
                target: dict[str, int], layout: str, tok: Any, bert_len: int | None, report: MmsaExport) -> dict[str, Any]:
    words = sp.words
    d = dict(sp.fields)
    word_level_text = sets["text"] is not None and sets["text"] not in st.utterance_sets()
    cut_at = target["text"] if word_level_text else None  # words are cut only with the text rows they go with
    d.update({
        "labels": dict(st.manifest.labels),
        "words": [w[:cut_at] for w in words],
        "word_start": [x[:cut_at] for x in sp.column_lists("word_start", np.float64)],
        "word_end": [x[:cut_at] for x in sp.column_lists("word_end", np.float64)],
        "text_lengths": [len(w[:cut_at]) for w in words],
        "feature_sets": {m: (st.feature_sets[n].to_dict() if n else None) for m, n in sets.items()},
        "aligned": layout == "aligned",
        "levels": {m: (st.feature_sets[n].level if n else None) for m, n in sets.items()},
    })
    for mod in MODALITIES:
        name = sets[mod]
        if name is None:
            d[mod] = np.zeros((len(sp.ids), target[mod] if layout == "aligned" else 1, 1), np.float32)
            d[f"{mod}_lengths"] = [1] * len(sp.ids)
            continue
        seqs, cov = rows[mod]
        d[mod], d[f"{mod}_lengths"], cut = _pad(seqs, target[mod], st.feature_sets[name].dim)
        if cov is not None:
            d[f"{mod}_coverage"] = [c[: target[mod]] for c in cov]
        if cut:
            report.truncated[mod] = report.truncated.get(mod, 0) + cut
    if tok is not None and bert_len is not None:
        d["text_bert"], cut = bert_tokens.text_bert(tok, [str(t) for t in d["raw_text"]], bert_len)
        if cut:
            report.truncated["text_bert"] = report.truncated.get("text_bert", 0) + cut
    return d


def export_mmsa(store: str | os.PathLike, out_path: str | os.PathLike, **options: Any) -> Path:
    """`write_mmsa` returning the path; its warnings (modalities written as zeros, segments left out) are
    issued as Python warnings."""
    report = write_mmsa(store, out_path, **options)
    for w in report.warnings:
        warnings.warn(w, stacklevel=2)
    return report.path
