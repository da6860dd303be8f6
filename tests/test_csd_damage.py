"""A damaged or crafted `.csd` entry costs its own video only: an entry declaring a shape far beyond the file's size
is refused before anything is allocated, and damage in the file's first entry (which named the sequence's
dimension) no longer stops the whole build. The other videos of the same unit build."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest

from bench.csd_fixtures import TEST_C, TRAIN_A, TRAIN_B, write_mosei_fixture
from feature_schemas import Store
from flows.cli import main


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd") / "release"
    write_mosei_fixture(folder)
    return folder


def entry(path: Path, video: str) -> h5py.Group:
    f = h5py.File(path, "r+")
    root = next(k for k in f.keys() if "data" in f[k])
    return f, f[root]["data"][video]


def build(csd: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str], set[str]]:
    code = main(["build", "mosei", "--csd-dir", str(csd), "--out", str(out), "--workers", "0", "--quiet"])
    capsys.readouterr()
    store = Store(out)
    failures = {f["item_id"]: f["reason"] for f in store.failures().to_pylist()}
    return code, failures, set(store.segments().column("video_id").to_pylist())


def test_an_entry_declaring_a_huge_shape_fails_its_video_before_allocating(release: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    csd = tmp_path / "csd"
    shutil.copytree(release, csd)
    f, g = entry(csd / "CMU_MOSEI_COVAREP.csd", TRAIN_B)
    with f:
        del g["features"], g["intervals"]
        rows = 10**9  # 296 GB of features and 16 GB of intervals declared, never written: the file stays small
        g.create_dataset("features", shape=(rows, 74), dtype="float32", chunks=(1024, 74))
        g.create_dataset("intervals", shape=(rows, 2), dtype="float64", chunks=(1024, 2))
    assert (csd / "CMU_MOSEI_COVAREP.csd").stat().st_size < 10 * 2**20
    code, failures, videos = build(csd, tmp_path / "s", capsys)
    assert code == 0 and TRAIN_B in failures and TRAIN_A in videos and TEST_C in videos
    assert "intervals declare shape (1000000000, 2)" in failures[TRAIN_B] and "refused before reading" in failures[TRAIN_B]
    assert "CMU_MOSEI_COVAREP.csd" in failures[TRAIN_B]


def test_damage_in_the_first_entry_fails_that_video_only(release: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    csd = tmp_path / "csd"
    shutil.copytree(release, csd)
    f, g = entry(csd / "CMU_MOSEI_COVAREP.csd", TRAIN_A)  # the first entry by name
    with f:
        del g["intervals"]
    code, failures, videos = build(csd, tmp_path / "s", capsys)
    assert code == 0 and TRAIN_A in failures and {TRAIN_B, TEST_C} <= videos
    assert f"CMU_MOSEI_COVAREP.csd [{TRAIN_A}]: entry lacks 'features' or 'intervals'" in failures[TRAIN_A]
