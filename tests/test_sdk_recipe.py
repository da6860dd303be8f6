"""The CMU-MOSEI/MOSI recipe end to end: .csd files written by the SDK -> a valid store with the drop report."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.csd_fixtures import (
    NO_FOLD,
    TEST_C,
    TRAIN_A,
    TRAIN_B,
    covarep_values,
    damage_entry,
    glove_vector,
    write_mosei_fixture,
)
from feature_schemas import EMOTIONS, Store, validate
from pipelines.errors import PipelineError
from pipelines.folds import standard_folds
from pipelines.recipes.sdk import build_sdk, sdk_units
from pipelines.stages.csd import process_csd_unit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    return folder


@pytest.fixture(scope="module")
def store(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "mosei"
    result = build_sdk(fixture_dir, out, "mosei", mode="mean", progress=False)
    assert result.n_failures == 0
    return out


def test_store_validates_and_holds_the_labelled_segments(store: Path) -> None:
    report = validate(store)
    assert report.ok, str(report)
    st = Store(store)
    assert set(st.feature_sets) == {"covarep", "facet42", "glove"}
    seg = st.segments().to_pandas().set_index("segment_id")
    # The no-fold video is left out; the others keep every label interval, keyed video_id[i].
    assert sorted(seg.index) == sorted([f"{TRAIN_A}[0]", f"{TRAIN_A}[1]", f"{TRAIN_B}[0]", f"{TEST_C}[0]", f"{TEST_C}[1]"])
    assert seg.loc[f"{TEST_C}[0]", "split"] == "test" and seg.loc[f"{TRAIN_B}[0]", "split"] == "train"
    assert seg.loc[f"{TRAIN_A}[0]", "transcript"] == "hello world"
    assert seg.loc[f"{TRAIN_A}[1]", "transcript"] == "this is fine"
    assert seg.loc[f"{TRAIN_A}[0]", "start"] == 0.5 and seg.loc[f"{TRAIN_A}[0]", "end"] == 3.0
    assert seg["source"].unique().tolist() == ["mosei-csd"]
    assert seg[list(EMOTIONS)].notna().all().all()


def test_report_counts_the_release_faults(store: Path) -> None:
    report = Store(store).manifest.report
    assert report["labelled_videos_in_no_fold"] == [NO_FOLD]
    assert report["n_ids_missing"] == {"words": 0, "covarep": 0, "facet42": 1, "glove": 0}
    assert report["ids_missing"]["facet42"] == [TEST_C]
    folds = standard_folds("mosei")
    assert report["n_fold_ids_without_labels"] == {"train": len(folds["train"]) - 2, "valid": len(folds["valid"]),
                                                   "test": len(folds["test"]) - 1}
    c = report["counters"]
    assert c["nonfinite_values.covarep"] == 3  # the three -inf cells inside labelled segments
    assert c["nonfinite_frames.covarep"] == 3
    assert c["segments_missing.facet42"] == 2
    assert c["silence_tokens_dropped"] == 3  # sp, sp, sil in the three fold videos
    assert c["glove_word_level_segments"] == 5
    assert report["segments"] == 5 and report["failures"] == 0


def test_word_vectors_equal_a_hand_computation(store: Path) -> None:
    seg = Store(store).segment(f"{TRAIN_A}[0]", ["covarep", "facet42", "glove"])
    assert seg["words"] == ["hello", "world"]
    np.testing.assert_array_equal(seg["word_start"], [1.0, 1.5])
    # "hello" spans [1.0, 1.5]: COVAREP frames 100..149 (10 ms each); frame 120 holds -inf and is left out.
    _, values = covarep_values(TRAIN_A)
    rows = [k for k in range(100, 150) if k != 120]
    np.testing.assert_allclose(seg["covarep"][0], values[rows].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert seg["covarep__coverage"][0] == pytest.approx(0.98)
    # GloVe rows match the word intervals, so they are taken per word as they are.
    np.testing.assert_array_equal(seg["glove"][1], glove_vector("world"))
    assert seg["glove__coverage"].tolist() == [1.0, 1.0]
    # FACET is missing for the test video: its words carry coverage 0.
    missing = Store(store).segment(f"{TEST_C}[0]", ["facet42"])
    assert missing["words"] == ["bad", "acting"] and missing["facet42__coverage"].tolist() == [0.0, 0.0]


def test_glove_off_the_word_times_is_collapsed_as_frames(fixture_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "csd"
    folder.mkdir()
    for p in fixture_dir.glob("*.csd"):
        if "Glove" not in p.name:
            (folder / p.name).symlink_to(p)
    with h5py.File(fixture_dir / "CMU_MOSEI_TimestampedGloveVectors.csd", "r") as src, \
            h5py.File(folder / "CMU_MOSEI_TimestampedGloveVectors.csd", "w") as dst:
        src.copy(src["glove_vectors"], dst, "glove_vectors")
        ivs = dst["glove_vectors/data"][TRAIN_A]["intervals"]
        ivs[...] = ivs[()] + 0.05  # GloVe rows 50 ms late: no longer the words' intervals
    result = build_sdk(folder, tmp_path / "store", "mosei", sets=["glove"], mode="mean", progress=False)
    assert result.n_failures == 0 and validate(tmp_path / "store").ok
    c = Store(tmp_path / "store").manifest.report["counters"]
    assert c["glove_frame_level_segments"] == 2 and c["glove_word_level_segments"] == 3
    seg = Store(tmp_path / "store").segment(f"{TRAIN_A}[0]", ["glove"])
    # "hello" [1.0, 1.5] overlaps only the GloVe row "hello" [1.05, 1.55] (the next row starts at 1.55).
    np.testing.assert_allclose(seg["glove"][0], glove_vector("hello"), rtol=1e-6)
    # "world" [1.5, 2.2] overlaps "hello" [1.05, 1.55] by 50 ms and "world" [1.55, 2.25] by 650 ms: their mean.
    np.testing.assert_allclose(seg["glove"][1], (glove_vector("hello") + glove_vector("world")) / 2, rtol=1e-5, atol=1e-6)


def test_units_change_with_their_inputs(fixture_dir: Path) -> None:
    units, _, sets, _ = sdk_units(fixture_dir, "mosei", batch_videos=2)
    assert [len(u.payload.videos) for u in units] == [2, 1]
    again, _, _, _ = sdk_units(fixture_dir, "mosei", batch_videos=2)
    assert [u.key for u in units] == [u.key for u in again]
    cov = fixture_dir / "CMU_MOSEI_COVAREP.csd"
    st = cov.stat()
    os.utime(cov, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        touched, _, _, _ = sdk_units(fixture_dir, "mosei", batch_videos=2)
    finally:
        os.utime(cov, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert all(a.key != b.key for a, b in zip(units, touched, strict=True))
    only, options, sets, _ = sdk_units(fixture_dir, "mosei", sets=["covarep"])
    assert [fs.name for fs in sets] == ["covarep"] and only[0].key not in {u.key for u in units}
    result = process_csd_unit(only[0], options)
    assert not result.failures and set(result.records[0].frames) == {"covarep"}


def test_custom_folds_and_clear_errors(fixture_dir: Path, tmp_path: Path) -> None:
    units, _, _, report = sdk_units(fixture_dir, "mosei", folds={"train": [TRAIN_A, NO_FOLD], "test": ["absent"]})
    videos = {v: i.split for u in units for v, i in u.payload.videos.items()}
    assert videos == {TRAIN_A: "train", NO_FOLD: "train"}
    assert report["fold_ids_without_labels"]["test"] == ["absent"]
    with pytest.raises(PipelineError, match="openface2"):
        sdk_units(fixture_dir, "mosei", sets=["openface2"])
    empty = tmp_path / "no_labels"
    empty.mkdir()
    (empty / "CMU_MOSEI_COVAREP.csd").symlink_to(fixture_dir / "CMU_MOSEI_COVAREP.csd")
    with pytest.raises(PipelineError, match="no label sequence"):
        sdk_units(empty, "mosei")


def test_real_mosi_labels_build(tmp_path: Path) -> None:
    labels, table = DATA / "mosi" / "CMU_MOSI_Opinion_Labels.csd", DATA / "mosi" / "label.csv"
    if not labels.is_file() or not table.is_file():
        pytest.skip(f"real MOSI data not found under {DATA / 'mosi'}")
    folder = tmp_path / "mosi"
    folder.mkdir()
    (folder / labels.name).symlink_to(labels)  # a link, never a copy of the data
    result = build_sdk(folder, tmp_path / "store", "mosi", progress=False)
    assert result.n_segments == 2199 and result.n_failures == 0
    assert validate(tmp_path / "store").ok
    st = Store(tmp_path / "store")
    seg = st.segments().to_pandas()
    assert seg[list(EMOTIONS)].isna().all().all()  # MOSI has no emotion labels
    assert st.manifest.report["n_labelled_videos_in_no_fold"] == 0
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    by_clip = {f"{v}_{int(i) + 1}": (s, sp) for v, i, s, sp in zip(
        seg.video_id, seg.segment_id.str.extract(r"\[(\d+)\]$")[0], seg.sentiment, seg.split, strict=True)}
    compared = 0
    for r in rows:
        if r["id"] in by_clip:
            compared += 1
            sentiment, split = by_clip[r["id"]]
            assert sentiment == pytest.approx(float(r["label"]), abs=1e-5), r["id"]
            assert split == {"dev": "valid"}.get(r["mode"], r["mode"]), r["id"]  # label.csv says dev for valid
    assert compared == 2195


def _damaged_copy(fixture_dir: Path, tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "csd"
    folder.mkdir()
    paths = {}
    for src in fixture_dir.glob("*.csd"):
        (folder / src.name).write_bytes(src.read_bytes())
        paths[src.stem] = folder / src.name
    return paths


def test_damaged_intervals_are_failure_rows_or_counted(fixture_dir: Path, store: Path, tmp_path: Path) -> None:
    """Label intervals that are NaN, reversed or absurdly long fail their segment only; frames and words with
    such intervals (or one spanning [-1e300, 1e300]) are dropped and counted instead of masking the video."""
    p = _damaged_copy(fixture_dir, tmp_path)
    damage_entry(p["CMU_MOSEI_Labels"], TRAIN_B, {0: (np.nan, 4.0)})
    damage_entry(p["CMU_MOSEI_Labels"], TEST_C, {1: (5.0, 2.5)})
    damage_entry(p["CMU_MOSEI_Labels"], TRAIN_A, {1: (3.0, 1e300)})
    damage_entry(p["CMU_MOSEI_COVAREP"], TRAIN_A, {0: (-1e300, 1e300), 100: (np.nan, 1.01), 150: (1.6, 1.5)})
    damage_entry(p["CMU_MOSEI_TimestampedWords"], TEST_C, {2: (-1e300, 1e300)})  # "really": midpoint 0, in [0, 2]
    out = tmp_path / "store"
    result = build_sdk(p["CMU_MOSEI_Labels"].parent, out, "mosei", mode="mean", progress=False)
    st = Store(out)
    assert validate(out).ok
    failures = {f["item_id"]: f["reason"] for f in st.failures().to_pylist()}
    assert set(failures) == {f"{TRAIN_B}[0]", f"{TEST_C}[1]", f"{TRAIN_A}[1]"} and result.n_failures == 3
    assert "is not finite" in failures[f"{TRAIN_B}[0]"] and "ends before it starts" in failures[f"{TEST_C}[1]"]
    assert "longer than any video's span" in failures[f"{TRAIN_A}[1]"]
    assert all("CMU_MOSEI_Labels.csd" in r for r in failures.values())
    counters = st.manifest.report["counters"]
    assert counters["intervals_dropped.covarep.beyond_span"] == 1
    assert counters["intervals_dropped.covarep.nonfinite"] == 1 and counters["intervals_dropped.covarep.reversed"] == 1
    assert counters["intervals_dropped.words.beyond_span"] == 1 and counters["segments_bad_interval"] == 3
    # The rest is what a clean build gives: the damaged frames are gone, not the video.
    clean, got = Store(store).segment(f"{TRAIN_A}[0]"), st.segment(f"{TRAIN_A}[0]")
    assert got["words"] == clean["words"] == ["hello", "world"]
    assert (np.asarray(got["covarep__coverage"]) > 0).all()
    np.testing.assert_allclose(got["facet42"], clean["facet42"])
    assert st.segment(f"{TEST_C}[0]")["words"] == ["bad", "acting"]


def test_numbers_as_word_tokens_fail_the_video(fixture_dir: Path, tmp_path: Path) -> None:
    p = _damaged_copy(fixture_dir, tmp_path)
    damage_entry(p["CMU_MOSEI_TimestampedWords"], TEST_C, features=np.zeros((3, 1), np.float64))
    out = tmp_path / "store"
    result = build_sdk(p["CMU_MOSEI_Labels"].parent, out, "mosei", progress=False)
    failures = Store(out).failures().to_pylist()
    assert result.n_failures == 1 and failures[0]["item_id"] == TEST_C
    assert "word tokens are float64 numbers, not text" in failures[0]["reason"]
    assert "CMU_MOSEI_TimestampedWords.csd" in failures[0]["reason"]
    assert "0.0" not in Store(out).segments().column("transcript").to_pylist()
