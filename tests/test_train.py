"""Training end to end on small synthetic stores: it learns, resumes exactly, selects and stops on the validation
metric, writes safe checkpoints and its report, and the run can be evaluated, loaded and explained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_schemas import Store
from mmolre import TrainConfig, evaluate, load_run, predict_segment, train
from mmolre.errors import RunError
from mmolre.train import main
from tests.store_fixtures import TINY_ARCH, one_torch_thread, synthetic_store  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw: object) -> TrainConfig:
    base: dict = dict(epochs=4, batch_size=16, lr=3e-3, warmup_ratio=0.1, progress=False, arch=dict(TINY_ARCH), seed=0)
    return TrainConfig.from_dict({**base, **kw})


@pytest.fixture(scope="module")
def mosei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("mosei"), "mosei", sizes={"train": 160, "valid": 48, "test": 48}, noise=0.7)


@pytest.fixture(scope="module")
def run(mosei: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run")
    return out, train(mosei, out, "mmolre", tiny(epochs=6))


def test_mmolre_learns_both_tasks(run: tuple[Path, dict]) -> None:
    out, results = run
    test = results["test"]
    assert results["status"] == "completed"
    assert test["sentiment"]["corr"] > 0.6 and test["sentiment"]["non0_acc2"] > 0.75  # labels are a function of the features
    assert test["emotion"]["wacc_mean"] > 0.6
    hist = results["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    for name in ("results.json", "report.md", "loss_curves.png", "sentiment_pred_vs_true.png", "emotion_f1.png", "predictions_test.csv", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temporaries
    saved = json.loads((out / "results.json").read_text())
    assert saved["test"]["sentiment"]["mae"] == pytest.approx(test["sentiment"]["mae"])
    assert "acc7_sdk" in saved["test"]["sentiment"] and "happy_wacc" in saved["test"]["emotion"]


def test_checkpoints_load_with_weights_only(run: tuple[Path, dict]) -> None:
    out, _ = run
    for name in ("best.pt", "last.pt"):
        ck = torch.load(out / name, map_location="cpu", weights_only=True)
        assert ck["model_name"] == "mmolre"
    last = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert {"train_step", "optimizer", "scheduler", "rng", "state", "config"} <= set(last)
    assert last["state"]["epoch"] == 6


def test_evaluate_load_and_explain(run: tuple[Path, dict], mosei: Path) -> None:
    out, results = run
    ev = evaluate(out, "test")
    assert ev["metrics"]["sentiment"]["mae"] == pytest.approx(results["test"]["sentiment"]["mae"], abs=1e-6)
    model, config, meta = load_run(out)
    assert not model.training and meta["feature_sets"] == ["audio", "text"] and config.epochs == 6
    W = 7
    rng = np.random.default_rng(0)
    feats = {"text": rng.normal(size=(W, 16)), "audio": rng.normal(size=(W, 8)), "audio__coverage": np.array([1, 1, 0, 1, 1, 1, 1.0])}
    p = predict_segment((model, config, meta), feats)
    assert -3 <= p["sentiment"] <= 3 and set(p["emotions"]) == {"happy", "sad", "anger", "surprise", "disgust", "fear"}
    sent = p["tasks"]["sentiment"]
    assert len(sent["word_contribution"]) == W and sent["word_weights"]["audio"][2] == 0.0
    assert sum(sent["modality_weights"].values()) == pytest.approx(1.0)
    assert sum(sent["word_contribution"]) == pytest.approx(1.0, abs=1e-5)
    # words beyond max_len get no weight; audio missing entirely gets no modality weight
    long = {"text": rng.normal(size=(60, 16))}
    q = predict_segment(out, long)
    assert len(q["tasks"]["emotion"]["word_contribution"]) == 60 and q["tasks"]["emotion"]["word_contribution"][55] == 0.0
    assert q["tasks"]["emotion"]["modality_weights"]["audio"] == 0.0
    with pytest.raises(ValueError, match="word-aligned"):
        predict_segment(out, {"text": np.zeros((3, 16)), "audio": np.zeros((4, 8))})
    with pytest.raises(RunError, match="no best.pt"):
        load_run(out / "nope")


def test_resume_is_exact(mosei: Path, tmp_path: Path) -> None:
    cfg = tiny(epochs=4, deterministic=True, arch={**TINY_ARCH, "dropout": 0.2, "noisy_gating": True, "top_k": 2})
    straight = train(mosei, tmp_path / "straight", "mmolre", cfg)
    paused = train(mosei, tmp_path / "sliced", "mmolre", TrainConfig.from_dict({**cfg.to_dict(), "stop_after_epochs": 2}))
    assert paused["status"] == "paused" and paused["epochs_run"] == 2
    resumed = train(mosei, tmp_path / "sliced", "mmolre", cfg)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in straight["history"]]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["train_step"]
    b = torch.load(tmp_path / "sliced" / "last.pt", weights_only=True)["train_step"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"]["sentiment"]["mae"] == straight["test"]["sentiment"]["mae"]


def test_early_stopping_on_the_selected_metric(mosei: Path, tmp_path: Path) -> None:
    # lr 0: the validation MAE never improves after the first epoch, so patience 1 stops at epoch 2
    r = train(mosei, tmp_path / "run", "mmolre", tiny(epochs=5, lr=0.0, patience=1, select_metric="sentiment/mae", tasks=["sentiment"]))
    assert r["status"] == "early_stopped" and r["epochs_run"] == 2 and r["best_epoch"] == 1
    assert r["select_metric"] == "sentiment/mae" and [t["name"] for t in r["tasks"]] == ["sentiment"]
    with pytest.raises(ValueError, match="no metric sentiment/auc"):
        train(mosei, tmp_path / "bad", "mmolre", tiny(epochs=1, select_metric="sentiment/auc"))


def test_select_last_keeps_the_last_epoch_whatever_valid_says(mosei: Path, tmp_path: Path) -> None:
    # lr 0 with patience 1 stops at epoch 2 when selecting on valid (above); `last` runs every epoch and keeps the last
    r = train(mosei, tmp_path / "run", "mmolre", tiny(epochs=3, lr=0.0, patience=1, select_metric="last", tasks=["sentiment"]))
    assert r["status"] == "completed" and r["epochs_run"] == 3 and r["best_epoch"] == 3
    assert r["select_metric"].startswith("last epoch")
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert best["epoch"] == 3


@pytest.mark.parametrize("name", ["dense_moe", "hard_sharing", "single_emotion"])
def test_baselines_train_in_the_same_harness(mosei: Path, tmp_path: Path, name: str) -> None:
    r = train(mosei, tmp_path / name, name, tiny(epochs=2, task_weighting="uncertainty", pos_weight=True))
    tasks = [t["name"] for t in r["tasks"]]
    assert tasks == (["emotion"] if name == "single_emotion" else ["sentiment", "emotion"])
    assert set(r["test"]) == set(tasks) | {"overall"}
    ck = torch.load(tmp_path / name / "last.pt", weights_only=True)
    log_vars = ck["train_step"]["weighting.log_vars"]
    assert log_vars.shape == (len(tasks),) and log_vars.abs().sum() > 0  # uncertainty weights were learned


def test_meld_style_classes(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "meld", "meld", sizes={"train": 120, "valid": 40, "test": 40})
    r = train(store, tmp_path / "run", "mmolre", tiny(epochs=3, select_metric="sentiment/wf1,emotion/wf1", class_weights=True))
    assert r["select_metric"] == "sentiment/wf1,emotion/wf1"
    assert r["test"]["sentiment"]["wf1"] > 0.5 and "joy_f1" in r["test"]["emotion"]
    p = predict_segment(tmp_path / "run", {"text": np.zeros((3, 16)), "audio": np.zeros((3, 8))})
    assert p["sentiment"] in ("negative", "neutral", "positive") and p["emotion"] in p["emotions"]


def test_auto_selection_is_the_mean_wf1_when_every_task_is_a_class(mosei: Path, tmp_path: Path) -> None:
    # MELD-style classes select on their weighted F1s; a store with a regression task keeps the summed loss
    store = synthetic_store(tmp_path / "meld", "meld", sizes={"train": 120, "valid": 40, "test": 40})
    r = train(store, tmp_path / "run", "mmolre", tiny(epochs=2))
    assert r["select_metric"] == "sentiment/wf1,emotion/wf1"
    best = max(r["history"], key=lambda h: (h["valid/sentiment/wf1"] + h["valid/emotion/wf1"]) / 2)
    assert r["best_epoch"] == best["epoch"]
    assert train(mosei, tmp_path / "reg", "mmolre", tiny(epochs=1))["select_metric"] == "loss"


def test_config_files_and_cli(mosei: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("epochs: 1\nbatch_size: 32\nprogress: false\narch:\n  d_model: 16\n  n_heads: 2\n  expert_ranks: [2, 4]\n  task_rank: 2\n")
    cfg = TrainConfig.load(cfg_file)
    assert cfg.arch.expert_ranks == (2, 4) and cfg.batch_size == 32
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown setting\(s\) epochz"):
        TrainConfig.load(bad)
    # the arch mapping's values are typed like the top-level ones: YAML 1.1 reads 1e-1 as text
    bad.write_text("arch:\n  dropout: 1e-1\n  d_model: 16\n  n_heads: 2\n")
    assert TrainConfig.load(bad).arch.dropout == 0.1
    bad.write_text("arch:\n  d_model: wide\n")
    with pytest.raises(ValueError, match=r"bad.yaml: arch: d_model must be an integer, not 'wide'"):
        TrainConfig.load(bad)
    with pytest.raises(ValueError, match=r"--set 'arch=\{top_k: two\}': top_k must be an integer or null, not 'two'"):
        TrainConfig().with_overrides(["arch={top_k: two}"])
    assert main([str(mosei), str(tmp_path / "cli"), "--model", "hard_sharing", "--config", str(cfg_file), "--set", "lr=0.01", "tasks=[sentiment]"]) == 0
    saved = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert saved["config"]["lr"] == 0.01 and saved["model"] == "hard_sharing"
    assert [t["name"] for t in saved["tasks"]] == ["sentiment"]


def test_gpu_bench_script_runs_tiny_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMOLRE_BENCH_TINY": "1", "MMOLRE_BENCH_DIR": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_train.sh")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["models"]) == {"mmolre", "dense_moe"}
    for m in summary["models"].values():
        assert m["samples_per_s"] > 0 and m["step_time_s"] > 0 and m["params_experts"] > 0
    assert summary["models"]["dense_moe"]["params_experts"] > summary["models"]["mmolre"]["params_experts"]


def test_default_epochs_take_about_a_step_budget_on_a_large_store(tmp_path: Path) -> None:
    """epochs left unset while valid selects: 30, or fewer when a store's epochs are long (30 epochs of CMU-MOSEI's
    509 steps overfit and fell to the ridge floor's Non0 Acc-2); the run says what it chose and why."""
    from mmolre.distributed import DistContext
    from mmolre.run_setup import STEP_BUDGET, default_epochs, store_defaults

    assert default_epochs(1284, 32) == 30 and default_epochs(16274, 32) == 4 and default_epochs(10 ** 6, 32) == 3
    store = synthetic_store(tmp_path / "s", labels="mosi", sizes={"train": 1000, "valid": 20, "test": 20})
    s = Store(store)
    for batch, epochs in ((8, -(-STEP_BUDGET // 125)), (64, 30)):  # 1,000 segments: 125 steps of 8, 16 of 64
        cfg, said = store_defaults(s, ["text", "audio"], TrainConfig(batch_size=batch, arch=dict(TINY_ARCH)), DistContext())
        assert cfg.epochs == epochs
        assert f"epochs: at most {epochs} (about {STEP_BUDGET:,} steps of {batch} for 1,000 training segments)" in said[0]
    cfg, _ = store_defaults(s, ["text", "audio"], TrainConfig(batch_size=8, epochs=50, arch=dict(TINY_ARCH)), DistContext())
    assert cfg.epochs == 50  # a number the user gave is kept
