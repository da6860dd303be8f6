"""Rebuilding a store never loses what it holds: inputs that drop units are refused unless --overwrite asks for
it, and a rebuild that fails (disk full) or is killed leaves the last committed store whole and readable until its
new manifest is committed (write new files, commit, then delete the old ones)."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feature_schemas import Manifest, Store, StoreError, validate
from pipelines.build import build_store
from pipelines.collapse import CollapseConfig
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
from tests.test_cli_errors import _mmsa_pickle, cli, one_error_line
from tests.test_store_links import tree

REPO = Path(__file__).resolve().parents[1]


def build(path: Path, n: int = 6, mode: str = "weighted", **kw: object) -> object:
    return build_store(path, "synthetic", syn.make_units(n), syn.process, syn.FEATURE_SETS,
                       BuildConfig(units_per_shard=2, collapse=CollapseConfig(mode=mode)), progress=False, **kw)  # type: ignore[arg-type]


def readable(store: Path) -> int:
    """Rows of the committed store, every listed file checked against its sha256."""
    s = Store(store, verify=True)
    return s.segments().num_rows + s.aligned().num_rows


# -- 3. a different input never silently replaces a store ---------------------------------------------------
def test_inputs_that_drop_units_are_refused_unless_overwrite(tmp_path: Path) -> None:
    store = tmp_path / "s"
    build(store, n=6)
    before = tree(store)
    with pytest.raises(StoreError) as err:
        build(store, n=4)
    assert f"{store}: holds 2 units these inputs do not have ('vid004', 'vid005'); a rebuild never deletes data " \
           "unasked" in str(err.value) and "--overwrite" in str(err.value)
    assert tree(store) == before
    assert build(store, n=8).n_segments == 8 * 3  # more inputs extend the store
    done = build(store, n=4, overwrite=True)  # asked for: the store now holds these inputs only
    assert done.n_segments == 4 * 3 and validate(store).ok and readable(store) == 2 * 4 * 3


def test_stores_without_unit_lists_compare_shards(tmp_path: Path) -> None:
    store = tmp_path / "s"
    build(store, n=6)
    manifest = json.loads((store / "manifest.json").read_text())
    del manifest["build"]["shard_units"]  # as written before shards recorded their units
    (store / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"holds 1 shard these inputs do not have \('00002'\)"):
        build(store, n=4)
    assert build(store, n=6).shards_written == 0


# -- 4. a failed or killed rebuild keeps the old store readable ---------------------------------------------
def test_a_rebuild_that_stops_midway_keeps_the_old_store_readable(tmp_path: Path) -> None:
    from pipelines.shard_writer import write_shard
    from pipelines.store_writer import open_build

    store = tmp_path / "s"
    build(store, n=6)
    rows = readable(store)
    config = BuildConfig(units_per_shard=2, collapse=CollapseConfig(mode="max"))  # every shard is rewritten
    rebuild = open_build(store, "synthetic", syn.make_units(6), syn.FEATURE_SETS, config)
    assert len(rebuild.todo) == 3
    write_shard(rebuild.todo[0], str(store), syn.process, syn.FEATURE_SETS, config)
    rebuild.close()  # as if it failed here: one new shard written, the manifest not yet
    assert readable(store) == rows and Manifest.load(store).build["writer"]["collapse"]["mode"] == "weighted"
    done = build(store, n=6, mode="max")  # the same command completes it, then drops the old files
    assert done.shards_written == 2 and validate(store).ok and readable(store) == rows
    assert not (store / "_build").exists()


KILL_SCRIPT = """
import sys
from pipelines.build import build_store
from pipelines.collapse import CollapseConfig
from pipelines.store_writer import BuildConfig
from tests import synthetic_recipe as syn
build_store(sys.argv[1], "synthetic", syn.make_units(8, sleep=0.05), syn.process, syn.FEATURE_SETS,
            BuildConfig(units_per_shard=1, collapse=CollapseConfig(mode=sys.argv[2])), progress=False)
"""


def test_a_killed_rebuild_keeps_the_old_store_readable(tmp_path: Path) -> None:
    store = tmp_path / "s"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(store), "weighted"], cwd=REPO, check=True)
    rows = readable(store)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(store), "max"], cwd=REPO)
    deadline = time.monotonic() + 60
    while len(list(store.glob("_build/shards/part-*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(list(store.glob("_build/shards/part-*.json"))) < 8, "the kill did not land mid-build"
    assert readable(store) == rows  # the old manifest and every file it lists
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(store), "max"], cwd=REPO, check=True)
    assert readable(store) == rows and validate(store).ok
    assert Manifest.load(store).build["writer"]["collapse"]["mode"] == "max"


@pytest.mark.slow
def test_a_rebuild_on_a_full_disk_keeps_the_old_store_readable(tmp_path: Path) -> None:
    pkl = _mmsa_pickle(tmp_path / "aligned_50.pkl", [f"v{i}$_$1" for i in range(40)])
    out = tmp_path / "store"
    args = ("build", "mmsa", "--input", str(pkl), "--out", str(out), "--workers", "0", "--quiet")
    assert cli(*args).returncode == 0
    rows = readable(out)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    line = one_error_line(cli(*args, "--units-per-shard", "7", preexec_fn=small_files))
    assert ".parquet: File too large" in line
    assert readable(out) == rows
    assert cli(*args, "--units-per-shard", "7").returncode == 0
    assert readable(out) == rows and validate(out).ok


def test_the_resume_key_does_not_depend_on_how_the_input_is_spelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from bench.csd_fixtures import write_mosei_fixture
    from flows.cli import main

    write_mosei_fixture(tmp_path / "csd")
    monkeypatch.chdir(tmp_path)
    for spelling in ("csd", f"{tmp_path}/csd/", "./csd//"):
        assert main(["build", "mosei", "--csd-dir", spelling, "--out", "s", "--workers", "0", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("shards: 1 written, 0 already written") == 1 and out.count("shards: 0 written, 1 already written") == 2
