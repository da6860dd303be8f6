"""MMSA pickles: hostile pickles are refused, export -> import keeps values, MMSA's own layout imports."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from feature_schemas import Store, validate
from pipelines.mmsa_pickle import MmsaPickleError, export_mmsa, import_mmsa, read_mmsa
from pipelines.recipes.sdk import build_sdk

from .csd_fixtures import TEST_C, TRAIN_A, write_mosei_fixture


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    out = tmp_path_factory.mktemp("store") / "mosei"
    build_sdk(folder, out, "mosei", keep_frames=True, progress=False)
    return out


def test_code_running_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "aligned_50.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"train": {"id": [_RunsShell(marker)]}}, f)
    with pytest.raises(MmsaPickleError, match=r"refused to load global (posix|os|nt)\.system") as e:
        read_mmsa(evil)
    assert str(evil) in str(e.value) and e.value.source_path == str(evil)
    assert not marker.exists()

    sneaky = tmp_path / "eval.pkl"  # a hand-written protocol-0 pickle calling builtins.eval
    sneaky.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(MmsaPickleError, match=r"builtins\.eval"):
        read_mmsa(sneaky)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(MmsaPickleError, match="garbage.pkl"):
        read_mmsa(garbage)


def test_export_then_import_keeps_values(store: Path, tmp_path: Path) -> None:
    pkl = export_mmsa(store, tmp_path / "aligned_50.pkl")
    data = read_mmsa(pkl)
    assert set(data) == {"train", "test"}
    train = data["train"]
    assert train["text"].shape == (3, 50, 300) and train["audio"].shape == (3, 50, 74) and train["vision"].shape == (3, 50, 35)
    assert train["regression_labels"].dtype == np.float32 and len(train["raw_text"]) == 3

    result = import_mmsa(pkl, tmp_path / "back", progress=False)
    assert result.n_failures == 0 and result.n_segments == 5
    assert validate(tmp_path / "back").ok
    a, b = Store(store), Store(tmp_path / "back")
    assert set(b.feature_sets) == {"covarep", "facet42", "glove"}
    assert b.feature_sets["covarep"].dims == a.feature_sets["covarep"].dims
    for sid in (f"{TRAIN_A}[0]", f"{TRAIN_A}[1]", f"{TEST_C}[0]"):
        x, y = a.segment(sid), b.segment(sid)
        assert x["words"] == y["words"] and x["split"] == y["split"] and x["video_id"] == y["video_id"]
        assert x["sentiment"] == pytest.approx(y["sentiment"]) and x["fear"] == pytest.approx(y["fear"])
        np.testing.assert_array_equal(x["word_start"], y["word_start"])
        for name in ("covarep", "facet42", "glove"):
            np.testing.assert_array_equal(x[name], y[name])
            np.testing.assert_array_equal(x[f"{name}__coverage"], y[f"{name}__coverage"])


def test_unaligned_export_uses_frames(store: Path, tmp_path: Path) -> None:
    pkl = export_mmsa(store, tmp_path / "unaligned_50.pkl", aligned=False, frame_len=400)
    test = read_mmsa(pkl)["test"]
    frames = Store(store).frames("covarep", "test").to_pylist()
    n = {r["segment_id"]: len(r["frame_start"]) for r in frames}
    ids = list(test["id"])
    assert test["audio"].shape == (2, 400, 74)
    assert test["audio_lengths"] == [min(n[i], 400) for i in ids]
    assert np.isfinite(test["audio"]).all()  # MMSA expects no -inf; the store keeps them in frames
    result = import_mmsa(pkl, tmp_path / "back", progress=False)
    assert result.n_failures == 0 and validate(tmp_path / "back").ok


def test_mmsa_own_layout_imports(tmp_path: Path) -> None:
    """A pickle shaped like MMSA's (protocol 2, ids `video$_$clip`, no extra keys) imports with untimed words."""
    rng = np.random.default_rng(0)
    text = np.zeros((2, 50, 768), np.float32)
    text[0, :3] = rng.normal(size=(3, 768))
    text[1, :2] = rng.normal(size=(2, 768))
    audio = np.zeros((2, 50, 5), np.float32)
    audio[0, :3] = 1.0
    split = {
        "id": np.array(["abc$_$1", "abc$_$2"], dtype=object),
        "raw_text": np.array(["it was good", "so bad"], dtype=object),
        "text": text, "audio": audio, "vision": np.zeros((2, 50, 20), np.float32),
        "regression_labels": np.array([1.4, -2.0], np.float32),
        "audio_lengths": [3, 2], "vision_lengths": [3, 2],
    }
    pkl = tmp_path / "aligned_50.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"train": split, "valid": dict(split, id=np.array(["v$_$1", "v$_$2"], dtype=object)),
                     "test": dict(split, id=np.array(["t$_$1", "t$_$2"], dtype=object))}, f, protocol=2)
    result = import_mmsa(pkl, tmp_path / "store", names={"text": "bert"}, progress=False)
    assert result.n_failures == 0 and validate(tmp_path / "store").ok
    st = Store(tmp_path / "store")
    assert set(st.feature_sets) == {"bert", "mmsa_audio", "mmsa_vision"}
    seg = st.segment("abc$_$1")
    assert seg["words"] == ["it", "was", "good"] and seg["video_id"] == "abc" and seg["split"] == "train"
    np.testing.assert_array_equal(seg["bert"], text[0, :3])
    np.testing.assert_array_equal(seg["mmsa_audio"], np.ones((3, 5), np.float32))
    assert seg["sentiment"] == pytest.approx(1.4)
