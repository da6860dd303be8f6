"""What a user reads when something is off (`predict` on a FIFO or folder: tests/test_run_trust.py): a refused
YAML tag is one usage line, numbers print plainly, a correlation of two pairs is n/a, no library warning beside the
one-line error, and a manifest naming one file twice is refused by the reader itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.csd_fixtures import TRAIN_A, damage_entry, write_mosei_fixture
from feature_schemas import Store, StoreError, validate
from flows.cli import main
from mmolre.metrics import sentiment_regression_metrics
from pipelines.build import build_store
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err.splitlines()
    assert all(ln.startswith("mmolre: error: ") for ln in err), err  # nothing else beside the one line
    return err


def test_a_refused_yaml_tag_is_one_usage_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('lr: !!python/object/apply:os.system ["echo pwned"]\n')
    assert main(["train", "--store", str(tmp_path), "--out", str(tmp_path / "r"), "--config", str(config)]) == 2
    [line] = errors(capsys)
    assert line.startswith(f"mmolre: error: --config {config}: line 1, column 5: could not determine a constructor")
    assert "YAML tags such as !!python/... are refused" in line and not (tmp_path / "r").exists()


def test_a_correlation_of_fewer_than_three_pairs_is_na() -> None:
    two = sentiment_regression_metrics(np.array([0.5, -1.0]), np.array([1.0, -2.0]), resamples=50)
    assert two["corr"] is None and two["corr_ci"] is None and two["n"] == 2
    three = sentiment_regression_metrics(np.array([0.5, -1.0, 0.2]), np.array([1.0, -2.0, 0.1]), resamples=50)
    assert three["corr"] is not None and three["corr"] > 0.9


def test_a_nan_interval_prints_as_a_plain_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_mosei_fixture(tmp_path / "csd")
    damage_entry(paths["labels"], TRAIN_A, rows={0: (float("nan"), 4.0)})
    assert main(["build", "mosei", "--csd-dir", str(tmp_path / "csd"), "--out", str(tmp_path / "s"), "--workers", "0",
                 "--quiet"]) == 0
    reasons = [f["reason"] for f in Store(tmp_path / "s").failures().to_pylist() if "interval" in f["reason"]]
    assert len(reasons) == 1 and "interval [nan, 4.0] is not finite" in reasons[0] and "np.float" not in reasons[0]


def test_a_manifest_naming_one_file_twice_is_refused_by_the_reader(tmp_path: Path) -> None:
    store = tmp_path / "s"
    build_store(store, "synthetic", syn.make_units(2), syn.process, syn.FEATURE_SETS, BuildConfig(), progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    rel = next(r for r in manifest["files"] if r.startswith("aligned/"))
    twice = rel.replace("/", "/./", 1)
    manifest["files"][twice] = manifest["files"][rel]
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"the manifest lists the same file under 2 spellings .*read twice"):
        Store(store)
    assert any("one file listed under 2 spellings" in str(p) for p in validate(store).problems)


def test_native_library_lines_do_not_reach_stderr(tmp_path: Path) -> None:
    """mediapipe's C++ (absl, TensorFlow Lite) writes to descriptor 2 directly: a build prints our lines only,
    and `--debug` still shows the libraries' own."""
    import os
    import subprocess
    import sys

    from tests import media_fixtures as mf

    mf.need(mf.MOSI_CLIP)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flows.cli", "build", "videos", "--input", str(mf.MOSI_CLIP), "--out",
           str(tmp_path / "s"), "--workers", "0", "--quiet", "--face", "mediapipe"]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    for noise in ("absl::InitializeLog", "W0000", "XNNPACK", "Warning"):
        assert noise not in done.stderr, done.stderr
    assert "face_mediapipe" in done.stdout
