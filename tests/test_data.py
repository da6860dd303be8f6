"""The store-backed Dataset: every segment once, labels joined right, masks from coverage, truncation,
sharding over ranks and workers, and stores written by the real store writer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from feature_schemas import EMOTIONS, Manifest, Store, StoreError, column_lists, column_vectors, sha256_file
from mmolre.data import StoreDataset, collate, feature_stats, make_loader
from mmolre.tasks import EMOTION_CLASSES, SENTIMENT_CLASSES, TaskSpec, infer_tasks
from tests.store_fixtures import one_torch_thread, synthetic_store, writer_store  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def mosei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("mosei"), "mosei", sizes={"train": 60, "valid": 10, "test": 10}, rows_per_shard=20, row_group_rows=7)


def test_each_segment_once_with_its_labels_and_masks(mosei: Path) -> None:
    store = Store(mosei)
    tasks = infer_tasks(store)
    ds = StoreDataset(mosei, "train", ["text", "audio"], tasks, max_len=None)
    rows = list(ds)
    assert sorted(r["segment_id"] for r in rows) == sorted(store.segments("train").column("segment_id").to_pylist())
    seg = store.segments("train").to_pandas().set_index("segment_id")
    for r in rows[:15]:
        ref = store.segment(r["segment_id"], ["text", "audio"])
        assert np.array_equal(r["x"]["audio"], ref["audio"])
        assert np.array_equal(r["mask"]["audio"], ref["audio__coverage"] > 0)
        assert r["mask"]["text"].all()
        assert r["labels"]["sentiment"] == pytest.approx(seg.loc[r["segment_id"], "sentiment"])
        assert r["labels"]["emotion"].tolist() == [float(seg.loc[r["segment_id"], e] > 0) for e in EMOTIONS]
    assert any(not r["mask"]["audio"].all() for r in rows)  # the fixture has uncovered audio words


def test_rows_own_their_vectors_so_the_shuffle_buffer_pins_no_arrow_batch(mosei: Path) -> None:
    """A row's vectors were views into the Arrow batch it came from: the shuffle buffer kept up to a buffer's
    worth of whole batches alive, and the allocator's purging and re-faulting of them made the loader 1.65x a plain
    scan (bench/loader_speed.py); a row now holds copies."""
    ds = StoreDataset(mosei, "train", ["text", "audio"], infer_tasks(Store(mosei)), shuffle=True)
    for r in list(ds)[:10]:
        for m in ("text", "audio"):
            assert r["x"][m].flags.owndata and r["x"][m].base is None and r["x"][m].dtype == np.float32


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_keeps_the_right_words(mosei: Path, side: str) -> None:
    store = Store(mosei)
    ds = StoreDataset(mosei, "train", ["text"], infer_tasks(store), max_len=4, truncate=side)
    for r in ds:
        full = store.segment(r["segment_id"], ["text"])["text"]
        expected = full[:4] if side == "right" else full[-4:]
        assert np.array_equal(r["x"]["text"], expected)


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 0), (2, 2), (3, 1)])
def test_shards_cover_the_split_once_and_batch_counts_are_known(mosei: Path, world: int, workers: int) -> None:
    tasks = infer_tasks(Store(mosei))
    seen: list[str] = []
    for rank in range(world):
        ds = StoreDataset(mosei, "train", ["text", "audio"], tasks, shuffle=True, shuffle_buffer=5, rank=rank, world_size=world)
        ds.set_epoch(1)
        batches = list(make_loader(ds, 4, num_workers=workers))
        assert len(batches) == ds.batches_per_epoch(4, workers)
        seen += [s for b in batches for s in b["segment_id"]]
    assert sorted(seen) == sorted(Store(mosei).segments("train").column("segment_id").to_pylist())


def test_shuffling_changes_with_the_epoch_and_repeats_with_the_seed(mosei: Path) -> None:
    tasks = infer_tasks(Store(mosei))

    def order(epoch: int, seed: int = 0) -> list[str]:
        ds = StoreDataset(mosei, "train", ["text"], tasks, shuffle=True, shuffle_buffer=8, seed=seed)
        ds.set_epoch(epoch)
        return [r["segment_id"] for r in ds]

    assert order(0) == order(0)
    assert order(0) != order(1) and sorted(order(0)) == sorted(order(1))
    assert order(0, seed=1) != order(0)


def test_collate_pads_and_stacks(mosei: Path) -> None:
    ds = StoreDataset(mosei, "valid", ["text", "audio"], infer_tasks(Store(mosei)))
    rows = list(ds)[:5]
    b = collate(rows)
    T = max(len(r["x"]["text"]) for r in rows)
    assert b["x"]["text"].shape == (5, T, 16) and b["mask"]["audio"].shape == (5, T)
    for i, r in enumerate(rows):
        n = len(r["x"]["text"])
        assert not b["mask"]["text"][i, n:].any() and (b["x"]["text"][i, n:] == 0).all()
    assert b["labels"]["emotion"].shape == (5, 6)


def test_class_labels_from_meld_style_columns(tmp_path: Path) -> None:
    root = synthetic_store(tmp_path, "meld", sizes={"train": 30, "valid": 5, "test": 5})
    store = Store(root)
    tasks = infer_tasks(store)
    assert tasks == (TaskSpec("sentiment", "multiclass", SENTIMENT_CLASSES), TaskSpec("emotion", "multiclass", EMOTION_CLASSES))
    seg = store.segments("train").to_pandas().set_index("segment_id")
    for r in StoreDataset(root, "train", ["text"], tasks):
        assert SENTIMENT_CLASSES[r["labels"]["sentiment"]] == seg.loc[r["segment_id"], "sentiment_class"]
        assert EMOTION_CLASSES[r["labels"]["emotion"]] == seg.loc[r["segment_id"], "emotion_class"]


def test_task_inference_and_overrides(tmp_path: Path) -> None:
    mosi = Store(synthetic_store(tmp_path / "mosi", "mosi", sizes={"train": 8, "valid": 4, "test": 4}))
    assert infer_tasks(mosi) == (TaskSpec("sentiment", "regression"),)
    with pytest.raises(StoreError, match="no emotion labels"):
        infer_tasks(mosi, tasks=["emotion"])
    with pytest.raises(StoreError, match="no sentiment labels"):
        infer_tasks(mosi, sentiment="classes", tasks=["sentiment"])
    with pytest.raises(ValueError, match="unknown task"):
        infer_tasks(mosi, tasks=["arousal"])


def test_store_writer_output_with_empty_segments(tmp_path: Path) -> None:
    root = writer_store(tmp_path / "store")
    store = Store(root)
    sets = store.aligned_sets()
    tasks = infer_tasks(store)
    ds = StoreDataset(root, "train", sets, tasks)
    rows = list(ds)
    assert len(rows) == store.segments("train").num_rows
    empty = [r for r in rows if len(r["x"]["text_vec"]) == 0]
    assert empty, "the writer fixture has segments without words"
    b = collate(empty)
    assert b["x"]["text_vec"].shape[1] == 1 and not b["mask"]["text_vec"].any()
    # words whose face frames were all invalid are masked out of face_geo only
    aligned = store.aligned("train", ["face_geo"])
    cov = column_lists(aligned.column("face_geo__coverage"))
    by_id = dict(zip(aligned.column("segment_id").to_pylist(), cov, strict=True))
    for r in rows:
        assert np.array_equal(r["mask"]["face_geo"], by_id[r["segment_id"]] > 0)


def test_feature_stats_match_numpy_over_covered_words(mosei: Path) -> None:
    stats = feature_stats(mosei, "train", ["audio"], batch_size=7)
    t = Store(mosei).aligned("train", ["audio"])
    vecs = np.concatenate(column_vectors(t.column("audio")))
    cov = np.concatenate(column_lists(t.column("audio__coverage")))
    covered = vecs[cov > 0].astype(np.float64)
    assert np.allclose(stats["audio"][0], covered.mean(0), rtol=1e-5, atol=1e-5)
    assert np.allclose(stats["audio"][1], covered.std(0), rtol=1e-4)


def test_errors_name_the_store_and_the_problem(mosei: Path, tmp_path: Path) -> None:
    tasks = infer_tasks(Store(mosei))
    with pytest.raises(StoreError, match="no word-aligned feature set 'covarep'"):
        StoreDataset(mosei, "train", ["covarep"], tasks)
    # an aligned row whose segment row is missing
    root = synthetic_store(tmp_path / "broken", "mosei", sizes={"train": 6, "valid": 2, "test": 2})
    part = next((root / "segments" / "train").glob("*.parquet"))
    table = pq.read_table(part)
    dropped = table.column("segment_id")[0].as_py()
    pq.write_table(table.slice(1), part)
    manifest = Manifest.load(root)  # a store made that way (readers refuse a file changed after its manifest)
    rel = part.relative_to(root).as_posix()
    manifest.files[rel] = replace(manifest.files[rel], sha256=sha256_file(part), bytes=part.stat().st_size)
    manifest.save(root)
    with pytest.raises(StoreError, match=rf"{dropped}.*no row in the segments table"):
        list(StoreDataset(root, "train", ["text"], tasks))


def test_footers_are_read_once_per_process_and_not_pickled(mosei: Path) -> None:
    """Each file's footer is read once per process: every unit of every epoch opens its file with the kept
    FileMetaData; a pickled copy (a spawned worker) and forked workers read their own."""
    import pickle

    ds = StoreDataset(mosei, "train", ["text", "audio"], infer_tasks(Store(mosei)), shuffle=True, seed=1)
    footers = dict(ds._footers)
    assert set(footers) == {str(p) for p in Store(mosei).files("aligned", "train")} and len(ds.units(1)) > len(footers)
    for epoch in range(2):
        ds.set_epoch(epoch)
        assert len(list(ds)) == ds.num_rows == 60
    assert {p: id(f) for p, f in ds._footers.items()} == {p: id(f) for p, f in footers.items()}
    assert all(ds._file(p).metadata.equals(md) for p, md in footers.items())
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._footers == {} and sorted(r["segment_id"] for r in clone) == sorted(r["segment_id"] for r in ds)
    assert sum(len(b["segment_id"]) for b in make_loader(ds, 8, num_workers=2)) == 60
