"""Every zoo model trains, is evaluated and predicts in the real harness, at toy size, on real stores built from
../shared/data: the MOSI utterance release (text + audio + video, one step per segment) and a few MOSI transcripts
(word-level MiniLM vectors, and `text_encoder: finetune` with a tiny local BERT)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mmolre import TrainConfig, train
from mmolre.inference import evaluate, load_run, predict_segment
from tests.store_fixtures import one_torch_thread  # noqa: F401 - fixture
from tests.test_finetune import make_wordpiece_model
from tests.test_utterance import DATA, LABELS, RELEASE, mini_release
from tests.test_zoo import TINY, ZOO

pytestmark = pytest.mark.skipif(not RELEASE.is_dir() or not LABELS.is_file(), reason="the shared MOSI data is not here")
PER_SPLIT = {"train": 16, "valid": 6, "test": 6}


@pytest.fixture(scope="module")
def utterance_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.recipes.mosi_utterance import build_mosi_utterance

    tmp = tmp_path_factory.mktemp("zoo-utt")
    build_mosi_utterance(mini_release(tmp / "release"), tmp / "store", labels=LABELS, progress=False)
    return tmp / "store"


@pytest.fixture(scope="module")
def text_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first transcripts of each standard fold of MOSI's label.csv, through the real text pipeline (MiniLM)."""
    from pipelines.recipes.mosi_text import read_mosi_labels
    from pipelines.recipes.videos import VideoConfig, build_videos

    tmp = tmp_path_factory.mktemp("zoo-text")
    with open(DATA / "mosi" / "label.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for split, n in PER_SPLIT.items() for r in [r for r in rows if r["mode"] == split][:n]]
    with open(tmp / "label.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    cfg = VideoConfig(face=None, align=False, transcribe=False, asr_fallback=False, threads=1, text_batch_size=32)
    build_videos(read_mosi_labels(tmp / "label.csv"), tmp / "store", cfg, progress=False, name="zoo-text")
    return tmp / "store"


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wordpiece_model(tmp_path_factory.mktemp("zoo-bert"))


def _cfg(name: str, **kw: object) -> TrainConfig:
    return TrainConfig.from_dict({"model": name, "epochs": 1, "batch_size": 8, "progress": False, "arch": dict(TINY[name]),
                                  "context": False, **kw})  # context: auto would wrap the utterance runs


@pytest.mark.parametrize("name", ZOO)
def test_trains_evaluates_and_predicts_on_the_utterance_release(utterance_store: Path, tmp_path: Path, name: str) -> None:
    sets = ["bclstm_text", "bclstm_audio", "bclstm_video"]
    results = train(utterance_store, tmp_path / "run", name, _cfg(name, feature_sets=sets, epochs=2, select_metric="last"))
    test = results["test"]["sentiment"]
    assert test["n"] == 12 and np.isfinite(test["mae"])
    assert np.isfinite(results["history"][-1]["train_loss"])
    again = evaluate(tmp_path / "run", split="test")
    assert again["metrics"]["sentiment"]["mae"] == pytest.approx(test["mae"], rel=1e-5)
    model, _, meta = load_run(tmp_path / "run")
    assert meta["model_name"] == name and model.config.input_dims == results["arch"]["input_dims"]
    vec = {m: np.random.default_rng(0).standard_normal(results["arch"]["input_dims"][m]).astype(np.float32) for m in sets}
    out = predict_segment(tmp_path / "run", vec)
    assert np.isfinite(out["sentiment"])


@pytest.mark.parametrize("name", ZOO)
def test_trains_on_word_vectors_and_fine_tunes_the_text_encoder(text_store: Path, bert: Path, tmp_path: Path, name: str) -> None:
    frozen = train(text_store, tmp_path / "frozen", name, _cfg(name))
    assert frozen["test"]["sentiment"]["n"] == PER_SPLIT["test"] and np.isfinite(frozen["test"]["sentiment"]["mae"])
    tuned = train(text_store, tmp_path / "ft", name, _cfg(name, text_encoder="finetune", text_model=str(bert), max_steps=2))
    assert tuned["test"]["sentiment"]["n"] == PER_SPLIT["test"] and np.isfinite(tuned["test"]["sentiment"]["mae"])
    weights = torch.load(tmp_path / "ft" / "best.pt", weights_only=True)["model"]
    assert any(k.startswith("text_encoder.") for k in weights)  # the encoder trained inside the model is saved
    again = evaluate(tmp_path / "ft", split="test")  # the run rebuilds its encoder from the run folder
    assert again["metrics"]["sentiment"]["mae"] == pytest.approx(tuned["test"]["sentiment"]["mae"], rel=1e-5)
