"""A number that cannot work is a usage error (exit 2) naming the option, before anything runs: `--workers -1`
waited forever for workers that never came, `--fps nan` and `--units-per-shard 0` reached the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

REPO = Path(__file__).resolve().parents[1]

BAD = [
    (["build", "mosei", "--csd-dir", "X", "--out", "Y", "--workers", "-1"], "--workers", "a whole number from 0 (inline) to 1024, not '-1'"),
    (["build", "mosei", "--csd-dir", "X", "--out", "Y", "--workers", "two"], "--workers", "not 'two'"),
    (["build", "videos", "--input", "X", "--out", "Y", "--fps", "nan"], "--fps", "a finite number above 0, not 'nan'"),
    (["build", "videos", "--input", "X", "--out", "Y", "--fps", "inf"], "--fps", "not 'inf'"),
    (["build", "videos", "--input", "X", "--out", "Y", "--fps", "0"], "--fps", "not '0'"),
    (["build", "mmsa", "--input", "X", "--out", "Y", "--units-per-shard", "0"], "--units-per-shard", "a whole number of 1 or more, not '0'"),
    (["build", "mosei", "--csd-dir", "X", "--out", "Y", "--batch-videos", "-3"], "--batch-videos", "not '-3'"),
    (["build", "mosi-utterance", "--input", "X", "--out", "Y", "--valid-fraction", "1.5"], "--valid-fraction", "not '1.5'"),
    (["build", "mosi-utterance", "--input", "X", "--out", "Y", "--valid-fraction", "nan"], "--valid-fraction", "not 'nan'"),
    (["build", "mosi-utterance", "--input", "X", "--out", "Y", "--valid-fraction", "1"], "--valid-fraction",
     "a number from 0 up to 1 (not 1), not '1'"),
    (["build", "mosi-utterance", "--input", "X", "--out", "Y", "--valid-fraction", "-0.1"], "--valid-fraction", "not '-0.1'"),
    (["train", "--store", "X", "--out", "Y", "--seed", "4294967296"], "--seed", "a whole number from 0 to 4294967295"),
    (["train", "--store", "X", "--out", "Y", "--epochs", "0"], "--epochs", "not '0'"),
    (["train", "--store", "X", "--out", "Y", "--seed", "-1"], "--seed", "not '-1'"),
]


@pytest.mark.parametrize(("args", "option", "says"), BAD, ids=[f"{a[-2]} {a[-1]}" for a, _, _ in BAD])
def test_bad_numbers_are_usage_errors(args: list[str], option: str, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: argument {option}: must be " in last and says in last, last


def test_negative_workers_end_at_once_with_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "build", "mosei", "--csd-dir", str(tmp_path), "--out",
                           str(tmp_path / "s"), "--workers", "-1"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "argument --workers: must be a whole number" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s").exists()
