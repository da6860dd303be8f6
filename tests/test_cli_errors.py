"""Every command fails the same way: one `mmolre: error:` line naming the path or value and what to do, exit 1,
no traceback unless `--debug` (before or after the subcommand). Run as real subprocesses of `python -m flows.cli`."""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmolre import TrainConfig, train
from tests.store_fixtures import TINY_ARCH, one_torch_thread, synthetic_store  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.slow  # each command is a fresh process importing torch: seconds each on a busy machine

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}


def cli(*args: str, timeout: int = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout, **kw)  # type: ignore[call-overload]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr (logging lines aside), checked for the format."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mmolre: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


class NotATensor:
    """What a hostile or foreign checkpoint holds: an object whose unpickling names a global."""


def _mmsa_pickle(path: Path, ids: list[str]) -> Path:
    n = len(ids)
    text = np.zeros((n, 50, 4), np.float32)
    text[:, :2] = 1.0
    split = {"id": np.array(ids, dtype=object), "raw_text": np.array(["so good"] * n, dtype=object), "text": text,
             "regression_labels": np.zeros(n, np.float32)}
    with open(path, "wb") as f:
        pickle.dump({"train": split, "test": dict(split, id=np.array([f"t$_${i}" for i in range(n)], dtype=object))}, f,
                    protocol=2)
    return path


def test_run_errors_and_debug_before_or_after_the_subcommand() -> None:
    line = one_error_line(cli("evaluate", "--run", "/nonexistent"))
    assert line == "mmolre: error: /nonexistent: no such run directory (no best.pt); give --run the --out folder of `mmolre train`"
    for args in (["--debug", "evaluate", "--run", "/nonexistent"], ["evaluate", "--run", "/nonexistent", "--debug"]):
        proc = cli(*args)
        assert proc.returncode == 1 and "Traceback" in proc.stderr and "RunError: /nonexistent" in proc.stderr
    usage = cli("evaluate")
    assert usage.returncode == 2 and "required: --run" in usage.stderr


def test_bad_settings_are_named_before_training(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "store", sizes={"train": 16, "valid": 8, "test": 8})
    line = one_error_line(cli("train", "--store", str(store), "--out", str(tmp_path / "run"), "--set", "lr=abc"))
    assert line == "mmolre: error: --set 'lr=abc': lr must be a number, not 'abc'"
    line = one_error_line(cli("train", "--store", str(store), "--out", str(tmp_path / "run"), "--set", "arch.widht=3"))
    assert "unknown setting 'widht'" in line and "d_model" in line
    assert not (tmp_path / "run").exists()


def test_run_from_another_store_and_refused_checkpoints(tmp_path: Path) -> None:
    a = synthetic_store(tmp_path / "a", sizes={"train": 16, "valid": 8, "test": 8})
    b = synthetic_store(tmp_path / "b", sizes={"train": 16, "valid": 8, "test": 8}, dims={"text": 16, "video": 6})
    run = tmp_path / "run"
    cfg = TrainConfig.from_dict({"epochs": 1, "batch_size": 16, "progress": False, "arch": dict(TINY_ARCH), "device": "cpu"})
    train(a, run, "mmolre", cfg)
    cfg.save(tmp_path / "config.json")  # the same configuration: a run folder of another one is refused first
    line = one_error_line(cli("train", "--store", str(b), "--out", str(run), "--config", str(tmp_path / "config.json"),
                              "--epochs", "2", "--device", "cpu"))
    assert f"{run / 'last.pt'}: run was trained on a store with other feature sets: audio (8-d), text (16-d)" in line
    assert f"{b} gives text (16-d), video (6-d); use another output directory" in line
    line = one_error_line(cli("evaluate", "--run", str(run), "--store", str(b)))
    assert "lacks the feature set(s) audio" in line

    hostile = tmp_path / "hostile"
    hostile.mkdir()
    torch.save({"model": NotATensor()}, hostile / "best.pt")
    line = one_error_line(cli("evaluate", "--run", str(hostile)))
    assert f"{hostile / 'best.pt'}: refused: the checkpoint contains objects other than tensors" in line
    assert "weights_only" not in line and "NotATensor" in line


def test_disk_full_names_the_file_and_the_build_resumes(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE: the kernel's EFBIG, handled like ENOSPC) stops the build mid-way."""
    pkl = _mmsa_pickle(tmp_path / "aligned_50.pkl", [f"v{i}$_$1" for i in range(40)])
    out = tmp_path / "store"
    args = ("build", "mmsa", "--input", str(pkl), "--out", str(out), "--workers", "0", "--quiet")

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    line = one_error_line(cli(*args, preexec_fn=small_files))
    assert f"mmolre: error: {out}/" in line and ".parquet: File too large" in line
    assert "free space and rerun the same command: a store build is resumable" in line
    done = cli(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "segments: train 40, valid 0, test 40" in done.stdout


def test_control_characters_are_escaped_on_the_terminal(tmp_path: Path) -> None:
    pkl = _mmsa_pickle(tmp_path / "aligned_50.pkl", ["ok$_$1", "\x1b[2J\x1b[31mred"])
    out = tmp_path / "store"
    built = cli("build", "mmsa", "--input", str(pkl), "--out", str(out), "--workers", "0", "--quiet")
    assert built.returncode == 0, built.stderr[-2000:]
    assert "\x1b" not in built.stdout and r"'\x1b[2J\x1b[31mred' contains control characters" in built.stdout
    shown = cli("inspect", str(out))
    assert shown.returncode == 0 and "\x1b" not in shown.stdout and r"\x1b[2J" in shown.stdout
    found = cli("validate", str(tmp_path / "no\x1bstore"))
    assert found.returncode == 3 and "\x1b" not in found.stdout and r"no\x1bstore" in found.stdout
    line = one_error_line(cli("evaluate", "--run", "/no\nsuch\x1b[31m"))
    assert line.startswith(r"mmolre: error: /no\nsuch\x1b[31m: no such run directory (no best.pt)")


def test_media_that_are_not_files_and_missing_inputs(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mp4")
    line = one_error_line(cli("build", "videos", "--input", str(tmp_path / "pipe.mp4"), "--out", str(tmp_path / "s"),
                              "--workers", "0", "--face", "none"))
    assert line == f"mmolre: error: input {tmp_path / 'pipe.mp4'} is a named pipe (FIFO), not a media file"
    line = one_error_line(cli("build", "mmsa", "--input", str(tmp_path), "--out", str(tmp_path / "s"), "--workers", "0"))
    assert line == f"mmolre: error: {tmp_path}: is a folder, not a pickle file"
    line = one_error_line(cli("inspect", str(tmp_path / "absent")))
    assert str(tmp_path / "absent") in line


def test_store_commands_on_a_missing_store(tmp_path: Path) -> None:
    line = one_error_line(cli("export", "csd", "--store", "/nonexistent", "--out", str(tmp_path), "--sets", "x"))
    assert line.startswith("mmolre: error: /nonexistent")
    found = cli("validate", "/nonexistent")  # validate reports problems with exit 3, on stdout
    assert found.returncode == 3 and "not a feature store" in found.stdout


def test_a_real_enospc_says_where_and_that_the_store_resumes() -> None:
    """/dev/full answers every write with ENOSPC, the disk-full error itself; Python's has no file name."""
    from flows.cli import error_message

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(OSError) as e, open("/dev/full", "w") as f:
        f.write("x")
        f.flush()
    message = error_message(e.value, "stores/mine")
    assert message.startswith("a file under stores/mine: No space left on device (out of disk space")
    assert "rerun the same command: a store build is resumable" in message


def test_set_values_are_typed_like_the_settings() -> None:
    from flows.options import OptionError, train_config

    c = train_config(None, ["lr=1e-3", "tasks=[sentiment]", "arch.top_k=null", "task_weights={sentiment: 2}",
                            "arch.expert_ranks=[4, 8]"], epochs=3)
    assert c.lr == 0.001 and c.tasks == ["sentiment"] and c.arch.top_k is None and c.arch.expert_ranks == (4, 8)
    assert c.epochs == 3 and c.task_weights == {"sentiment": 2}
    for bad, message in (["epochs=2.5", "epochs must be an integer or null, not 2.5"], ["tasks=sentiment", "tasks must be"],
                         ["arch.d_model.x=1", "has no sub-settings"], ["lr", "expected KEY=VALUE"],
                         ["lr=[1", "not valid YAML"]):
        with pytest.raises(OptionError, match=message.replace("[", r"\[")):
            train_config(None, [bad])


def test_damaged_checkpoints_and_empty_run_folders(tmp_path: Path) -> None:
    from mmolre import load_run
    from mmolre.errors import RunError

    with pytest.raises(RunError, match=r"no best.pt; is this a finished training run directory"):
        load_run(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RunError, match=r"best.pt: unreadable checkpoint \(.*\); is it damaged or truncated\?") as e:
        load_run(tmp_path)
    assert "weights_only" not in str(e.value)
    torch.save([1, 2], tmp_path / "best.pt")
    with pytest.raises(RunError, match=r"best.pt: not an mmolre checkpoint \(holds a list, not a dict\)"):
        load_run(tmp_path)
    torch.save({"arch": {}}, tmp_path / "best.pt")
    with pytest.raises(RunError, match=r"best.pt: not a complete mmolre checkpoint \(no 'model_name'\)"):
        load_run(tmp_path)


def test_weights_that_do_not_fit_their_model(tmp_path: Path) -> None:
    from mmolre import load_run
    from mmolre.baselines import build_model
    from mmolre.errors import RunError
    from mmolre.model import MMoLREConfig

    small = MMoLREConfig.from_dict({**TINY_ARCH, "input_dims": {"text": 16, "audio": 8}})
    other = MMoLREConfig.from_dict({**TINY_ARCH, "input_dims": {"text": 16, "video": 6}})
    torch.save({"model_name": "mmolre", "arch": small.to_dict(), "model": build_model("mmolre", other).state_dict(),
                "config": TrainConfig().to_dict(), "feature_sets": ["text", "audio"], "store": "elsewhere", "epoch": 0,
                "max_len": 50, "truncate": "right"}, tmp_path / "best.pt")
    with pytest.raises(RunError, match=r"best.pt: the weights do not fit the model: run was trained on a store with other "
                                       r"feature sets or settings \(\d+ weights missing \(e.g. encoders.audio.mean\), "
                                       r"\d+ unexpected weights \(e.g. encoders.video.mean\)\)"):
        load_run(tmp_path)
    wider = MMoLREConfig.from_dict({**TINY_ARCH, "input_dims": {"text": 16, "audio": 9}})
    ck = torch.load(tmp_path / "best.pt", weights_only=True)
    torch.save({**ck, "model": build_model("mmolre", wider).state_dict()}, tmp_path / "best.pt")
    with pytest.raises(RunError, match=r"do not fit the model: .*of other shapes \(e.g. size mismatch for encoders.audio"):
        load_run(tmp_path)
