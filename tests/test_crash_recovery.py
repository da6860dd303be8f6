"""Crashes lose nothing: a training run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends
where an uninterrupted run with the same seed ends. (Store builds killed mid-write: tests/test_store.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmolre.synthetic import SyntheticSpec, write_synthetic_store

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ["epochs=4", "batch_size=16", "deterministic=true", "progress=false", "patience=0", "seed=3",
            "arch.d_model=32", "arch.expert_ranks=[4,8]"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # a second torch thread only stalls on a busy 2-core machine


def train_cmd(store: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mmolre.train", str(store), str(out), "--set", *SETTINGS]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SyntheticSpec(sizes={"train": 128, "valid": 32, "test": 32}, seed=5)
    return write_synthetic_store(tmp_path_factory.mktemp("crash") / "store", spec)


def test_training_killed_mid_epoch_resumes_to_the_same_result(store: Path, tmp_path: Path) -> None:
    straight = subprocess.run(train_cmd(store, tmp_path / "straight"), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads((tmp_path / "straight" / "results.json").read_text())

    out = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(store, out), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out / "last.pt").exists() and time.monotonic() < deadline:  # wait for the first epoch's checkpoint
        time.sleep(0.02)
    time.sleep(0.2)  # then land inside the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "last.pt").exists() and not (out / "results.json").exists(), "the kill did not land mid-run"
    torch.load(out / "last.pt", map_location="cpu", weights_only=True)  # the visible checkpoint is whole

    resumed = subprocess.run(train_cmd(store, out), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = json.loads((out / "results.json").read_text())
    assert got["epochs_run"] == expected["epochs_run"] == 4
    # deterministic mode on CPU: the same losses and metrics (tolerance for float summation order only)
    assert [h["train_loss"] for h in got["history"]] == pytest.approx([h["train_loss"] for h in expected["history"]], abs=1e-6)
    for task_name, metrics in expected["test"].items():
        for k, v in metrics.items():
            if isinstance(v, float) and v == v:
                assert got["test"][task_name][k] == pytest.approx(v, abs=1e-6), f"{task_name}.{k}"
