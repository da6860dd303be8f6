"""`train --out` is as careful as `build --out`: one training per run folder at a time, never into a store, never
into a non-empty folder that is not a run of the same configuration unless --overwrite; resume stays as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from mmolre.run_dir import claim_run_dir
from tests.store_fixtures import one_torch_thread, synthetic_store  # noqa: F401 (autouse fixture)
from tests.test_cli_errors import cli, one_error_line
from tests.test_store_links import tree

SETTINGS = ["--set", "arch.d_model=16", "--set", "arch.expert_ranks=[2,4]", "--set", "batch_size=16",
            "--set", "progress=false", "--device", "cpu"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("run") / "store", sizes={"train": 16, "valid": 8, "test": 8})


def train(store: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--store", str(store), "--out", str(out), "--epochs", "1", *SETTINGS, *extra]


def error(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mmolre: error:")]


def test_a_second_training_into_the_same_run_folder_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with claim_run_dir(out, "mmolre", {}):  # a training holding the folder (this process, another configuration)
        line = one_error_line(cli(*train(store, out)))
    assert line.startswith(f"mmolre: error: {out}: another training is writing this run folder (pid ")
    assert not (out / "last.pt").exists()


def test_a_folder_that_is_not_a_run_is_refused_unless_overwrite(store: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    assert main(train(store, out)) == 1
    assert error(capsys) == [f"mmolre: error: {out}: is not empty and not a training run (found 'notes.txt'); use "
                             "--overwrite to write the run into it anyway (your files stay), or choose another --out"]
    assert tree(out) == before
    assert main(train(store, out, "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "best.pt").is_file()


def test_a_run_of_another_configuration_is_refused_and_the_same_one_resumes(store: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(train(store, out)) == 0
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    assert main(train(store, out, "--set", "lr=1e-3")) == 1
    assert error(capsys) == [f"mmolre: error: {out}: holds a training run of another model or configuration (differs "
                             "in lr); use --overwrite to replace it (only a run's files are removed), or choose another --out"]
    assert tree(out) == before
    capsys.readouterr()
    assert main(["train", "--store", str(store), "--out", str(out), "--epochs", "2", *SETTINGS]) == 0  # resumes
    assert len(json.loads((out / "results.json").read_text())["history"]) == 2
    assert main(train(store, out, "--set", "lr=1e-3", "--overwrite")) == 0
    assert len(json.loads((out / "results.json").read_text())["history"]) == 1  # started afresh
    assert json.loads((out / "run.json").read_text())["config"]["lr"] == 1e-3 and (out / "notes.txt").is_file()


def test_a_run_is_never_written_into_a_store(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = tree(store)
    for out in (store, store / "runs" / "a"):
        assert main(train(store, out)) == 1
        assert error(capsys)[0].startswith(f"mmolre: error: {out}: is ")
    assert tree(store) == before


def test_a_training_that_fails_before_writing_leaves_no_claim(store: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A train whose store is missing once left run.json behind, and a later train of another configuration into
    that folder was then refused as 'another run'."""
    out, kept = tmp_path / "new", tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    for folder in (out, kept):
        assert main(train(tmp_path / "no-such-store", folder)) == 1
        assert error(capsys)
    assert not out.exists()  # the folder it made is gone, empty
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # the user's folder keeps only what it had
    assert main(train(store, out, "--set", "arch.d_model=8")) == 0  # another configuration: not refused
    assert (out / "best.pt").exists()


def test_the_run_lock_is_never_taken_through_a_link_or_a_hard_link(tmp_path: Path) -> None:
    """The lock file is truncated when taken: a link or a second name for a file elsewhere is refused, and the
    user's file keeps its contents."""
    import os

    from mmolre.errors import RunError

    theirs = tmp_path / "precious.txt"
    theirs.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".train.lock").symlink_to(theirs)
    with pytest.raises(RunError, match=r"\.train\.lock: is a symbolic link; refused"), claim_run_dir(out, "mmolre", {}):
        pass
    (out / ".train.lock").unlink()
    os.link(theirs, out / ".train.lock")
    with pytest.raises(RunError, match=r"\.train\.lock: is .*; refused"), claim_run_dir(out, "mmolre", {}):
        pass
    assert theirs.read_text() == "precious" and sorted(p.name for p in out.iterdir()) == [".train.lock"]
