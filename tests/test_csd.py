"""The .csd reader and writer on files written by the SDK's own writer, and on the real MOSI label file."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from bench.csd_fixtures import TEST_C, TOKENS, TRAIN_A, write_mosei_fixture
from feature_schemas import Store
from pipelines.csd import (
    COVAREP_DIMS,
    SDK_METADATA_KEYS,
    CsdFile,
    CsdInfo,
    decode_metadata_value,
    discover,
    inspect_csd,
    role_of,
    words_of,
)
from pipelines.errors import PipelineError
from pipelines.export.csd import write_csd
from pipelines.recipes.sdk import build_sdk

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MOSI_LABELS = DATA / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
MOSI_CSV = DATA / "mosi" / "label.csv"


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    return folder


@pytest.fixture(scope="module")
def store(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store") / "mosei"
    build_sdk(fixture_dir, out, "mosei", keep_frames=True, progress=False)
    return out


def test_discover_recognises_roles_and_dims(fixture_dir: Path) -> None:
    files, ignored = discover(fixture_dir)
    assert ignored == []
    assert {r: f.dim for r, f in files.items()} == {"labels": 7, "words": 1, "covarep": 74, "facet42": 35, "glove": 300}
    assert files["covarep"].dims == COVAREP_DIMS
    assert files["labels"].dims[0] == "sentiment"
    # The FACET file's dimension names do not fit its 35 columns: generated names, not the file's three.
    assert files["facet42"].dims == tuple(f"facet42_{i}" for i in range(35))
    assert files["covarep"].metadata["dataset name"] == "CMU-MOSEI"
    assert files["labels"].root_name == "All Labels"


def test_published_dimension_names_when_the_file_has_none(fixture_dir: Path) -> None:
    info = CsdInfo(fixture_dir / "CMU_MOSEI_COVAREP.csd", "covarep", "COVAREP", 74, {})
    assert info.dims == COVAREP_DIMS and len(set(info.dims)) == 74
    assert info.dims[:3] == ("F0", "VUV", "NAQ") and info.dims[-1] == "HMPDD_12"


def test_roles_from_root_name_or_filename() -> None:
    assert role_of("FACET 4.2", "x.csd") == "facet42"
    assert role_of(None, "CMU_MOSEI_COVAREP.csd") == "covarep"
    assert role_of("Opinion Segment Labels", "a.csd") == "labels"
    assert role_of("", "CMU_MOSEI_TimestampedGloveVectors.csd") == "glove"
    assert role_of("", "CMU_MOSI_TimestampedWordVectors_1.1.csd") == "glove"
    assert role_of("", "CMU_MOSEI_TimestampedPhones.csd") == "phones"
    assert role_of("", "CMU_MOSEI_VisualOpenFace2.csd") == "openface2"
    assert role_of("", "CMU_MOSEI_openSMILE_IS09.csd") is None


def test_metadata_values_in_every_form() -> None:
    assert decode_metadata_value(np.array([b'"CMU-MOSI"'], dtype=object)) == "CMU-MOSI"  # the release: JSON text
    assert decode_metadata_value(np.array([b'["sentiment score"]'], dtype=object)) == ["sentiment score"]
    assert decode_metadata_value(np.array(["['F0', 'VUV']"], dtype=object)) == ["F0", "VUV"]  # SDK writer: repr
    assert decode_metadata_value(np.array([b"F0", b"VUV", b"NAQ"])) == ["F0", "VUV", "NAQ"]  # string array
    assert decode_metadata_value(np.float64(1.5)) == 1.5
    assert decode_metadata_value(b"Amir Zadeh") == "Amir Zadeh"  # plain text stays text
    assert decode_metadata_value(np.array([b"null"], dtype=object)) is None


def test_words_drop_silence(fixture_dir: Path) -> None:
    with CsdFile(fixture_dir / "CMU_MOSEI_TimestampedWords.csd") as f:
        tokens, ivs = f.tokens(TRAIN_A)
    assert tokens == [t for t, _, _ in TOKENS[TRAIN_A]]
    words, w_ivs, dropped = words_of(tokens, ivs)
    assert words == ["hello", "world", "this", "is", "fine"] and dropped == 2
    np.testing.assert_allclose(w_ivs[0], [1.0, 1.5])


def test_slice_reads_and_missing_entry(fixture_dir: Path) -> None:
    with CsdFile(fixture_dir / "CMU_MOSEI_COVAREP.csd") as f:
        assert f.shape(TRAIN_A) == (800, 74)
        assert f.features(TRAIN_A, 100, 150).shape == (50, 74)
    with CsdFile(fixture_dir / "CMU_MOSEI_VisualFacet42.csd") as f, pytest.raises(PipelineError, match=TEST_C) as e:
        f.intervals(TEST_C)
    assert e.value.item_id == TEST_C


def test_not_hdf5_truncated_and_malformed_files(fixture_dir: Path, tmp_path: Path) -> None:
    text = tmp_path / "CMU_MOSEI_COVAREP.csd"
    text.write_text("this is not HDF5\n")
    with pytest.raises(PipelineError, match="not a readable HDF5") as e:
        CsdFile(text)
    assert str(text) in str(e.value) and e.value.source_path == str(text)

    full = (fixture_dir / "CMU_MOSEI_COVAREP.csd").read_bytes()
    cut = tmp_path / "truncated.csd"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(PipelineError, match="truncated.csd"):
        inspect_csd(cut)

    wrong = tmp_path / "CMU_MOSEI_COVAREP_wrong.csd"
    with h5py.File(wrong, "w") as h:
        h.create_dataset("COVAREP/data/v1/features", data=np.zeros((3, 73), np.float32))
        h.create_dataset("COVAREP/data/v1/intervals", data=np.zeros((3, 2)))
    with pytest.raises(PipelineError, match="73 dimensions, expected 74") as e:
        inspect_csd(wrong)
    assert "CMU_MOSEI_COVAREP_wrong.csd" in str(e.value)

    nodata = tmp_path / "nodata.csd"
    with h5py.File(nodata, "w") as h:
        h.create_group("COVAREP/metadata")
    with pytest.raises(PipelineError, match="no 'data' group"):
        CsdFile(nodata)

    broken = tmp_path / "broken.csd"
    with h5py.File(broken, "w") as h:
        h.create_dataset("COVAREP/data/v1/features", data=np.zeros((3, 74), np.float32))
        h.create_dataset("COVAREP/data/v2/features", data=np.zeros((3, 74), np.float32))
        h.create_dataset("COVAREP/data/v2/intervals", data=np.zeros((4, 2)))
    with CsdFile(broken) as f:
        with pytest.raises(PipelineError, match=r"\[v1\]: entry lacks"):
            f.features("v1")
        with pytest.raises(PipelineError, match=r"shape \(3, 74\) for 4 intervals"):
            f.features("v2")


def test_write_csd_word_level_reads_back_with_the_sdk(store: Path, tmp_path: Path) -> None:
    """A store built from a release knows each segment's place: entries by video id on the video's timeline."""
    from mmsdk import mmdatasdk

    st = Store(store)
    out = write_csd(store, "covarep", tmp_path / "covarep_words.csd", level="word")
    seq = mmdatasdk.computational_sequence(str(out))
    videos = st.segments(columns=["video_id"]).column("video_id").to_pylist()
    assert sorted(seq.keys()) == sorted(set(videos))
    for key in SDK_METADATA_KEYS:
        assert key in seq.metadata
    segs = [st.segment(f"{TRAIN_A}[{i}]", ["covarep"]) for i in (0, 1)]
    entry = seq[TRAIN_A]
    np.testing.assert_array_equal(entry["features"][()], np.concatenate([s["covarep"] for s in segs]))
    np.testing.assert_array_equal(entry["intervals"][()],
                                  np.concatenate([np.stack([s["word_start"], s["word_end"]], axis=1) for s in segs]))
    # Our reader takes the written file back, dimension names included.
    info = inspect_csd(out)
    assert info is not None and info.role == "covarep" and info.dims == COVAREP_DIMS


def test_write_csd_frame_level(store: Path, tmp_path: Path) -> None:
    from mmsdk import mmdatasdk

    out = write_csd(store, "facet42", tmp_path / "facet_frames.csd", level="frame")
    seq = mmdatasdk.computational_sequence(str(out))
    frames = Store(store).frames("facet42")
    row = next(r for r in frames.to_pylist() if r["frame_start"])  # FACET lacks the test video
    video = row["segment_id"].split("[")[0]
    entry = seq[video]
    assert entry["features"].shape[1] == 35 and entry["features"].shape[0] >= len(row["frame_start"])
    assert np.isin(row["frame_start"], entry["intervals"][()][:, 0]).all()
    with pytest.raises(ValueError, match="level"):
        write_csd(store, "facet42", tmp_path / "x.csd", level="segment")


def test_real_mosi_opinion_labels() -> None:
    if not MOSI_LABELS.is_file() or not MOSI_CSV.is_file():
        pytest.skip(f"real MOSI data not found under {DATA / 'mosi'}")
    info = inspect_csd(MOSI_LABELS)
    assert info is not None and info.role == "labels" and info.dim == 1
    assert info.metadata["dataset name"] == "CMU-MOSI" and info.dims == ("sentiment score",)
    with open(MOSI_CSV, newline="") as f:
        truth = {r["id"]: float(r["label"]) for r in csv.DictReader(f)}
    n = compared = 0
    with CsdFile(MOSI_LABELS) as f:
        for vid in f.ids():
            feats, ivs = f.features(vid), f.intervals(vid)
            assert feats.shape == (len(ivs), 1)
            for i in range(len(ivs)):
                n += 1
                clip = f"{vid}_{i + 1}"  # the csd's i-th interval is MMSA's clip i + 1
                if clip in truth:
                    compared += 1
                    assert feats[i, 0] == pytest.approx(truth[clip], abs=1e-5), clip
    assert n == 2199
    assert compared == len(truth) == 2195


def test_ids_that_would_nest_hdf5_groups_are_refused(tmp_path: Path) -> None:
    """`export csd` writes one group per segment id: an id with '/' would become nested groups (and collide)."""
    from pipelines.export.csd import write_sequence

    for key in ("a/b", "..", "a\x1bb"):
        entries = iter([(key, np.zeros((1, 2), np.float32), np.zeros((1, 2)))])
        with pytest.raises(PipelineError, match="cannot be an HDF5 group name") as e:
            write_sequence(tmp_path / "x.csd", "x", entries, {})
        assert repr(key) in str(e.value)
    assert not (tmp_path / "x.csd").exists()
