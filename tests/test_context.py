"""context=true: training, evaluation and prediction over whole videos (a GRU across each video's utterances), on a
small store built from the real bc-LSTM release."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from feature_schemas import Store
from mmolre.config import TrainConfig
from mmolre.context import VideoContext
from mmolre.data import StoreDataset, VideoLoader
from mmolre.model import MMoLREConfig
from mmolre.tasks import TaskSpec
from pipelines.recipes.mosi_utterance import build_mosi_utterance
from tests.store_fixtures import TINY_ARCH
from tests.test_utterance import LABELS, RELEASE, mini_release

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not RELEASE.is_dir(), reason="the shared bc-LSTM release is not here")
SETS = ["bclstm_audio", "bclstm_text", "bclstm_video"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ctx")
    root = tmp / "store"
    build_mosi_utterance(mini_release(tmp / "rel", n_train=60, n_test=20), root, labels=LABELS, progress=False)
    return root


def _config(**kw: object) -> TrainConfig:
    settings = {"epochs": 2, "batch_size": 16, "progress": False, "device": "cpu", "context": True, **kw}
    return TrainConfig(arch=MMoLREConfig(**TINY_ARCH), **settings)  # type: ignore[arg-type]


def test_batches_hold_whole_videos_in_utterance_order(store: Path) -> None:
    ds = StoreDataset(store, "train", SETS, (TaskSpec("sentiment", "regression"),))
    loader = VideoLoader(ds, batch_size=16, shuffle=True, seed=1)
    seg = Store(store).segments("train", columns=["segment_id", "video_id", "start"]).to_pandas().set_index("segment_id")
    seen: list[str] = []
    videos_seen: list[str] = []
    for batch in loader:
        ids = batch["segment_id"]
        assert [i for v in batch["videos"] for i in v] == list(range(len(ids)))  # rows video after video
        for rows in batch["videos"]:
            vids = seg.loc[[ids[i] for i in rows], "video_id"]
            assert vids.nunique() == 1  # one video per group
            videos_seen.append(vids.iloc[0])
            starts = seg.loc[[ids[i] for i in rows], "start"].to_numpy(dtype=float)
            assert np.all(np.diff(starts[np.isfinite(starts)]) >= 0)
        seen += ids
    assert sorted(seen) == sorted(seg.index) and len(set(videos_seen)) == len(videos_seen) == seg["video_id"].nunique()
    assert loader.mean_segments_per_video >= 2


def test_valid_is_read_once_for_every_epoch_s_scoring(store: Path) -> None:
    from mmolre.context import wrap_in_context
    from mmolre.evaluation import _VIDEO_LOADERS, predict_split

    tasks = (TaskSpec("sentiment", "regression"),)
    ds = StoreDataset(store, "valid", SETS, tasks)
    dims = {m: Store(store).feature_sets[m].dim for m in SETS}
    net = wrap_in_context("mmolre", MMoLREConfig(**TINY_ARCH, input_dims=dims, tasks=tasks), hidden=8)
    first = predict_split(net, ds, torch.device("cpu"), 16)
    loader = _VIDEO_LOADERS[ds]
    second = predict_split(net, ds, torch.device("cpu"), 16)
    assert _VIDEO_LOADERS[ds] is loader  # the split was read once, not once per epoch
    assert list(first["segment_id"]) == list(second["segment_id"]) and len(first["segment_id"]) == len(loader.rows)


def test_train_with_context_predicts_every_segment_and_evaluate_rebuilds_it(store: Path, tmp_path: Path) -> None:
    from mmolre.inference import evaluate, load_run
    from mmolre.train import train

    torch.set_num_threads(1)
    results = train(store, tmp_path / "run", "mmolre", _config())
    n_test = Store(store).manifest.rows("segments", "test")
    frame = pd.read_csv(tmp_path / "run" / "predictions_test.csv")
    assert len(frame) == n_test and frame["segment_id"].is_unique  # one prediction per segment
    assert results["config"]["context"] is True and results["test"]["sentiment"]["n"] <= n_test
    model, config, _ = load_run(tmp_path / "run")
    assert isinstance(model, VideoContext) and config.context and config.context_hidden == 32
    again = evaluate(tmp_path / "run", split="test")
    assert again["n"] == n_test
    assert again["metrics"]["sentiment"]["mae"] == pytest.approx(results["test"]["sentiment"]["mae"], abs=1e-6)


def test_context_left_unset_is_decided_from_the_store_and_said(store: Path) -> None:
    """context=None (the default) turns on for utterance-level sets with several utterances a video and says so in
    the run's defaults; an explicit false, several processes, a fine-tuned text encoder or a word-level set keep it
    off, and then no line claims it."""
    from mmolre.distributed import DistContext
    from mmolre.run_setup import store_defaults

    s = Store(store)
    auto, said = store_defaults(s, SETS, _config(context=None), DistContext())
    assert auto.context is True and [line for line in said if line.startswith("context: on")]
    for cfg, sets, ctx in ((_config(context=False), SETS, DistContext()), (_config(context=None), SETS, DistContext(world_size=2)),
                           (_config(context=None, text_encoder="finetune"), SETS, DistContext()),
                           (_config(context=None), [*SETS, "text_minilm"], DistContext())):
        decided, said = store_defaults(s, sets, cfg, ctx)
        assert decided.context is False and not [line for line in said if line.startswith("context")]


def test_context_false_trains_and_loads_without_the_wrapper(store: Path, tmp_path: Path) -> None:
    from mmolre.inference import load_run
    from mmolre.train import train

    torch.set_num_threads(1)
    assert TrainConfig().context is None  # auto: decided from the store (here it would be on: utterance-level sets)
    plain = train(store, tmp_path / "plain", "mmolre", _config(context=False, epochs=1))
    assert plain["config"]["context"] is False
    assert not isinstance(load_run(tmp_path / "plain")[0], VideoContext)
    assert len(pd.read_csv(tmp_path / "plain" / "predictions_test.csv")) == Store(store).manifest.rows("segments", "test")


@pytest.mark.slow  # two CLI subprocesses (~11 s)
def test_cli_train_with_context_flag_then_evaluate(store: Path, tmp_path: Path) -> None:
    run = tmp_path / "cli"
    cmd = [sys.executable, "-m", "flows.cli", "train", "--store", str(store), "--out", str(run), "--context",
           "--epochs", "1", "--device", "cpu", "--set", "batch_size=16", "--set", "arch.d_model=16",
           "--set", "arch.n_heads=2", "--set", "arch.expert_ranks=[2,4]", "--set", "arch.task_rank=4"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "config.json").read_text())["context"] is True
    ev = subprocess.run([sys.executable, "-m", "flows.cli", "evaluate", "--run", str(run), "--json"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["n"] == Store(store).manifest.rows("segments", "test")


def test_context_refuses_word_level_sets(tmp_path: Path) -> None:
    from mmolre.errors import RunError
    from mmolre.train import train
    from tests.store_fixtures import synthetic_store

    s = synthetic_store(tmp_path / "words")
    with pytest.raises(RunError, match="utterance-level"):
        train(s, tmp_path / "run", "mmolre", _config())
