"""A torch Dataset streamed from a feature store: memory is bounded by a row group, never by the store.

The aligned table is read one (file, row group) unit at a time; units are shuffled per epoch and dealt to
(rank, worker) slots so that every slot gets about the same number of rows, and rows pass a bounded shuffle
buffer. Labels come from the segments table (one small row per segment, read once) joined by segment_id.
Each modality's mask is "the word exists AND its coverage > 0", so words without usable frames are ignored.

Utterance-level sets (schema 2: one vector per segment) enter as a one-step sequence: x[m] is (1, D) and its
mask is the set's `__present` flag, so every model takes them beside word-level sets unchanged. They are read
once per split (one small row per segment, like the labels) and joined by segment_id; a store with only
utterance-level sets is streamed from its utterance table instead of the aligned one.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from feature_schemas import (
    EMOTIONS,
    Store,
    StoreError,
    column_lists,
    column_vectors,
    coverage_column,
    present_column,
    utterance_vectors,
)
from feature_schemas.reader import open_parquet
from feature_schemas.remote import reading
from feature_schemas.storage import is_url

from .tasks import TaskSpec
from .text_encoder import TOKEN_KEYS, encode_words, written_words


@dataclass(frozen=True)
class Unit:
    """A slice of one row group of one aligned file: the smallest piece one worker reads."""

    path: str  # a local path, or a key of the store's filesystem (s3://... stores: read in place, no local copy)
    row_group: int
    part: int  # which slice of the row group (row groups are split when there are too few to share out)
    parts: int
    rows: int


def _split_rows(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class SegmentLabels:
    """Every segment's labels for the tasks, as arrays indexed by segment id."""

    def __init__(self, store: Store, split: str, tasks: Sequence[TaskSpec]) -> None:
        cols = ["segment_id", "sentiment", *EMOTIONS, "sentiment_class", "emotion_class"]
        table = store.segments(split, columns=cols)
        ids = table.column("segment_id").to_pylist()
        self.index = {s: i for i, s in enumerate(ids)}
        self.values: dict[str, np.ndarray] = {}
        for t in tasks:
            if t.kind == "regression":
                self.values[t.name] = table.column(t.name).to_numpy(zero_copy_only=False).astype(np.float32)  # null -> NaN
            elif t.kind == "multilabel":
                inten = np.stack([table.column(e).to_numpy(zero_copy_only=False).astype(np.float32) for e in t.classes], axis=1)
                self.values[t.name] = np.where(np.isnan(inten), np.nan, (inten > 0).astype(np.float32))
            else:
                col = f"{t.name}_class"
                lookup = {c: i for i, c in enumerate(t.classes)}
                self.values[t.name] = np.array([lookup.get(v, -1) if v is not None else -1 for v in table.column(col).to_pylist()], np.int64)

    def get(self, segment_id: str) -> dict[str, np.ndarray]:
        i = self.index.get(segment_id)
        if i is None:
            raise KeyError(segment_id)
        return {k: v[i] for k, v in self.values.items()}


class UtteranceVectors:
    """Every segment's vectors of the utterance-level sets of one split, indexed by segment id."""

    def __init__(self, store: Store, split: str, feature_sets: Sequence[str]) -> None:
        table = store.utterance(split, feature_sets, ["segment_id"])
        self.index = {sid: i for i, sid in enumerate(table.column("segment_id").to_pylist())}
        self.values = {m: utterance_vectors(table.column(m)) for m in feature_sets}
        self.present = {m: table.column(present_column(m)).to_numpy(zero_copy_only=False).astype(bool) for m in feature_sets}
        self.dims = {m: store.feature_sets[m].dim for m in feature_sets}

    def get(self, segment_id: str, m: str) -> tuple[np.ndarray, np.ndarray]:
        """A one-step sequence (1, D) and its mask (1,); a segment without a row is absent (zeros, masked)."""
        i = self.index.get(segment_id)
        if i is None:
            return np.zeros((1, self.dims[m]), np.float32), np.zeros(1, bool)
        return self.values[m][i : i + 1], self.present[m][i : i + 1]


class StoreDataset(IterableDataset):
    """Streams (features, masks, labels) per segment of one split.

    `rank`/`world_size` shard across distributed processes and DataLoader workers shard further; with
    `shuffle` the unit order and a `shuffle_buffer` of rows change with `set_epoch`. `max_len` caps the words,
    dropping them from the end (`truncate="right"`, keep the beginning) or from the start (`"left"`).
    `store` may be a URL (`s3://bucket/prefix`): row groups are then read from object storage as they are needed."""

    def __init__(
        self,
        store: str | Path,
        split: str,
        feature_sets: Sequence[str],
        tasks: Sequence[TaskSpec],
        max_len: int | None = 50,
        truncate: str = "right",
        shuffle: bool = False,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        read_rows: int = 256,
        tokenizer: Any = None,
        text_set: str | None = None,
        max_tokens: int = 128,
    ) -> None:
        if truncate not in ("left", "right"):
            raise ValueError(f"truncate must be left or right, not {truncate!r}")
        self.store_path: str | Path = store if is_url(store) else Path(store)  # as given, to open (never shown)
        store_obj = Store(self.store_path)
        self.shown = store_obj.location  # a URL without credentials, for messages
        if split not in store_obj.splits():
            raise StoreError(f"{self.shown}: no {split!r} split (has: {', '.join(store_obj.splits()) or 'none'})")
        utterance_sets = set(store_obj.utterance_sets())
        self.word_sets = [m for m in feature_sets if m not in utterance_sets]
        self.utterance_sets = [m for m in feature_sets if m in utterance_sets]
        # word-level sets stream from the aligned table; a model on utterance-level sets alone, from the utterance table
        self.table = "aligned" if self.word_sets or not self.utterance_sets else "utterance"
        self.columns = store_obj.aligned_columns(self.word_sets, ["segment_id"])  # raises for a missing set
        self.utterance = UtteranceVectors(store_obj, split, self.utterance_sets) if self.utterance_sets else None
        if self.table == "utterance":
            self.columns = ["segment_id"]
        # text_encoder=finetune: the text set's vectors are not read; its words (as written) are tokenized instead
        self.tokenizer, self.text_set, self.max_tokens = tokenizer, text_set, max_tokens
        if tokenizer is not None:
            if text_set not in self.word_sets:
                raise StoreError(f"{self.shown}: a fine-tuned text encoder replaces a word-level text set, and "
                                 f"{text_set!r} is not one of the sets used ({', '.join(self.word_sets) or 'none'})")
            has_written = "words_written" in store_obj._aligned_columns()
            self.columns = [c for c in self.columns if c != text_set] + ["words"] + (["words_written"] if has_written else [])
        self.split, self.feature_sets, self.tasks = split, list(feature_sets), list(tasks)
        self.max_len, self.truncate = max_len, truncate
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, shuffle_buffer, seed
        self.rank, self.world_size, self.read_rows = rank, world_size, read_rows
        self.epoch = 0
        self.labels = SegmentLabels(store_obj, split, tasks)
        self._footers: dict[str, Any] = {}  # path -> FileMetaData, per process (see _file); never pickled
        self._footers_pid = os.getpid()
        self.row_groups = [  # footers only: one small ranged read per file of a URL store, kept for reading
            (str(p), rg, md.row_group(rg).num_rows)
            for p in store_obj.files(self.table, split)
            for md in [self._file(str(p)).metadata]
            for rg in range(md.num_row_groups)
        ]
        self.num_rows = sum(n for _, _, n in self.row_groups)

    def __getstate__(self) -> dict[str, Any]:
        """Spawned DataLoader workers and pickles get no footers: each process reads its own (`_file`)."""
        return {**self.__dict__, "_footers": {}}

    def _file(self, path: str) -> Any:
        """One of the split's files opened for reading one unit. Its footer is read once per process and kept
        (FileMetaData, small): every unit of every epoch opens the file with it, so no footer is parsed (nor, at
        a URL, fetched) again. The reader itself is fresh per unit: a ParquetFile kept open across units read
        measurably slower here. A forked worker has another process id and reads its own footers."""
        if self._footers_pid != os.getpid():
            self._footers, self._footers_pid = {}, os.getpid()
        md = self._footers.get(path)
        pf = open_parquet(self.store_path, path, metadata=md)
        if md is None:
            self._footers[path] = pf.metadata
        return pf

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # -- sharding ------------------------------------------------------------------------------
    def units(self, slots: int) -> list[Unit]:
        """Row groups, split into slices when there are fewer than 4 per slot (small stores, many workers)."""
        parts = max(1, math.ceil(4 * slots / max(1, len(self.row_groups))))
        out = []
        for path, rg, n in self.row_groups:
            k = min(parts, n)
            out += [Unit(path, rg, i, k, r) for i, r in enumerate(_split_rows(n, k))]
        return out

    def assignment(self, num_workers: int) -> list[list[Unit]]:
        """Units per (rank, worker) slot for this epoch: shuffled (same order on every rank), then each unit to the
        slot with the fewest rows so far, so slots differ by at most one unit's rows."""
        slots = self.world_size * max(1, num_workers)
        units = self.units(slots)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(units))
            units = [units[i] for i in order]
        load = [0] * slots
        out: list[list[Unit]] = [[] for _ in range(slots)]
        for u in units:
            s = min(range(slots), key=lambda i: (load[i], i))
            out[s].append(u)
            load[s] += u.rows
        return out

    def batches_per_epoch(self, batch_size: int, num_workers: int, rank: int | None = None) -> int:
        """Batches a DataLoader over this dataset yields on `rank` (each worker ends with its own partial batch)."""
        rank = self.rank if rank is None else rank
        slots = self.assignment(num_workers)
        w = max(1, num_workers)
        return sum(math.ceil(sum(u.rows for u in slots[rank * w + i]) / batch_size) for i in range(w))

    def min_batches_per_epoch(self, batch_size: int, num_workers: int) -> int:
        """The fewest batches any rank gets: every rank stops there so distributed steps stay in lock-step."""
        return min(self.batches_per_epoch(batch_size, num_workers, r) for r in range(self.world_size))

    # -- reading -------------------------------------------------------------------------------
    def _read_unit(self, u: Unit) -> Iterator[dict[str, Any]]:
        # a URL store: storage errors mid-epoch (endpoint gone, object removed) become a StoreError naming the store
        with reading(self.store_path) if is_url(self.store_path) else contextlib.nullcontext():
            yield from self._read_rows(u)

    def _read_rows(self, u: Unit) -> Iterator[dict[str, Any]]:
        pf = self._file(u.path)
        sizes = _split_rows(pf.metadata.row_group(u.row_group).num_rows, u.parts)
        skip, take = sum(sizes[: u.part]), sizes[u.part]
        seen = 0
        # a store resumed across schema 2.0 and 2.1 has files with and without the optional words_written
        columns = [c for c in self.columns if c != "words_written" or c in pf.schema_arrow.names]
        batches = pf.iter_batches(batch_size=self.read_rows, row_groups=[u.row_group], columns=columns)
        try:
            for batch in batches:
                lo, hi = max(skip - seen, 0), min(skip + take - seen, batch.num_rows)
                seen += batch.num_rows
                if hi > lo:
                    yield from self._rows(batch.slice(lo, hi - lo))
                if seen >= skip + take:
                    break
        finally:  # a reader left suspended on a kept ParquetFile slows every later read of that file
            batches.close()

    def _rows(self, batch: Any) -> Iterator[dict[str, Any]]:
        ids = batch.column("segment_id").to_pylist()
        tok_set = self.text_set if self.tokenizer is not None else None
        vecs = {m: column_vectors(batch.column(m)) for m in self.word_sets if m != tok_set}
        written = written_words(batch) if tok_set else None
        covs = {m: column_lists(batch.column(coverage_column(m))) for m in self.word_sets}
        for i, sid in enumerate(ids):
            try:
                labels = self.labels.get(sid)
            except KeyError:
                raise StoreError(f"{self.shown}: aligned row {sid!r} has no row in the segments table ({self.split})") from None
            x, mask, tokens = {}, {}, None
            for m in self.feature_sets:
                if self.utterance is not None and m in self.utterance.values:
                    x[m], mask[m] = self.utterance.get(sid, m)  # a one-step sequence
                    continue
                c = covs[m][i]
                v = vecs[m][i] if m != tok_set else np.asarray(written[i], dtype=object)  # type: ignore[index]
                if self.max_len is not None and len(v) > self.max_len:
                    sl = slice(0, self.max_len) if self.truncate == "right" else slice(len(v) - self.max_len, len(v))
                    v, c = v[sl], c[sl]
                if m == tok_set:  # zero-width placeholder: the model fills in the encoder's pooled vectors
                    tokens = encode_words(self.tokenizer, [str(w) for w in v], self.max_tokens)
                    v = np.zeros((len(v), 0), np.float32)
                # a copy, not a view: a view would keep its whole Arrow batch alive in the shuffle buffer, and the
                # allocator's purging and re-faulting of those batches cost more than the copy (bench/loader_speed.py)
                x[m] = np.array(v, dtype=np.float32)
                mask[m] = c > 0
            row = {"segment_id": sid, "x": x, "mask": mask, "labels": labels}
            if tokens is not None:
                row["tokens"] = (*tokens, int(self.tokenizer.pad_token_id or 0))
            yield row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        slot = self.rank * nw + wid
        units = self.assignment(nw)[slot]
        if not self.shuffle:
            for u in units:
                yield from self._read_unit(u)
            return
        rng = np.random.default_rng([self.seed, self.epoch, slot, 1])
        buf: list[dict[str, Any]] = []
        for u in units:
            for row in self._read_unit(u):
                if len(buf) < self.shuffle_buffer:
                    buf.append(row)
                    continue
                j = int(rng.integers(len(buf)))
                buf[j], row = row, buf[j]
                yield row
        rng.shuffle(buf)  # type: ignore[arg-type]
        yield from buf


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad every modality to the longest segment in the batch (at least one step) and stack labels."""
    mods = list(samples[0]["x"])
    B = len(samples)
    x, mask = {}, {}
    for m in mods:
        T = max(1, max(len(s["x"][m]) for s in samples))
        D = samples[0]["x"][m].shape[1]
        xm = np.zeros((B, T, D), np.float32)
        mm = np.zeros((B, T), bool)
        for i, s in enumerate(samples):
            n = len(s["x"][m])
            xm[i, :n] = s["x"][m]
            mm[i, :n] = s["mask"][m]
        x[m], mask[m] = torch.from_numpy(xm), torch.from_numpy(mm)
    if "tokens" in samples[0]:  # text_encoder=finetune: sub-word ids, attention mask, word index per sub-word
        L = max(len(s["tokens"][0]) for s in samples)
        ids = np.full((B, L), samples[0]["tokens"][2], np.int64)
        att = np.zeros((B, L), np.int64)
        wid = np.full((B, L), -1, np.int64)
        for i, s in enumerate(samples):
            n = len(s["tokens"][0])
            ids[i, :n], att[i, :n], wid[i, :n] = s["tokens"][0], 1, s["tokens"][1]
        for k, a in zip(TOKEN_KEYS, (ids, att, wid), strict=True):
            x[k] = torch.from_numpy(a)
    labels = {k: torch.from_numpy(np.stack([np.asarray(s["labels"][k]) for s in samples])) for k in samples[0]["labels"]}
    return {"segment_id": [s["segment_id"] for s in samples], "x": x, "mask": mask, "labels": labels}


def make_loader(dataset: StoreDataset, batch_size: int, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )


def feature_stats(store: str | Path, split: str, feature_sets: Sequence[str], batch_size: int = 512) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Mean and standard deviation per dimension over the covered words of a split, streamed in batches.

    Dimensions that never vary get std 1 so standardising leaves them at 0."""
    return feature_stats_and_coverage(store, split, feature_sets, batch_size)[0]


def feature_stats_and_coverage(
    store: str | Path, split: str, feature_sets: Sequence[str], batch_size: int = 512,
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """`feature_stats` and, per feature set, how many words of the split it covers (one pass over the split):
    training leaves out a set that covers no word, since the model could learn nothing from it."""
    s = Store(store)
    in_utterance = set(s.utterance_sets())
    utterance_sets = [m for m in feature_sets if m in in_utterance]
    word_sets = [m for m in feature_sets if m not in utterance_sets]
    acc = {m: [0.0, None, None] for m in feature_sets}  # count, sum, sum of squares (float64)
    if utterance_sets:  # one vector per present segment
        u = UtteranceVectors(s, split, utterance_sets)
        for m in utterance_sets:
            v = u.values[m][u.present[m]].astype(np.float64)
            acc[m] = [float(len(v)), v.sum(0), (v * v).sum(0)]
    batches = s.iter_batches("aligned", split, columns=["segment_id"], feature_sets=word_sets, batch_size=batch_size) if word_sets else []
    for batch in batches:
        for m in word_sets:
            col = batch.column(m)
            flat = col.values.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.value_type.list_size)
            off = col.offsets.to_numpy()
            flat = flat[off[0] : off[-1]].astype(np.float64)
            cov = batch.column(coverage_column(m)).values.to_numpy(zero_copy_only=False)
            coff = batch.column(coverage_column(m)).offsets.to_numpy()
            keep = cov[coff[0] : coff[-1]] > 0
            v = flat[keep]
            a = acc[m]
            a[0] += len(v)
            a[1] = v.sum(0) if a[1] is None else a[1] + v.sum(0)
            a[2] = (v * v).sum(0) if a[2] is None else a[2] + (v * v).sum(0)
    out = {}
    covered = {m: int(a[0]) for m, a in acc.items()}
    for m, (n, s1, s2) in acc.items():
        dim = s.feature_sets[m].dim
        if not n:
            out[m] = (np.zeros(dim, np.float32), np.ones(dim, np.float32))
            continue
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        std = np.sqrt(var)
        std = np.where(std < 1e-6 * np.maximum(1.0, np.abs(mean)), 1.0, std)
        out[m] = (mean.astype(np.float32), std.astype(np.float32))
    return out, covered


def video_groups(store: str | Path, split: str, segment_ids: Sequence[str]) -> list[list[int]]:
    """Rows grouped by the segments table's `video_id`, each video's utterances ordered by start (then id);
    videos in id order. Context models see a video's utterances together, so a batch holds whole videos."""
    table = Store(store).segments(split, columns=["segment_id", "video_id", "start"])
    info = {s: (v, st) for s, v, st in zip(table.column("segment_id").to_pylist(), table.column("video_id").to_pylist(),
                                          table.column("start").to_pylist(), strict=True)}
    groups: dict[str, list[tuple[float, str, int]]] = {}
    for i, sid in enumerate(segment_ids):
        vid, start = info.get(sid, (sid, None))
        groups.setdefault(str(vid), []).append((math.inf if start is None else float(start), _utterance_key(sid), i))
    return [[i for *_, i in sorted(rows)] for _, rows in sorted(groups.items())]


def _utterance_key(sid: str) -> str:
    """Ids ending in a number sort by that number (`v_2` before `v_10`)."""
    head, _, num = sid.rpartition("_")
    return f"{head}_{int(num):09d}" if num.isdigit() else sid


class VideoLoader:
    """Batches of whole videos over a split (context=true): each batch is `collate` of its videos' rows, video
    after video, with `videos` (the row indices of each video in the batch). `batch_size` counts segments: a
    batch holds about batch_size / (mean segments per video) videos. Reads the split once (utterance-level
    stores are small) and shuffles the video order per epoch when `shuffle`."""

    def __init__(self, dataset: StoreDataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        self.rows = list(dataset)
        self.batch_size = batch_size
        self.groups = video_groups(dataset.store_path, dataset.split, [r["segment_id"] for r in self.rows])
        n_videos = max(1, len(self.groups))
        self.per_batch = max(1, round(batch_size * n_videos / max(1, len(self.rows))))
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    @property
    def mean_segments_per_video(self) -> float:
        return len(self.rows) / max(1, len(self.groups))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.per_batch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = np.arange(len(self.groups))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 2]).permutation(len(self.groups))
        for b in range(0, len(order), self.per_batch):
            chosen = [self.groups[j] for j in order[b : b + self.per_batch]]
            batch = collate([self.rows[i] for rows in chosen for i in rows])
            videos, at = [], 0
            for rows in chosen:
                videos.append(list(range(at, at + len(rows))))
                at += len(rows)
            batch["videos"] = videos
            yield batch
