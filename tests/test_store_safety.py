"""Store safety: paths from a manifest or build record never leave the store, a build never silently replaces
another store or a user's folder, readers refuse a changed shard, and a finished store carries no build state."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from bench.csd_fixtures import write_mosei_fixture
from feature_schemas import ChecksumError, Manifest, OutsideStoreError, Store, StoreError, validate
from flows.cli import main
from mmolre.synthetic import SyntheticSpec, write_synthetic_store
from pipelines.build import build_store
from pipelines.card import CARD_IDS
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
from tests.test_store_links import build, tree


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A file outside every store that no build may delete."""
    path = tmp_path / "canary.txt"
    path.write_text("still here")
    return path


def outside_paths(canary: Path) -> list[str]:
    return [str(canary), "../canary.txt", "aligned/../../canary.txt"]


# -- 1. records and manifests naming files outside the store ------------------------------------------------
@pytest.mark.parametrize("which", [0, 1, 2], ids=["absolute", "dotdot", "nested-dotdot"])
def test_a_stale_record_naming_outside_files_is_refused_and_deletes_nothing(tmp_path: Path, canary: Path, which: int) -> None:
    store = tmp_path / "s"
    build(store)
    record = {"shard_id": "00000", "key": "stale", "counters": {}, "n_segments": 0, "n_failures": 0,
              "files": {outside_paths(canary)[which]: {"sha256": "0" * 64, "rows": 0, "table": "aligned"}}}
    (store / "_build" / "shards").mkdir(parents=True)
    (store / "_build" / "shards" / "part-00000.json").write_text(json.dumps(record))
    before = tree(store)
    with pytest.raises(OutsideStoreError, match="leads outside the store") as err:
        build(store)
    assert "part-00000.json" in str(err.value)
    assert canary.read_text() == "still here" and tree(store) == before
    problems = [str(p) for p in validate(store).problems]
    assert any("_build/: build state" in p for p in problems)  # a finished store has no build state
    assert any("part-00000.json: names" in p and "outside the store" in p for p in problems), problems


@pytest.mark.parametrize("which", [0, 1, 2], ids=["absolute", "dotdot", "nested-dotdot"])
def test_a_manifest_naming_outside_files_is_refused_by_readers_builds_and_validate(tmp_path: Path, canary: Path, which: int) -> None:
    store = tmp_path / "s"
    build(store)
    manifest = json.loads((store / "manifest.json").read_text())
    rel = outside_paths(canary)[which]
    manifest["files"][rel] = {"table": "aligned", "split": "train", "shard": "00000", "rows": 1,
                              "sha256": hashlib.sha256(canary.read_bytes()).hexdigest()}
    (store / "manifest.json").write_text(json.dumps(manifest))
    report = validate(store)
    assert any(repr(rel) in str(p) and "leads outside the store" in str(p) for p in report.problems), str(report)
    with pytest.raises(OutsideStoreError, match="leads outside the store"):
        Store(store)
    before = tree(store)
    for overwrite in (False, True):  # neither a resume nor an --overwrite deletes what the manifest points at
        with pytest.raises(OutsideStoreError):
            build_store(store, "other", syn.make_units(2), syn.process, syn.FEATURE_SETS, BuildConfig(),
                        build_info={"recipe": "another"}, progress=False, overwrite=overwrite)
    assert canary.read_text() == "still here" and tree(store) == before


def test_a_shard_that_is_a_symlink_out_of_the_store_is_refused(tmp_path: Path, canary: Path) -> None:
    store = tmp_path / "s"
    build(store)
    victim = sorted(store.glob("aligned/*/part-*.parquet"))[0]
    outside = tmp_path / "outside.parquet"
    victim.rename(outside)
    victim.symlink_to(outside)
    with pytest.raises(OutsideStoreError):
        Store(store)
    assert any("leads outside the store" in str(p) for p in validate(store).problems)


# -- 8. integrity: unlisted files, changed shards -----------------------------------------------------------
def test_validate_lists_parquet_files_the_manifest_does_not(tmp_path: Path) -> None:
    store = tmp_path / "s"
    build(store)
    assert validate(store).ok
    listed = sorted(store.glob("aligned/*/part-*.parquet"))[0]
    extra = listed.with_name("part-copy.parquet")
    extra.write_bytes(listed.read_bytes())  # a globbing reader (the card's pyarrow/pandas/DuckDB recipes) reads it twice
    report = validate(store)
    assert [str(p) for p in report.problems] == [
        f"store: {extra.relative_to(store).as_posix()!r}: file not in the manifest (globbing readers would read it too); remove it"]


def test_readers_refuse_a_changed_or_truncated_shard(tmp_path: Path) -> None:
    store = tmp_path / "s"
    build(store)
    assert all(e.bytes for e in Manifest.load(store).files.values())  # new manifests record each file's size
    victim = sorted(store.glob("aligned/*/part-*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    victim.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"{victim.name}: sha256 differs from the manifest"):
        Store(store).aligned()
    victim.write_bytes(bytes(data[:-10]))
    with pytest.raises(ChecksumError, match=rf"{victim.name}: size differs from the manifest \({len(data) - 10} bytes, the manifest says {len(data)}\)"):
        Store(store).aligned()


def test_training_refuses_a_changed_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_synthetic_store(tmp_path / "s", SyntheticSpec(sizes={"train": 8, "valid": 4, "test": 4}))
    victim = sorted(store.glob("aligned/train/part-*.parquet"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    code = main(["train", "--store", str(store), "--out", str(tmp_path / "run"), "--epochs", "1", "--device", "cpu"])
    assert code == 1
    assert "sha256 differs from the manifest" in capsys.readouterr().err


def test_old_manifests_without_sizes_still_read_and_check_sha256(tmp_path: Path) -> None:
    store = tmp_path / "s"
    build(store)
    manifest = json.loads((store / "manifest.json").read_text())
    for entry in manifest["files"].values():
        del entry["bytes"]
    (store / "manifest.json").write_text(json.dumps(manifest))
    assert Store(store).aligned().num_rows == Store(store).segments().num_rows and validate(store).ok
    victim = sorted(store.glob("segments/*/part-*.parquet"))[0]
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ChecksumError, match="sha256 differs"):
        Store(store).segments()


# -- the build state lives in the manifest ------------------------------------------------------------------
def test_a_finished_build_leaves_no_build_state_and_resumes_from_the_manifest(tmp_path: Path) -> None:
    store = tmp_path / "s"
    first = build(store, n=6)
    assert not (store / "_build").exists()
    manifest = Manifest.load(store)
    assert sorted(manifest.build["shards"]) == ["00000", "00001", "00002"]
    before = tree(store)
    again = build(store, n=6)
    assert (again.shards_written, again.shards_skipped) == (0, first.shards_written) and tree(store) == before
    more = build(store, n=8)  # new inputs into the same store extend it
    assert (more.shards_written, more.shards_skipped) == (1, 3) and Store(store).segments().num_rows == 8 * 3
    assert not (store / "_build").exists() and validate(store).ok


def test_the_card_shows_counts_and_the_first_ids_and_the_manifest_keeps_all(tmp_path: Path) -> None:
    ids = [f"video{i:03d}" for i in range(50)]
    build(tmp_path / "s", report={"ids_missing": {"covarep": ids}, "few": ["a", "b"]})
    card = (tmp_path / "s" / "README.md").read_text()
    assert '"count": 50' in card and f'"first_{CARD_IDS}"' in card
    assert ids[CARD_IDS - 1] in card and ids[CARD_IDS] not in card and '"b"' in card
    assert Manifest.load(tmp_path / "s").report["ids_missing"]["covarep"] == ids


# -- 2. --out onto another store or a user's folder ---------------------------------------------------------
@pytest.fixture(scope="module")
def csd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("csd")
    write_mosei_fixture(folder)
    return folder


def mosei(csd: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "mosei", "--csd-dir", str(csd), "--out", str(out), "--workers", "0", "--quiet", *extra]


def test_cli_refuses_another_configuration_and_overwrite_replaces_it(csd_dir: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "mosei"
    assert main(mosei(csd_dir, store)) == 0
    (store / "notes.txt").write_text("mine")
    capsys.readouterr()
    before = tree(store)
    assert main(mosei(csd_dir, store, "--sets", "covarep")) == 1
    err = capsys.readouterr().err
    assert f"{store}: holds a store built by recipe 'sdk/1' with another configuration" in err and "--overwrite" in err
    assert tree(store) == before
    assert main(mosei(csd_dir, store)) == 0  # the same command still resumes
    assert "shards: 0 written, 1 already written" in capsys.readouterr().out and tree(store) == before
    assert main(mosei(csd_dir, store, "--sets", "covarep", "--overwrite")) == 0
    assert list(Store(store).feature_sets) == ["covarep"] and validate(store).ok
    assert (store / "notes.txt").read_text() == "mine" and not (store / "_build").exists()
    assert main(mosei(csd_dir, store, "--sets", "covarep")) == 0  # rerunning the overwrite's command resumes
    assert "shards: 0 written, 1 already written" in capsys.readouterr().out


def test_cli_refuses_a_store_of_another_recipe(csd_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = write_synthetic_store(tmp_path / "synthetic", SyntheticSpec(sizes={"train": 4, "valid": 2, "test": 2}))
    before = tree(store)
    assert main(mosei(csd_dir, store)) == 1
    assert "holds a store built by recipe 'synthetic' with another configuration" in capsys.readouterr().err
    assert tree(store) == before


def test_cli_refuses_a_non_empty_folder_that_is_not_a_store(csd_dir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("# my project\n")
    (folder / "manifest.json").write_text('{"not": "a store"}')
    before = tree(folder)
    assert main(mosei(csd_dir, folder)) == 1
    err = capsys.readouterr().err
    assert f"{folder}: is not empty and not a store" in err and "'README.md'" in err and "--overwrite" in err
    assert tree(folder) == before
    assert main(mosei(csd_dir, folder, "--overwrite")) == 0 and validate(folder).ok


def test_an_empty_or_new_folder_is_written_without_overwrite(csd_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(mosei(csd_dir, tmp_path / "empty")) == 0
    assert main(mosei(csd_dir, tmp_path / "new" / "store")) == 0
    assert os.listdir(tmp_path / "empty") == os.listdir(tmp_path / "new" / "store")


def test_an_unfinished_build_of_another_configuration_is_refused(tmp_path: Path) -> None:
    from pipelines.store_writer import open_build

    store = tmp_path / "s"
    killed = open_build(store, "a", syn.make_units(2), syn.FEATURE_SETS, BuildConfig(), {"recipe": "a"})
    killed.close()  # as if killed: the plan and lock stay under _build/
    with pytest.raises(StoreError, match="holds an unfinished build by recipe 'a'"):
        open_build(store, "b", syn.make_units(2), syn.FEATURE_SETS, BuildConfig(), {"recipe": "b"})
    resumed = open_build(store, "a", syn.make_units(2), syn.FEATURE_SETS, BuildConfig(), {"recipe": "a"})
    resumed.finish([])
    assert not (store / "_build").exists()


def test_an_overwrite_killed_midway_resumes_with_the_same_command(tmp_path: Path) -> None:
    from pipelines.store_writer import open_build

    store = tmp_path / "s"
    build_store(store, "a", syn.make_units(4), syn.process, syn.FEATURE_SETS, BuildConfig(units_per_shard=2),
                build_info={"recipe": "a"}, progress=False)
    (store / "notes.txt").write_text("mine")
    killed = open_build(store, "b", syn.make_units(2), syn.FEATURE_SETS, BuildConfig(), {"recipe": "b"}, overwrite=True)
    killed.close()  # killed before any shard was written: the old store is still whole and readable
    assert Store(store, verify=True).segments().num_rows == 4 * 3 and Manifest.load(store).name == "a"
    with pytest.raises(StoreError, match="holds an unfinished build by recipe 'b'"):
        build_store(store, "a", syn.make_units(4), syn.process, syn.FEATURE_SETS, BuildConfig(units_per_shard=2),
                    build_info={"recipe": "a"}, progress=False)
    done = build_store(store, "b", syn.make_units(2), syn.process, syn.FEATURE_SETS, BuildConfig(),
                       build_info={"recipe": "b"}, progress=False)  # the same command, without --overwrite
    assert done.n_segments == 6 and validate(store).ok and (store / "notes.txt").read_text() == "mine"
