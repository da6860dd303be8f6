"""DistributedDataParallel under torchrun: two CPU processes (gloo) train on a tiny store as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from feature_schemas import Store
from tests.store_fixtures import TINY_ARCH, synthetic_store

ROOT = Path(__file__).resolve().parents[1]


def test_two_processes_share_the_data_and_stay_in_sync(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "store", "mosei", sizes={"train": 64, "valid": 16, "test": 16}, rows_per_shard=16, row_group_rows=8)
    out = tmp_path / "run"
    arch = ",".join(f"{k}: {list(v) if isinstance(v, list) else v}" for k, v in TINY_ARCH.items())
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
        "-m", "mmolre.train", str(store), str(out), "--set", "epochs=2", "batch_size=8", "progress=false", f"arch={{{arch}}}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(cmd, cwd=ROOT, env={**env, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["status"] == "completed"
    a, b = results["param_checksums"]
    assert a == pytest.approx(b, rel=1e-12, abs=1e-9)  # both replicas hold the same weights after training
    n_train = Store(store).segments("train").num_rows
    for row in results["history"]:
        # each rank read its own share; together they saw the split, less at most one partial batch per rank
        assert n_train - 2 * 8 < row["train_samples"] <= n_train
    assert results["test"]["sentiment"]["n"] == 16
